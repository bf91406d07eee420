"""OpenTelemetry tracing: OTLP export when OTEL_* asks for it, nothing at all otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as _sampling
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.events import StoredEvent

log = logging.getLogger(__name__)

_W3C = TraceContextTextMapPropagator()
TRACEPARENT_BYTES = 55  # "00-" 32 hex "-" 16 hex "-" 2 hex: the W3C version 00 form
MAX_LINKS = 64  # a batch span links at most this many producing spans (the SDK keeps 128)


class _State:
    provider: TracerProvider | None = None
    tracer: trace.Tracer = trace.NoOpTracer()


_state = _State()


def enabled() -> bool:
    """Whether spans are recorded in this process (every hook below is a no-op otherwise)."""
    return _state.provider is not None


def tracer() -> trace.Tracer:
    """The network's tracer: a no-op one while tracing is off."""
    return _state.tracer


def exporting(environ: Mapping[str, str]) -> bool:
    """Whether the standard OTEL_* variables ask for traces to be exported."""
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        exporter
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(service: str, site: str, environ: Mapping[str, str] = os.environ) -> bool:
    """At a service's start: export spans over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT (or
    OTEL_TRACES_EXPORTER=otlp|console) is set; otherwise install nothing, so tracing costs
    nothing. The exporter reads its other OTEL_* settings itself. Several services in one
    process (tests, tools) share the first one's provider. Returns whether tracing is on."""
    if enabled() or not exporting(environ):
        return enabled()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    kind = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    exporter: SpanExporter
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r}: this build exports otlp or console")
    resource = Resource.create(
        {
            "service.name": environ.get("OTEL_SERVICE_NAME") or f"cellbank.{service}",
            "service.namespace": "cellbank",
            "cellbank.site": site,
        }
    )
    provider = TracerProvider(resource=resource, sampler=EntryPoints())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # for any other OpenTelemetry user in the process
    activate(provider)
    log.info("tracing on", extra={"service": service, "site": site, "exporter": kind})
    return True


def activate(provider: TracerProvider | None) -> None:
    """Record spans with `provider` from now on (None: stop). configure_tracing calls it;
    tests call it with an in-memory exporter's provider. Instruments asyncpg while on (its
    queries become children of the span that runs them)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    queries = AsyncPGInstrumentor()  # a singleton
    if queries.is_instrumented_by_opentelemetry:
        queries.uninstrument()
    _state.provider = provider
    _state.tracer = provider.get_tracer("cellbank") if provider else trace.NoOpTracer()
    if provider is not None:
        queries.instrument(tracer_provider=provider)


class EntryPoints(Sampler):
    """Traces start where work enters (a call served, a record published or consumed): a query
    or call of a background loop with no span above it starts none, so polling loops do not
    flood the collector. Below that, OTEL_TRACES_SAMPLER decides (default: parent-based on)."""

    def __init__(self, inner: Sampler | None = None) -> None:
        self.inner = inner or _sampling._get_from_env_or_default()

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind in (None, SpanKind.CLIENT, SpanKind.INTERNAL):
            return SamplingResult(Decision.DROP)
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"EntryPoints{{{self.inner.get_description()}}}"


# --- gRPC ------------------------------------------------------------------------------------


def server_interceptors() -> list[Any]:
    """The grpc.aio server interceptors that trace calls (health checks left out); [] when
    tracing is off. A call's span is current while its handler runs, and so while it appends."""
    if _state.provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    untraced = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection"))
    return [aio_server_interceptor(_state.provider, filter_=filters.negate(untraced))]


def client_interceptors() -> list[Any]:
    """The grpc.aio channel interceptors that trace calls and pass the trace context on in the
    call's metadata; [] when tracing is off."""
    if _state.provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(_state.provider))


# --- the envelope ------------------------------------------------------------------------------


def current_traceparent() -> str:
    """The W3C traceparent of the current span, what an append stores with its events ('' when
    tracing is off or no span is current)."""
    if _state.provider is None:
        return ""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent", "")


def trace_id_of(traceparent: str) -> str:
    """The trace id (32 hex digits) in a traceparent; '' when there is none."""
    context = producing_context(traceparent)
    if context is None:
        return ""
    return f"{trace.get_current_span(context).get_span_context().trace_id:032x}"


def producing_context(traceparent: str) -> Context | None:
    """The context of the span that appended an event, from its envelope's traceparent (None
    when it has none or it is malformed)."""
    if not traceparent:
        return None
    context = _W3C.extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


# --- relay and projections --------------------------------------------------------------------


def track_publish(topic: str, event: StoredEvent, ack: asyncio.Future[Any]) -> None:
    """A PRODUCER span, child of the span that appended the event, from now until Kafka
    acknowledges its record (ending in error if it does not)."""
    if _state.provider is None:
        return
    parent = producing_context(event.traceparent)
    if parent is None:
        return
    span = _state.tracer.start_span(
        f"publish {topic}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=_event_attributes(topic, event),
    )
    ack.add_done_callback(lambda done: _end(span, done))


def _end(span: Span, done: asyncio.Future[Any]) -> None:
    error = None if done.cancelled() else done.exception()
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, repr(error)))
    span.end()


@contextmanager
def consuming(group: str, topic: str, events: Iterable[StoredEvent]) -> Iterator[None]:
    """Spans of a consumer applying a batch: one CONSUMER span for the batch (current while it
    runs, linked to the spans that produced its events), and one per traced event, a child of
    the span that appended it, so each event's trace continues across Kafka."""
    if _state.provider is None:
        yield
        return
    tracer = _state.tracer
    traced = [(e, c) for e in events if (c := producing_context(e.traceparent)) is not None]
    links = [Link(trace.get_current_span(c).get_span_context()) for _, c in traced[:MAX_LINKS]]
    attributes: dict[str, str | int] = {
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
        "messaging.batch.message_count": len(traced),
    }
    name = f"{group} process"
    with tracer.start_as_current_span(
        name, kind=SpanKind.CONSUMER, links=links, attributes=attributes
    ) as batch:
        applied = [
            tracer.start_span(
                f"{group} apply {event.event_type}",
                context=context,
                kind=SpanKind.CONSUMER,
                links=[Link(batch.get_span_context())],
                attributes={**_event_attributes(topic, event), **attributes},
            )
            for event, context in traced
        ]
        try:
            yield
        except BaseException as exc:
            for span in applied:
                span.set_status(Status(StatusCode.ERROR, repr(exc)))
            raise
        finally:
            for span in applied:
                span.end()


def _event_attributes(topic: str, event: StoredEvent) -> dict[str, str | int]:
    return {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.message.id": event.event_id,
        "cellbank.event_type": event.event_type,
        "cellbank.aggregate_id": event.aggregate_id,
        "cellbank.site": event.site_id,
        "cellbank.position": event.position,
    }
