"""A recording as analysis sees it: the reader's :class:`~cmaprof.recording.reader.
Recording` plus the frames analysis derives (blockers decoded, streamed events).

:func:`load` and :func:`load_many` are the reader's, building this class.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmaprof.recording import reader


class Recording(reader.Recording):
    """A loaded recording. Use :func:`load` to make one."""

    def df_cma_blockers(self) -> pd.DataFrame:
        """One row per page seen blocking a cma_alloc(), decoded (stage, cause, state,
        placing gfp). See :mod:`cmaprof.analysis.blockers`."""
        from cmaprof.analysis import blockers

        return blockers.df_cma_blockers(self)

    def df_cma_failures(self) -> pd.DataFrame:
        """Per (area, stage, cause, state): pages, events, calls of blocking pages."""
        from cmaprof.analysis import blockers

        return blockers.df_cma_failures(self)

    def df_cma_blockers_origin(self) -> pd.DataFrame:
        """Per (cause, state, gfp of the allocation that placed the page): pages, events."""
        from cmaprof.analysis import blockers

        return blockers.df_cma_blockers_origin(self)

    def df_blocker_stacks(self) -> pd.DataFrame:
        """Per kernel stack of the allocation that placed blocking pages (``record
        --by stack``): cause, gfp, order, comm, pages, events, the full stack."""
        from cmaprof.analysis import blockers

        return blockers.df_blocker_stacks(self)

    def df_page_alloc_by(self) -> pd.DataFrame:
        """The page_alloc cube by process and/or kernel stack (``record --by``), decoded
        as :meth:`df_page_alloc` (gfp, zone, migratetype, cma_area names); tgid, comm,
        stack_id, stack_errno null where not keyed. Empty without ``--by``."""
        return self._decode(self.table("page_alloc_by").to_pandas())

    def df_page_alloc_events(self, columns: list[str] | None = None) -> pd.DataFrame:
        """One row per streamed allocation (``record --events``), decoded; empty without
        streaming. See :mod:`cmaprof.analysis.stream`."""
        from cmaprof.analysis import stream

        return stream.df_page_alloc_events(self, columns)


def load(path: str | Path) -> Recording:
    """Load and validate the recording at ``path`` (:func:`cmaprof.recording.reader.load`).

    :raises BadInput: missing, corrupt, foreign or newer-version recording.
    """
    return reader.load(path, Recording)


def load_many(paths: list[str | Path]) -> list[Recording]:
    """Load several recordings; a directory holding recordings stands for all of them."""
    return reader.load_many(paths, Recording)
