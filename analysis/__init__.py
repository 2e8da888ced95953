"""Offline analysis of cmaprof recordings: no BCC needed.

>>> from cmaprof.analysis import load
>>> rec = load("out/demo")
>>> rec.df_page_alloc().groupby("zone", observed=True)["pages"].sum()

``load``, ``load_many`` and ``Recording`` are imported on first use, so collectors
can import :mod:`cmaprof.analysis.schema` without loading pandas.
"""

from typing import Any

__all__ = ["Recording", "load", "load_many"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cmaprof.analysis import recording as _load

        return getattr(_load, name)
    raise AttributeError(name)
