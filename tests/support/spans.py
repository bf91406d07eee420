"""Spans of the code under test, kept in memory: shared.tracing on for one test or module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing


@contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on (every span sampled, as with OTEL_TRACES_SAMPLER unset) while inside; the
    exporter holds the finished spans. Tracing is off again after, as it is by default."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.EntryPoints())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.activate(provider)
    try:
        yield exporter
    finally:
        tracing.activate(None)
        provider.shutdown()


def trace_of(spans: tuple[ReadableSpan, ...], trace_id: int) -> list[ReadableSpan]:
    """The spans of one trace, in start order."""
    return sorted(
        (s for s in spans if s.context is not None and s.context.trace_id == trace_id),
        key=lambda s: s.start_time or 0,
    )
