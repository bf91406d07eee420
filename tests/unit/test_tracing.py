"""Tracing: off by default, the append's span stored with its events, carried in the signed
envelope outside the hash chain, and continued by the relay and the consumers."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.envelope_codec import decode, encode
from shared.eventstore import InMemoryEventStore
from shared.hashchain import event_hash
from shared.trust import Signer, TrustList, Untrusted, sign_event, verify_envelope
from tests.factories import aggregate_id, new_event
from tests.support.spans import recorded_spans
from tests.unit.test_trust import T0 as KEYS_VALID_FROM
from tests.unit.test_trust import event as stored_event


def test_tracing_is_off_unless_otel_variables_ask_for_export() -> None:
    assert not tracing.exporting({})
    assert not tracing.exporting({"OTEL_SERVICE_NAME": "x"})
    assert tracing.exporting({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert tracing.exporting({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"})
    assert tracing.exporting({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.exporting(
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}
    )
    assert not tracing.exporting({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"})
    assert not tracing.configure_tracing("storage", "LON", {})


def test_configured_tracing_names_the_service_and_site_of_its_spans() -> None:
    assert tracing.configure_tracing("storage", "LON", {"OTEL_TRACES_EXPORTER": "console"})
    provider = tracing._state.provider
    try:
        assert provider is not None and tracing.server_interceptors()
        attributes = provider.resource.attributes
        assert (attributes["service.name"], attributes["cellbank.site"]) == (
            "cellbank.storage",
            "LON",
        )
        # A second service in the same process keeps the first one's provider.
        assert tracing.configure_tracing("matching", "MAN", {"OTEL_TRACES_EXPORTER": "otlp"})
        assert tracing._state.provider is provider
    finally:
        tracing.activate(None)
        if provider is not None:
            provider.shutdown()
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        tracing.configure_tracing("storage", "LON", {"OTEL_TRACES_EXPORTER": "zipkin"})


async def test_off_nothing_is_installed_and_nothing_is_stored() -> None:
    assert not tracing.enabled()
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
    store = InMemoryEventStore("LON")
    with tracing.tracer().start_as_current_span("call"):
        assert tracing.current_traceparent() == ""
        result = await store.append(aggregate_id(), 0, [new_event()])
    assert result.events[0].traceparent == ""
    with tracing.consuming("lookback", "topic", result.events):
        pass


async def test_an_append_stores_the_span_it_ran_in_outside_the_hash_chain() -> None:
    store = InMemoryEventStore("LON")
    with recorded_spans():
        with tracing.tracer().start_as_current_span("PlaceOrder", kind=SpanKind.SERVER) as span:
            result = await store.append(aggregate_id(), 0, [new_event(1), new_event(2)])
        context = span.get_span_context()
    assert context.trace_flags.sampled
    stored = result.events
    assert {e.traceparent for e in stored} == {
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    }
    assert (await store.verify_chain()).intact
    # The chain does not depend on it: the same events untraced hash the same.
    untraced = [replace(e, traceparent="") for e in stored]
    assert [event_hash(store.chain_key, e.prev_hash, e) for e in untraced] == [
        e.hash for e in stored
    ]


def test_the_envelope_carries_the_traceparent_under_the_signature() -> None:
    signer = Signer.generate("LON", "LON-1")
    trust_list = TrustList([signer.trusted_key(KEYS_VALID_FROM)])
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = replace(stored_event(), traceparent=traceparent)
    assert decode(encode(event)).traceparent == traceparent
    assert tracing.trace_id_of(traceparent) == "0af7651916cd43dd8448eb211c80319c"
    assert tracing.trace_id_of("") == tracing.trace_id_of("00-not-a-traceparent") == ""
    signed = sign_event(signer, event)
    assert verify_envelope(trust_list, signed).traceparent == traceparent
    forged = signed.replace(b"b7ad6b7169203331", b"b7ad6b7169203332")
    with pytest.raises(Untrusted):
        verify_envelope(trust_list, forged)


async def test_the_relay_and_consumers_continue_the_appending_span() -> None:
    store = InMemoryEventStore("LON")
    with recorded_spans() as exporter:
        with tracing.tracer().start_as_current_span("ReserveUnit", kind=SpanKind.SERVER) as call:
            (event,) = (await store.append(aggregate_id(), 0, [new_event()])).events
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tracing.track_publish("cellbank.storage.events.v1", event, ack)
        ack.set_result(None)
        await asyncio.sleep(0)  # the ack's done callbacks run on the loop
        with tracing.consuming("lookback", "cellbank.storage.events.v1", [event]):
            pass
        spans = {s.name: s for s in exporter.get_finished_spans()}
    trace_id = call.get_span_context().trace_id
    published = spans["publish cellbank.storage.events.v1"]
    applied = spans["lookback apply cellbank.test.v1.Thing"]
    batch = spans["lookback process"]
    assert published.kind is SpanKind.PRODUCER and applied.kind is SpanKind.CONSUMER
    for span in (published, applied):
        assert span.context is not None and span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == call.get_span_context().span_id
    assert [link.context.trace_id for link in batch.links] == [trace_id]


async def test_background_queries_start_no_trace_of_their_own() -> None:
    with recorded_spans() as exporter:
        tracer = tracing.tracer()
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
            pass
        with tracer.start_as_current_span("served", kind=SpanKind.SERVER):
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
                pass
        names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["SELECT", "served"]
