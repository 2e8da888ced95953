"""collectors.registry: every probe has a collector implementing the one interface."""

from cmaprof import probes
from cmaprof.collectors import registry
from cmaprof.collectors.base import Collector, CollectorContext


def test_every_probe_has_a_collector():
    assert set(registry.COLLECTORS) == set(probes.PROBES)
    assert next(iter(registry.COLLECTORS)) == "page_alloc"


def test_collectors_implement_the_interface():
    for name in registry.COLLECTORS:
        cls = registry.collector_class(name)
        assert issubclass(cls, Collector) and cls.name == name
        assert cls.create is not Collector.create


def test_create_only_the_probes_chosen():
    ctx = CollectorContext(bpf=object(), names=["page_alloc", "migrate"], zones=[], cma_areas=[])
    got = registry.create(ctx)
    assert [c.name for c in got] == ["page_alloc", "migrate"]


def test_stream_without_events_has_nothing_to_do():
    ctx = CollectorContext(bpf=object(), names=["page_alloc", "stream"], zones=[], cma_areas=[])
    assert [c.name for c in registry.create(ctx)] == ["page_alloc"]
