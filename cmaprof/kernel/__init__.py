"""Readers of kernel text and kernel artifacts that collectors and analysis both use.

``procfs``: parsers of /proc and CMA debugfs text (pure functions of text).
``image``: the CONFIG_IKHEADERS archive inside a kernel image.
No BCC, no pandas, no reads of the running system.
"""
