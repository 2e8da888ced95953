"""Parsers of kernel text (procfs, ...) that both collectors and analysis use.

Pure functions of text: no BCC, no pandas, no reads of the running system.
"""
