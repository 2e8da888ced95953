"""Offline analysis of cmaprof recordings: no BCC needed.

>>> from cmaprof.analysis import load
>>> rec = load("out/demo")
>>> rec.df_page_alloc().groupby("zone", observed=True)["pages"].sum()

``load``, ``load_many`` and ``Recording`` (:mod:`cmaprof.analysis.loaded`) are
imported on first use, so importing a submodule does not load them.
"""

from typing import Any

__all__ = ["Recording", "load", "load_many"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cmaprof.analysis import loaded as _load

        return getattr(_load, name)
    raise AttributeError(name)
