"""From an allocated unit to a patient's vein and back, over real gRPC, Kafka and PostgreSQL
with two sites: order at site B for a unit of site A → shipment at A dispatched → two
handoffs → delivered → received → infused; then the donor turns positive: the recall holds
back the donor's other unit, notifies the hospital, and `trace` shows the whole chain."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest_asyncio
from cellbank.delivery.v1 import delivery_service_pb2 as dpb
from cellbank.delivery.v1 import events_pb2 as depb
from cellbank.donor.v1 import donor_service_pb2 as donor_pb
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy.demo import auth
from deploy.infra import Endpoints
from shared.projections import wait_caught_up
from shared.testing.waits import eventually
from shared.topics import (
    DELIVERY_EVENTS,
    DONOR_EVENTS,
    MANUFACTURING_EVENTS,
    MATCHING_EVENTS,
    STORAGE_EVENTS,
)
from tests.e2e.bank_site import projected, refused
from tests.e2e.network import NetworkSite, network
from tests.e2e.test_matching import H1, order, visible

OP, QA, COURIER = auth("op-alice"), auth("qa-quinn"), auth("op-bob")
SIGN = hpb.Signature(signer_name="Dr. Ada Nwosu", meaning="Received intact, seal unbroken")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sites(endpoints: Endpoints):
    async with network(endpoints, sites=2) as running:
        yield running


async def lookback_caught_up(site: NetworkSite) -> None:
    host = site.delivery_host
    assert host.pool is not None
    await wait_caught_up(
        host.pool, "lookback", bootstrap=host.settings.kafka_bootstrap,
        topics=[DONOR_EVENTS, MANUFACTURING_EVENTS, STORAGE_EVENTS, MATCHING_EVENTS, DELIVERY_EVENTS],
        timeout=60,
    )  # fmt: skip


def shipment_request(
    order_id: str, *, hold_hours: float = 48, transit: float = 90
) -> dpb.CreateShipmentRequest:
    request = dpb.CreateShipmentRequest(
        order_id=order_id, logger_id="LOG-7", courier="SpeedyBio", route="M6 north",
        shipper=depb.Shipper(shipper_id="DS-04", qualified_hold_hours=hold_hours, uses_since_requalification=3),
        planned_transit_minutes=transit, reason="ship allocated order",
    )  # fmt: skip
    request.promised_at.FromDatetime(datetime.now(UTC) + timedelta(hours=4))
    return request


async def shipment_for(owner: NetworkSite, order_id: str, **kw: float) -> dpb.Shipment:
    """Create the shipment once the owner's delivery service knows the order allocated (the
    order's events reach it through Kafka)."""

    async def attempt() -> dpb.Shipment | None:
        try:
            return await owner.delivery.CreateShipment(
                shipment_request(order_id, **kw), metadata=OP
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND or "is PLACED" in (err.details() or ""):
                return None
            raise

    created: dpb.Shipment | None = await eventually(
        attempt,
        until=lambda s: s is not None,
        what=f"{owner.site_id} to know order {order_id}",
        timeout=60,
    )
    assert created is not None
    return created


async def order_status(site: NetworkSite, order_id: str, status: int) -> hpb.Order:
    return await eventually(
        lambda: site.hospital.GetOrder(hpb.GetOrderRequest(order_id=order_id), metadata=H1),
        until=lambda o: o.status == status,
        what=f"order {order_id} to be {hpb.OrderStatus.Name(status)}",
        timeout=30,
    )


async def allocated(a: NetworkSite, b: NetworkSite, viable: float, count: int = 2):
    donor_id, din, units = await a.stock_donor(count, viable)
    await visible(b, viable, count)
    placed = await b.hospital.PlaceOrder(order(viable), metadata=H1)
    assert placed.status == hpb.ORDER_STATUS_ALLOCATED, placed.status_reason
    return donor_id, din, units, placed


async def test_from_order_to_infusion_then_recall_and_trace(sites):
    a, b = sites
    donor_id, din, units, placed = await allocated(a, b, 8.1e8)
    (shipped,) = [u.unit_id for u in placed.units]
    (kept,) = [u for u in units if u != shipped]
    watch = b.hospital.WatchOrder(hpb.WatchOrderRequest(order_id=placed.order_id), metadata=H1)
    assert (await watch.read()).status == hpb.ORDER_STATUS_ALLOCATED
    seen: list[int] = []

    async def follow() -> None:
        while True:
            update = await watch.read()
            assert update != grpc.aio.EOF
            seen.append(update.status)
            if update.status == hpb.ORDER_STATUS_INFUSED:
                return

    follower = asyncio.create_task(follow())

    shipment = await shipment_for(a, placed.order_id)
    sid = shipment.shipment_id
    assert shipment.status == "CREATED" and list(shipment.unit_ids) == [shipped]
    dispatched = await a.delivery.DispatchShipment(
        dpb.DispatchShipmentRequest(shipment_id=sid, reason="courier here"), metadata=OP
    )
    assert dispatched.status == "IN_TRANSIT" and dispatched.custodian == f"bank:{a.site_id}"
    assert a.bank.storage is not None
    picked = await projected(
        lambda: a.bank.storage.GetUnit(spb.GetUnitRequest(unit_id=shipped), metadata=OP),
        until=lambda u: u.status == "PICKED",
        what="the unit picked from its position",
    )
    assert picked.address == ""
    await order_status(b, placed.order_id, hpb.ORDER_STATUS_DISPATCHED)

    # Two handoffs; custody moves only when the receiver accepts.
    for to_party, place in (
        ("courier:SpeedyBio", "LON bank dock"),
        ("courier:SpeedyBio-relay", "M6 depot"),
    ):
        offered = await a.delivery.HandOver(
            dpb.HandOverRequest(shipment_id=sid, to_party=to_party, place=place, reason="handoff"),
            metadata=OP,
        )
        assert offered.pending_to == to_party and offered.custodian != to_party
        details = await refused(
            a.delivery.RecordDelivery(
                dpb.RecordDeliveryRequest(shipment_id=sid, place="x", reason="r"), metadata=OP
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert "still responsible" in details
        accepted = await a.delivery.AcceptCustody(
            dpb.AcceptCustodyRequest(
                shipment_id=sid,
                place=place,
                reason="took it",
                signature_meaning="Accepted custody, shipper sealed",
            ),
            metadata=COURIER,
        )
        assert accepted.custodian == to_party and accepted.pending_to == ""
    delivered = await a.delivery.RecordDelivery(
        dpb.RecordDeliveryRequest(
            shipment_id=sid, place="H1 cell therapy lab", reason="handed to the lab"
        ),
        metadata=OP,
    )
    assert delivered.status == "DELIVERED" and len(delivered.handoffs) == 2
    assert all(h.signature.signer_name == "bob" and h.signature.meaning for h in delivered.handoffs)
    assert delivered.order_to_delivery_seconds > 0
    await order_status(b, placed.order_id, hpb.ORDER_STATUS_DELIVERED)

    received = await b.hospital.ConfirmReceipt(
        hpb.ConfirmReceiptRequest(order_id=placed.order_id, signature=SIGN), metadata=H1
    )
    assert received.status == hpb.ORDER_STATUS_RECEIVED
    infused = await b.hospital.ConfirmInfusion(
        hpb.ConfirmInfusionRequest(order_id=placed.order_id, unit_id=shipped,
                                   signature=hpb.Signature(signer_name="Dr. Ada Nwosu", meaning="Thawed and infused")),
        metadata=H1,
    )  # fmt: skip
    assert infused.status == hpb.ORDER_STATUS_INFUSED
    await asyncio.wait_for(follower, 10)
    assert seen == [
        hpb.ORDER_STATUS_DISPATCHED, hpb.ORDER_STATUS_DELIVERED,
        hpb.ORDER_STATUS_RECEIVED, hpb.ORDER_STATUS_INFUSED,
    ]  # fmt: skip
    report = await b.hospital.ReportAdverseEvent(
        hpb.ReportAdverseEventRequest(
            order_id=placed.order_id, unit_id=shipped, description="grade 1 fever", severity="MILD"
        ),
        metadata=H1,
    )
    assert report.report_id.startswith("AE-")

    # The donor turns positive after collection: a recall at the donor's site.
    await lookback_caught_up(a)
    await a.bank.donors.RecordScreeningResult(
        donor_pb.RecordScreeningResultRequest(
            donor_id=donor_id, reason="lookback sample", marker="HIV-1 NAT", result="POSITIVE",
            specimen_date=datetime.now(UTC).date().isoformat(),
        ),
        metadata=OP,
    )  # fmt: skip
    recalls = await eventually(
        lambda: a.delivery.ListRecalls(dpb.ListRecallsRequest(), metadata=OP),
        until=lambda r: any(x.subject == donor_id and kept in x.held_unit_ids for x in r.recalls),
        what="the recall to hold back the donor's other unit",
        timeout=60,
    )
    (recall,) = [x for x in recalls.recalls if x.subject == donor_id]
    assert recall.trigger == "DONOR_POSITIVE" and set(recall.unit_ids) == set(units)
    held = await projected(
        lambda: a.bank.storage.GetUnit(spb.GetUnitRequest(unit_id=kept), metadata=OP),
        until=lambda u: u.status == "RECALLED",
        what="the other unit recalled in storage",
    )
    assert held.reserved_for == ""
    notices = await eventually(
        lambda: b.hospital.ListNotifications(
            hpb.ListNotificationsRequest(unacknowledged_only=True), metadata=H1
        ),
        until=lambda r: any(recall.recall_id in n.message for n in r.notifications),
        what="the hospital to be notified",
        timeout=60,
    )
    (notice,) = [n for n in notices.notifications if recall.recall_id in n.message]
    assert list(notice.unit_ids) == [shipped] and notice.kind == "RECALL"
    assert recall.recall_id and a.site_id in recall.recall_id
    unacknowledged = await eventually(
        lambda: a.delivery.ListRecalls(dpb.ListRecallsRequest(), metadata=OP),
        until=lambda r: any(
            "H1" in x.unacknowledged_hospitals for x in r.recalls if x.recall_id == recall.recall_id
        ),
        what="operators to see the unacknowledged recall",
        timeout=60,
    )
    assert unacknowledged
    acked = await b.hospital.AcknowledgeNotification(
        hpb.AcknowledgeNotificationRequest(notification_id=notice.notification_id), metadata=H1
    )
    assert acked.acknowledged_at.seconds > 0
    await eventually(
        lambda: a.delivery.ListRecalls(dpb.ListRecallsRequest(), metadata=OP),
        until=lambda r: all(
            not x.unacknowledged_hospitals for x in r.recalls if x.recall_id == recall.recall_id
        ),
        what="the acknowledgement to reach operators",
        timeout=60,
    )

    # Lookback: the whole chain in one answer.
    await lookback_caught_up(a)
    trace = await a.delivery.Trace(dpb.TraceRequest(din=din), metadata=OP)
    rows = {r.unit_id: r for r in trace.rows}
    assert set(rows) == set(units)
    infused_row = rows[shipped]
    assert (infused_row.donor_id, infused_row.din, infused_row.hospital_id) == (donor_id, din, "H1")
    assert infused_row.patient_ref == "PT-0001" and infused_row.shipment_id == sid
    assert infused_row.unit_status == "INFUSED" and infused_row.infused_at.seconds > 0
    assert infused_row.collected_at.seconds > 0 and infused_row.released_at.seconds > 0
    assert rows[kept].unit_status == "RECALLED"
    by_donor = await a.delivery.Trace(dpb.TraceRequest(donor_id=donor_id), metadata=OP)
    assert {r.unit_id for r in by_donor.rows} == set(units)


async def test_dispatch_is_refused_when_the_shipper_cannot_hold_long_enough(sites):
    a, b = sites
    _, _, _, placed = await allocated(a, b, 8.2e8, count=1)
    shipment = await shipment_for(a, placed.order_id, hold_hours=2, transit=90)  # 120 < 180 min
    details = await refused(
        a.delivery.DispatchShipment(
            dpb.DispatchShipmentRequest(shipment_id=shipment.shipment_id, reason="go"), metadata=OP
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "hold too short" in details and "180" in details
    again = await a.delivery.GetShipment(
        dpb.GetShipmentRequest(shipment_id=shipment.shipment_id), metadata=OP
    )
    assert again.status == "CREATED" and again.version == shipment.version
    assert a.bank.storage is not None
    unit = await a.bank.storage.GetUnit(
        spb.GetUnitRequest(unit_id=placed.units[0].unit_id), metadata=OP
    )
    assert unit.status == "STORED"  # nothing picked


async def test_a_compromised_shipment_needs_qa_before_infusion(sites):
    a, b = sites
    _, _, _, placed = await allocated(a, b, 8.3e8, count=1)
    (unit_id,) = [u.unit_id for u in placed.units]
    shipment = await shipment_for(a, placed.order_id)
    sid = shipment.shipment_id
    await a.delivery.DispatchShipment(
        dpb.DispatchShipmentRequest(shipment_id=sid, reason="go"), metadata=OP
    )
    await lookback_caught_up(a)
    reply = await a.delivery.ReportShipperExcursion(
        dpb.ReportShipperExcursionRequest(
            shipper_id="DS-04", cause=f"excursion:DS-04:{sid}", detail="-120 °C for 12 min"
        ),
        metadata=auth("svc-coldchain"),
    )
    assert sid in reply.shipment_ids
    await a.delivery.RecordDelivery(
        dpb.RecordDeliveryRequest(shipment_id=sid, place="H1 lab", reason="handed over"),
        metadata=OP,
    )
    await order_status(b, placed.order_id, hpb.ORDER_STATUS_DELIVERED)
    await b.hospital.ConfirmReceipt(
        hpb.ConfirmReceiptRequest(order_id=placed.order_id, signature=SIGN), metadata=H1
    )
    infuse = hpb.ConfirmInfusionRequest(order_id=placed.order_id, unit_id=unit_id, signature=SIGN)
    await eventually(
        lambda: b.hospital.GetOrder(hpb.GetOrderRequest(order_id=placed.order_id), metadata=H1),
        until=lambda o: "compromised" in o.status_reason,
        what="the order to know",
        timeout=30,
    )
    details = await refused(
        b.hospital.ConfirmInfusion(infuse, metadata=H1), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "QA disposition" in details
    await refused(
        a.delivery.DispositionShipment(
            dpb.DispositionShipmentRequest(
                shipment_id=sid, decision="ACCEPT", reason="r", signature_meaning="ok"
            ),
            metadata=OP,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )  # an operator cannot sign for QA
    await a.delivery.DispositionShipment(
        dpb.DispositionShipmentRequest(shipment_id=sid, decision="ACCEPT", reason="logger reviewed",
                                       signature_meaning="Excursion within validated limits"),
        metadata=QA,
    )  # fmt: skip
    infused = await eventually(
        lambda: _try_infuse(b, infuse),
        until=lambda o: o is not None,
        what="infusion once QA accepted",
        timeout=30,
    )
    assert infused.status == hpb.ORDER_STATUS_INFUSED


async def _try_infuse(site: NetworkSite, request: hpb.ConfirmInfusionRequest) -> hpb.Order | None:
    try:
        return await site.hospital.ConfirmInfusion(request, metadata=H1)
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
            return None
        raise


async def test_receipt_before_delivery_is_refused_and_writes_nothing(sites):
    a, b = sites
    _, _, _, placed = await allocated(a, b, 8.4e8, count=1)
    before = await b.matching_ops.GetStoreStatus(opb.GetStoreStatusRequest(), metadata=OP)
    details = await refused(
        b.hospital.ConfirmReceipt(
            hpb.ConfirmReceiptRequest(order_id=placed.order_id, signature=SIGN), metadata=H1
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "not delivered" in details
    await refused(
        b.hospital.ConfirmReceipt(hpb.ConfirmReceiptRequest(order_id=placed.order_id), metadata=H1),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    after = await b.matching_ops.GetStoreStatus(opb.GetStoreStatusRequest(), metadata=OP)
    assert after.event_count == before.event_count
