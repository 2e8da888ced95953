"""The on-disk recording: the only contract between collectors and analysis.

Collectors write through :class:`~cmaprof.recording.writer.RecordingWriter`, analysis
reads through :func:`~cmaprof.recording.reader.load`; neither imports the other.
``schema`` lists every table's columns and dtypes, ``metadata`` the typed shape of
metadata.json and the one ``FORMAT_VERSION``, ``derived`` the tables computed from
other tables when the recording is written.

Layout of a recording directory (``FORMAT_VERSION`` 1)::

    metadata.json                   written at start (complete: false), replaced at end
    formats/<system>/<event>/format tracefs format files of the events used
    proc/start/{vmstat,zoneinfo,pagetypeinfo,buddyinfo}   right after attach
    proc/end/...                    right before detach
    sys/{start,end}/cma/<area>/...  CMA sysfs counters at start and end
    tables/<name>.parquet           final tables, written once at the end
    series/<name>/part-NNNNNN.parquet   one file per interval, appended while recording
    events/page_alloc.parquet       per-event stream (``record --events``), or Arrow
                                    IPC chunks events/page_alloc/chunk-NNNNNN.arrow

Every file is written under a temporary name (``O_CREAT|O_EXCL|O_NOFOLLOW``, mode
0644), fsynced and renamed into place, so a recording killed at any moment holds
only complete files; a recording whose metadata still says ``complete: false`` is
loaded and reported as incomplete. Plain Parquet and JSON: DuckDB or Spark can read
``*/tables/*.parquet`` of many recordings directly.

This package imports no pandas at import time: collectors import it on the
recording path.
"""

from cmaprof.recording.metadata import FORMAT_VERSION, METADATA, Metadata

__all__ = ["FORMAT_VERSION", "METADATA", "Metadata"]
