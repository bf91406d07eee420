"""One trace across the network: an order placed at one site, reserving a unit another site
owns, projected at a third — spans of gRPC calls, appends, relays and projections, recorded in
memory (the services of the three sites share this process's tracer provider)."""

from __future__ import annotations

import pytest_asyncio
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.operator.v1 import operator_service_pb2 as opb
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from deploy.infra import Endpoints
from shared.waits import eventually
from tests.e2e.network import OP, network
from tests.e2e.test_matching import H1, order, visible
from tests.support.spans import recorded_spans, trace_of

PLACE_ORDER = "/cellbank.hospital.v1.HospitalService/PlaceOrder"
RESERVE_UNIT = "/cellbank.storage.v1.StorageService/ReserveUnit"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def traced_sites(endpoints: Endpoints):
    with recorded_spans() as exporter:
        async with network(endpoints, sites=3) as sites:
            yield sites, exporter


async def test_one_trace_follows_an_order_from_b_through_a_reservation_at_a_to_c(traced_sites):
    (a, b, c), exporter = traced_sites
    viable = 6.7e8
    (unit_id,) = await a.stock(1, viable)
    await visible(b, viable, 1)
    placed = await b.hospital.PlaceOrder(order(viable), metadata=H1)
    assert placed.status == hpb.ORDER_STATUS_ALLOCATED, placed.status_reason

    (served,) = [
        s for s in exporter.get_finished_spans()
        if s.name == PLACE_ORDER and s.kind is SpanKind.SERVER
    ]  # fmt: skip
    assert served.context is not None
    trace_id = served.context.trace_id

    def spans() -> list[ReadableSpan]:
        return trace_of(exporter.get_finished_spans(), trace_id)

    def applied_at_c(found: list[ReadableSpan]) -> list[ReadableSpan]:
        return [
            s for s in found
            if s.attributes is not None
            and s.attributes.get("messaging.consumer.group.name") == f"{c.site_id}.delivery.lookback"
            and s.attributes.get("cellbank.aggregate_id") == placed.order_id
        ]  # fmt: skip

    # The order's events reach site C's lookback projection through Kafka, in the same trace.
    found = await eventually(
        lambda: _async(spans()), until=lambda s: bool(applied_at_c(s)),
        what=f"{c.site_id}'s lookback applying {placed.order_id} in the order's trace",
        timeout=60,
    )  # fmt: skip
    by_id = {s.context.span_id: s for s in found if s.context is not None}
    reserve_client = [s for s in found if s.name == RESERVE_UNIT and s.kind is SpanKind.CLIENT]
    reserve_served = [s for s in found if s.name == RESERVE_UNIT and s.kind is SpanKind.SERVER]
    assert reserve_client and reserve_served, [s.name for s in found]
    # The owner's ReserveUnit span is the child of B's call to it (the context crossed gRPC)…
    assert reserve_served[0].parent is not None
    assert by_id[reserve_served[0].parent.span_id] is reserve_client[0]
    # …and its append at A stored the trace: A's relay published the unit's event in it.
    published = [
        s for s in found
        if s.kind is SpanKind.PRODUCER and s.attributes is not None
        and s.attributes.get("cellbank.aggregate_id") == unit_id
        and s.attributes.get("cellbank.site") == a.site_id
    ]  # fmt: skip
    assert published, [s.name for s in found]
    # Site C's span is a child of a span that ran at B (the append that made the event).
    (at_c, *_) = applied_at_c(found)
    assert at_c.kind is SpanKind.CONSUMER and at_c.parent is not None
    assert at_c.parent.span_id in by_id
    assert at_c.attributes is not None and at_c.attributes["cellbank.site"] == b.site_id

    # The operator finds the trace id in the order's history.
    history = await b.matching_ops.GetAggregateHistory(
        opb.GetAggregateHistoryRequest(aggregate_id=placed.order_id), metadata=OP
    )
    assert f"{trace_id:032x}" in {e.trace_id for e in history.entries}


async def _async(value):
    return value
