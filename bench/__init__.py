"""Benchmarks of cmaprof against an untraced run, bpftrace and perf (``make bench``)."""
