"""Readers of kernel text and kernel artifacts that collectors and analysis both use.

``formats``: tracefs format files, their ``__print_flags``/``__print_symbolic`` tables
(``cexpr``: the C constant-expression evaluator those tables need).
``trace_text``: lines of tracefs ``trace``, ``trace-cmd report [-R]`` and ``perf script``
split into events; ``trace_fields``: the events' field values back to numbers.
``procfs``: parsers of /proc and CMA debugfs text. ``page_owner``: debugfs page_owner
records. ``dmesg``: ``dump_page()`` records and cma_alloc "alloc failed" lines.
``image``: the CONFIG_IKHEADERS archive inside a kernel image.
Pure functions of text (numpy/pyarrow at most): no BCC, no pandas, no reads of the
running system.
"""
