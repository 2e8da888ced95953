"""cmaprof: a BCC/eBPF profiler for the Linux page allocator and CMA."""

__version__ = "0.1.0"
