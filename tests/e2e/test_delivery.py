"""From an allocated unit to a patient's vein and back, over real gRPC, Kafka and PostgreSQL
with two sites: order at site B for a unit of site A → shipment at A dispatched → two
handoffs → delivered → received → infused; then the donor turns positive: the recall holds
back the donor's other unit, notifies the hospital, and `trace` shows the whole chain."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest_asyncio
from cellbank.delivery.v1 import delivery_service_pb2 as dpb
from cellbank.delivery.v1 import events_pb2 as depb
from cellbank.donor.v1 import donor_service_pb2 as donor_pb
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy import cli
from deploy.demo import auth
from deploy.identities import demo_realm
from deploy.infra import Endpoints
from deploy.keycloak import Identity
from deploy.network import SLA_MODULE, NetworkProcess
from deploy.processes import stop_process
from services.delivery.adapters.codec import CODEC as DELIVERY_CODEC
from services.matching.adapters.codec import CODEC as MATCHING_CODEC
from shared import kafka_clients
from shared.projections import wait_caught_up
from shared.signing import RecordLink
from shared.topics import (
    DELIVERY_EVENTS,
    DONOR_EVENTS,
    MANUFACTURING_EVENTS,
    MATCHING_EVENTS,
    STORAGE_EVENTS,
)
from shared.waits import eventually
from tests.e2e.bank_site import projected, refused
from tests.e2e.network import NetworkSite, network
from tests.e2e.test_cold_chain import reading, start_monitor
from tests.e2e.test_donor_to_released_units import token_subject
from tests.e2e.test_matching import H1, order, visible
from tests.support.plugin import make_topic

OP, QA = auth("op-alice"), auth("qa-quinn")
CLIN = auth("clin-h1")  # Clara Hughes, clinician of H1: signs receipt and infusion in person
SIGN = hpb.Signature(meaning="Received intact, seal unbroken")
# Each handoff names its receiver (a person of that party), who alone may accept it.
LEGS = (
    ("courier:carl", "LON bank dock", auth("courier"), "Carl Jensen"),
    ("courier:cora", "M6 depot", auth("cora"), "Cora Lindqvist"),
)


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


async def shipment_for(
    owner: NetworkSite,
    order_id: str,
    request: dpb.CreateShipmentRequest | None = None,
    **kw: float,
) -> dpb.Shipment:
    """Create the shipment (`request`, or the default one) once the owner's delivery service
    knows the order allocated (the order's events reach it through Kafka)."""
    request = request or shipment_request(order_id, **kw)

    async def attempt() -> dpb.Shipment | None:
        try:
            return await owner.delivery.CreateShipment(request, metadata=OP)
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


async def test_from_order_to_infusion_then_recall_and_trace(
    sites, tmp_path, endpoints, monkeypatch
):
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

    # Two handoffs; custody moves only when the named receiver accepts, and only the present
    # custodian (the bank's operator, then the courier who holds it) offers it onwards.
    givers = (OP, *(receiver for _, _, receiver, _ in LEGS[:-1]))
    for (to_party, place, receiver, _), (_, _, someone_else, _), giver in zip(
        LEGS, reversed(LEGS), givers, strict=True
    ):
        handoff = dpb.HandOverRequest(
            shipment_id=sid, to_party=to_party, place=place, reason="handoff"
        )
        if giver is not OP:  # the bank no longer holds it: its operator cannot hand it on
            details = await refused(
                a.delivery.HandOver(handoff, metadata=OP), grpc.StatusCode.PERMISSION_DENIED
            )
            assert "holds the shipment" in details
        offered = await a.delivery.HandOver(handoff, metadata=giver)
        assert offered.pending_to == to_party and offered.custodian != to_party
        details = await refused(
            a.delivery.RecordDelivery(
                dpb.RecordDeliveryRequest(shipment_id=sid, place="x", reason="r"), metadata=giver
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert "still responsible" in details
        take = dpb.AcceptCustodyRequest(
            shipment_id=sid, place=place, reason="took it",
            signature_meaning="Accepted custody, shipper sealed",
        )  # fmt: skip
        for intruder in (someone_else, OP, CLIN):
            details = await refused(
                a.delivery.AcceptCustody(take, metadata=intruder),
                grpc.StatusCode.PERMISSION_DENIED,
            )
        assert f"offered to {to_party}" in details
        still = await a.delivery.GetShipment(dpb.GetShipmentRequest(shipment_id=sid), metadata=OP)
        assert (still.version, still.pending_to) == (offered.version, to_party)  # nothing written
        accepted = await a.delivery.AcceptCustody(take, metadata=receiver)
        assert accepted.custodian == to_party and accepted.pending_to == ""
    delivered = await a.delivery.RecordDelivery(
        dpb.RecordDeliveryRequest(
            shipment_id=sid, place="H1 cell therapy lab", reason="handed to the lab"
        ),
        metadata=LEGS[-1][2],  # the courier who holds it
    )
    assert delivered.status == "DELIVERED" and len(delivered.handoffs) == 2
    assert [h.signature.signer_name for h in delivered.handoffs] == [n for *_, n in LEGS]
    await custody_signatures_are_linked_to_their_events(a, sid, delivered)
    assert delivered.order_to_delivery_seconds > 0
    await order_status(b, placed.order_id, hpb.ORDER_STATUS_DELIVERED)

    received = await b.hospital.ConfirmReceipt(
        hpb.ConfirmReceiptRequest(order_id=placed.order_id, signature=SIGN), metadata=CLIN
    )
    assert received.status == hpb.ORDER_STATUS_RECEIVED
    infused = await b.hospital.ConfirmInfusion(
        hpb.ConfirmInfusionRequest(order_id=placed.order_id, unit_id=shipped,
                                   signature=hpb.Signature(signer_name="Clara Hughes", meaning="Thawed and infused")),
        metadata=CLIN,
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
    assert infused_row.vein_to_vein_seconds > 0 and infused_row.order_to_delivery_seconds > 0
    by_donor = await a.delivery.Trace(dpb.TraceRequest(donor_id=donor_id), metadata=OP)
    assert {r.unit_id for r in by_donor.rows} == set(units)

    # The same answer from the operator's command line, as a table and as JSON.
    endpoints_file = tmp_path / "endpoints.json"
    endpoints_file.write_text(json.dumps({
        "sites": {s.site_id: {"delivery": f"127.0.0.1:{s.delivery_host.port}"} for s in sites},
        "identity": endpoints.identity.as_json(),
    }))  # fmt: skip
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the CLI's token cache
    alice = demo_realm().users["alice"]
    login = ["login", "--username", "alice", "--password", alice.password]
    signed_in = io.StringIO()
    code = await asyncio.to_thread(
        cli.main, [*login, "--endpoints", str(endpoints_file)], signed_in, signed_in
    )
    assert code == 0, signed_in.getvalue()
    table, json_out = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        cli.main,
        ["trace", "--din", din, "--site", a.site_id, "--endpoints", str(endpoints_file)],
        table,
    )
    assert code == 0, table.getvalue()
    print(table.getvalue())  # the closing note quotes it
    lines = table.getvalue().splitlines()
    assert "HOSPITAL" in lines[1] and "PATIENT" in lines[1]
    assert any(shipped in line and "INFUSED" in line and "PT-0001" in line for line in lines)
    assert any(kept in line and "RECALLED" in line for line in lines)
    code = await asyncio.to_thread(
        cli.main,
        ["trace", "--donor", donor_id, "--json", "--endpoints", str(endpoints_file)],
        json_out,
    )
    records = json.loads(json_out.getvalue())
    assert code == 0 and {r["unit_id"] for r in records} == set(units)
    assert {r["hospital_id"] for r in records if r["unit_id"] == shipped} == {"H1"}
    missing = io.StringIO()
    assert (
        await asyncio.to_thread(
            cli.main,
            ["trace", "--din", "X0000000000000", "--endpoints", str(endpoints_file)],
            missing,
            missing,
        )
        == 1
    )


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
    excursion = dpb.ReportShipperExcursionRequest(
        shipper_id="DS-04", cause=f"excursion:DS-04:{sid}", detail="-120 °C for 12 min"
    )
    reply = await eventually(  # the same cause again is a no-op: retried until the dispatch
        lambda: a.delivery.ReportShipperExcursion(excursion, metadata=auth("svc-coldchain")),
        until=lambda r: sid in r.shipment_ids,
        what="the shipment in transit at the delivery service",
        timeout=60,
    )
    assert sid in reply.shipment_ids
    await a.delivery.RecordDelivery(
        dpb.RecordDeliveryRequest(shipment_id=sid, place="H1 lab", reason="handed over"),
        metadata=OP,
    )
    await order_status(b, placed.order_id, hpb.ORDER_STATUS_DELIVERED)
    await b.hospital.ConfirmReceipt(
        hpb.ConfirmReceiptRequest(order_id=placed.order_id, signature=SIGN), metadata=CLIN
    )
    infuse = hpb.ConfirmInfusionRequest(order_id=placed.order_id, unit_id=unit_id, signature=SIGN)
    await eventually(
        lambda: b.hospital.GetOrder(hpb.GetOrderRequest(order_id=placed.order_id), metadata=H1),
        until=lambda o: "compromised" in o.status_reason,
        what="the order to know",
        timeout=30,
    )
    details = await refused(
        b.hospital.ConfirmInfusion(infuse, metadata=CLIN), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "QA disposition" in details
    await refused(
        a.delivery.DispositionShipment(
            dpb.DispositionShipmentRequest(
                shipment_id=sid, decision="ACCEPT", reason="r", signature_meaning="ok"
            ),
            metadata=auth("op-bob"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )  # an operator cannot sign for QA (the access table)
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
        return await site.hospital.ConfirmInfusion(request, metadata=CLIN)
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
            hpb.ConfirmReceiptRequest(order_id=placed.order_id, signature=SIGN), metadata=CLIN
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "not delivered" in details
    await refused(
        b.hospital.ConfirmReceipt(
            hpb.ConfirmReceiptRequest(order_id=placed.order_id), metadata=CLIN
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    after = await b.matching_ops.GetStoreStatus(opb.GetStoreStatusRequest(), metadata=OP)
    assert after.event_count == before.event_count


async def test_a_receipt_is_signed_only_by_the_signed_in_clinician_in_their_own_name(sites):
    """Part 11: the signer is the authenticated person; a different signer_name or a system's
    token signs nothing, and the recorded signature carries name, subject and event link."""
    a, b = sites
    _, _, _, placed = await allocated(a, b, 8.3e8, count=1)
    sid = (await shipment_for(a, placed.order_id)).shipment_id
    await a.delivery.DispatchShipment(
        dpb.DispatchShipmentRequest(shipment_id=sid, reason="courier here"), metadata=OP
    )
    await a.delivery.RecordDelivery(
        dpb.RecordDeliveryRequest(shipment_id=sid, place="H1 lab", reason="handed over"),
        metadata=OP,
    )
    await order_status(b, placed.order_id, hpb.ORDER_STATUS_DELIVERED)
    before = await b.matching_ops.GetStoreStatus(opb.GetStoreStatusRequest(), metadata=OP)
    someone_else = hpb.Signature(signer_name="Dr. Ada Nwosu", meaning="Received intact")
    details = await refused(
        b.hospital.ConfirmReceipt(
            hpb.ConfirmReceiptRequest(order_id=placed.order_id, signature=someone_else),
            metadata=CLIN,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "Dr. Ada Nwosu" in details and "Clara Hughes" in details
    await refused(  # the hospital's system (client credentials) is no person: it cannot sign
        b.hospital.ConfirmReceipt(
            hpb.ConfirmReceiptRequest(order_id=placed.order_id, signature=SIGN), metadata=H1
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    after = await b.matching_ops.GetStoreStatus(opb.GetStoreStatusRequest(), metadata=OP)
    assert after.event_count == before.event_count  # nothing recorded

    own_name = hpb.Signature(signer_name="Clara Hughes", meaning="Received intact")
    received = await b.hospital.ConfirmReceipt(
        hpb.ConfirmReceiptRequest(order_id=placed.order_id, signature=own_name), metadata=CLIN
    )
    assert received.status == hpb.ORDER_STATUS_RECEIVED
    assert b.matching.pool is not None
    (row,) = await b.matching.pool.fetch(
        "SELECT event_id::text, aggregate_id, aggregate_version, event_type, payload FROM events"
        " WHERE aggregate_id = $1 AND event_type = 'cellbank.matching.v1.OrderReceived'",
        placed.order_id,
    )
    event = MATCHING_CODEC.decode(row["event_type"], row["payload"])
    _assert_linked(event, row, "Clara Hughes", token_subject("clin-h1"))


async def custody_signatures_are_linked_to_their_events(
    site: NetworkSite, sid: str, shipment: dpb.Shipment
) -> None:
    """Each receiver's signature names the person (name and subject from the access token)
    and is linked to its record: the id of the event holding it, the hash of what was signed."""
    assert site.delivery_host.pool is not None
    rows = await site.delivery_host.pool.fetch(
        "SELECT event_id::text, aggregate_id, aggregate_version, event_type, payload FROM events"
        " WHERE aggregate_id = $1 AND event_type = 'cellbank.delivery.v1.CustodyAccepted'"
        " ORDER BY aggregate_version",
        sid,
    )
    assert len(rows) == len(LEGS) == len(shipment.handoffs)
    for row, (party, _, _, name), handoff in zip(rows, LEGS, shipment.handoffs, strict=True):
        event = DELIVERY_CODEC.decode(row["event_type"], row["payload"])
        assert event.party == party
        _assert_linked(event, row, name, token_subject(party.removeprefix("courier:")))
        shown = handoff.signature
        assert (shown.signer_subject, shown.event_id, shown.content_hash) == (
            event.signature.signer_subject, row["event_id"], event.signature.content_hash,
        )  # fmt: skip


def _assert_linked(event: Any, row: Any, name: str, subject: str) -> None:
    signature = event.signature
    assert (signature.signer_name, signature.signer_subject) == (name, subject)
    assert signature.event_id == row["event_id"] and len(signature.content_hash) == 64
    link = RecordLink(row["aggregate_id"], row["aggregate_version"], row["event_id"])
    unlinked = replace(event, signature=replace(signature, event_id="", content_hash=""))
    assert unlinked.sealed(link) == event  # the hash is of exactly what was signed


async def test_a_shipper_logger_excursion_compromises_the_shipment_in_transit(sites, tmp_path):
    """The Faust cold-chain monitor watches dry-shipper loggers too (device = shipper)."""
    a, b = sites
    _, _, _, placed = await allocated(a, b, 8.5e8, count=1)
    shipper = f"DS-{uuid.uuid4().hex[:6].upper()}"
    request = shipment_request(placed.order_id)
    request.shipper.shipper_id = shipper
    shipment = await shipment_for(a, placed.order_id, request)
    sid = shipment.shipment_id
    await a.delivery.DispatchShipment(
        dpb.DispatchShipmentRequest(shipment_id=sid, reason="go"), metadata=OP
    )
    await lookback_caught_up(a)
    topic = await make_topic(a.bank.hosts[0].settings.kafka_bootstrap)
    log = tmp_path / "coldchain.log"
    settings = a.bank.hosts[0].settings
    endpoints = Endpoints(
        settings.kafka_bootstrap, settings.database_url, Identity(settings.oidc_issuer)
    )
    monitor = start_monitor(
        a.bank, endpoints, topic, f"coldchain-test-{uuid.uuid4().hex[:8]}", log,
        {"CELLBANK_DELIVERY_ENDPOINTS": f"{a.site_id}=127.0.0.1:{a.delivery_host.port}"},
    )  # fmt: skip
    try:
        producer = kafka_clients.producer(endpoints.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            start = datetime.now(UTC) - timedelta(minutes=30)
            for minute in range(31):  # warm above -150 °C from minute 10 on
                celsius = -140.0 if minute >= 10 else -185.0
                value = reading(
                    a.site_id, shipper, celsius, start + timedelta(minutes=minute), "shipper"
                )
                await producer.send(topic, value, key=shipper.encode())
            await producer.flush()
        finally:
            await producer.stop()
        compromised = await eventually(
            lambda: a.delivery.GetShipment(dpb.GetShipmentRequest(shipment_id=sid), metadata=OP),
            until=lambda s: s.compromised,
            what="the shipment compromised by the monitor",
            timeout=90,
        )
        assert compromised.compromise_cause.startswith(f"excursion:shipper:{shipper}")
    except BaseException:
        print(log.read_text()[-6000:])
        raise
    finally:
        stop_process(monitor, timeout=30, name="the cold-chain monitor")


async def test_the_sla_monitor_flags_a_shipment_that_will_miss_its_promise(sites, tmp_path):
    a, b = sites
    _, _, _, placed = await allocated(a, b, 8.6e8, count=1)
    request = shipment_request(placed.order_id, transit=90)
    request.promised_at.FromDatetime(datetime.now(UTC) + timedelta(minutes=45))  # < 90 min away
    shipment = await shipment_for(a, placed.order_id, request)
    sid = shipment.shipment_id
    await a.delivery.DispatchShipment(
        dpb.DispatchShipmentRequest(shipment_id=sid, reason="go"), metadata=OP
    )
    monitor = NetworkProcess(
        "sla",
        [SLA_MODULE, "worker", "-l", "info", "--without-web"],
        {
            "CELLBANK_KAFKA_BOOTSTRAP": a.bank.hosts[0].settings.kafka_bootstrap,
            "CELLBANK_DELIVERY_ENDPOINTS": f"{a.site_id}=127.0.0.1:{a.delivery_host.port}",
            **Identity(a.bank.hosts[0].settings.oidc_issuer).service_env(),
            "CELLBANK_OIDC_CLIENT_ID": "monitor-sla",  # the SLA monitor's own client
            "CELLBANK_OIDC_CLIENT_SECRET": demo_realm().clients["monitor-sla"].secret,
            "CELLBANK_SLA_CHECK_S": "1",
            "CELLBANK_SLA_APP_ID": f"sla-test-{uuid.uuid4().hex[:8]}",
            "CELLBANK_SLA_DATADIR": str(tmp_path / "faust-data"),
        },
    )
    monitor.start(tmp_path)
    try:
        flagged = await eventually(
            lambda: a.delivery.GetShipment(dpb.GetShipmentRequest(shipment_id=sid), metadata=OP),
            until=lambda s: s.at_risk,
            what="the SLA monitor to flag the shipment",
            timeout=120,
        )
        assert flagged.status == "IN_TRANSIT"
        history = await a.delivery_ops.GetAggregateHistory(
            opb.GetAggregateHistoryRequest(aggregate_id=sid), metadata=OP
        )
        (risk,) = [e for e in history.entries if e.event_type.endswith("ShipmentAtRisk")]
        assert (
            "after the promised time" in risk.payload_json
            and risk.actor == "monitor-sla:monitor-sla"
        )
    except BaseException:
        print((tmp_path / "sla.log").read_text()[-6000:])
        raise
    finally:
        monitor.stop()


async def test_a_qa_declared_defect_recalls_the_batch(sites):
    a, _ = sites
    donor_id, din, units = await a.stock_donor(2, 8.7e8)
    await lookback_caught_up(a)
    batch_id = f"batch-{din}"
    await refused(
        a.delivery.DeclareProductDefect(
            dpb.DeclareProductDefectRequest(batch_id=batch_id, reason="bag seam leak"),
            metadata=auth("op-bob"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )  # only QA declares a defect (alice holds QA too: bob is the operator without it)
    await refused(
        a.delivery.DeclareProductDefect(
            dpb.DeclareProductDefectRequest(batch_id=batch_id), metadata=QA
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    recall = await a.delivery.DeclareProductDefect(
        dpb.DeclareProductDefectRequest(batch_id=batch_id, reason="bag seam leak in lot 7"),
        metadata=QA,
    )
    assert recall.trigger == "PRODUCT_DEFECT" and set(recall.unit_ids) == set(units)
    assert set(recall.held_unit_ids) == set(units)  # both were in stock: held back at once
    assert a.bank.storage is not None
    for unit_id in units:
        held = await projected(
            lambda u=unit_id: a.bank.storage.GetUnit(spb.GetUnitRequest(unit_id=u), metadata=OP),
            until=lambda u: u.status == "RECALLED",
            what="the unit recalled",
        )
        assert held.status == "RECALLED"
    assert donor_id
