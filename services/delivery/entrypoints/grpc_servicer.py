"""DeliveryService over gRPC: translate requests into commands; the domain decides."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import grpc
from cellbank.delivery.v1 import delivery_service_pb2 as pb
from cellbank.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cellbank.delivery.v1 import events_pb2 as epb
from google.protobuf.message import Message

from services.delivery.app import Delivery
from services.delivery.domain import model
from services.delivery.domain.custody import Person
from services.delivery.read_model import DeliveryReadModel
from shared.access import (
    CLINICIAN,
    COURIER,
    MONITOR_COLDCHAIN,
    MONITOR_SLA,
    OPERATOR,
    QA,
    STAFF,
    AccessTable,
    roles,
)  # fmt: skip
from shared.auth import Principal, signing_role
from shared.commands import Meta, Outcome
from shared.errors import InvalidArgument, NotFound
from shared.grpc_requests import (
    Clock,
    caller,
    dispatch,
    expected_version,
    meta,
    parse_enum,
    required,
    timestamp,
)
from shared.grpc_server import ServiceBinding
from shared.signing import meaning, signer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DeliveryService"].full_name


def _ts(target: Any, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value)


def shipment_message(shipment_id: str, state: model.Shipment, version: int) -> pb.Shipment:
    c = state.created
    assert c is not None
    out = pb.Shipment(
        shipment_id=shipment_id, order_id=c.order_id, hospital_id=c.hospital_id,
        unit_ids=c.unit_ids, status=state.status.value, custodian=state.custodian,
        pending_to=state.pending.to_party if state.pending else "",
        shipper=epb.Shipper(
            shipper_id=c.shipper.shipper_id, qualified_hold_hours=c.shipper.qualified_hold_hours,
            uses_since_requalification=c.shipper.uses_since_requalification,
        ),
        logger_id=c.logger_id, courier=c.courier, route=c.route,
        planned_transit_minutes=c.planned_transit_minutes, compromised=state.compromised,
        compromise_cause=", ".join(state.compromise_causes),
        disposition=state.disposition.value if state.disposition else "", at_risk=state.at_risk,
        late=bool(state.delivered and state.delivered.late), version=version,
        order_to_delivery_seconds=state.delivered.order_to_delivery_seconds if state.delivered else 0,
    )  # fmt: skip
    _ts(out.promised_at, c.promised_at)
    _ts(out.dispatched_at, state.dispatched_at)
    _ts(out.delivered_at, state.delivered.at if state.delivered else None)
    for h in state.handoffs:
        handoff = out.handoffs.add(from_party=h.from_party, to_party=h.to_party, place=h.place)
        _ts(handoff.offered_at, h.offered_at)
        _ts(handoff.accepted_at, h.accepted_at)
        if h.signature is not None:
            handoff.signature.signer_name = h.signature.signer_name
            handoff.signature.meaning = h.signature.meaning
            handoff.signature.signer_subject = h.signature.signer_subject
            handoff.signature.event_id = h.signature.event_id
            handoff.signature.content_hash = h.signature.content_hash
            _ts(handoff.signature.signed_at, h.signature.signed_at)
    return out


def _finite(value: float, field: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(field, "must be a positive number")
    return value


class DeliveryServicer(pb_grpc.DeliveryServiceServicer):
    def __init__(
        self,
        app: Delivery,
        read_model: DeliveryReadModel,
        clock: Clock,
        signing_window: float = 300.0,
    ) -> None:
        self.app = app
        self.read_model = read_model
        self.clock = clock
        self.signing_window = signing_window  # Part 11: how recent the signer's sign-in is

    def _signature(self, principal: Principal, text: str) -> model.ESignature:
        """Part 11: the signed-in person, freshly authenticated, and what the signing means."""
        person = signer(principal, self.signing_window)
        said = meaning(text, "signature_meaning")
        return model.ESignature(person.name, said, self.clock(), person.subject)

    async def CreateShipment(
        self, request: pb.CreateShipmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Shipment:
        if not request.HasField("shipper"):
            raise InvalidArgument(
                "shipper", "the dry shipper (id, qualified hold hours) is required"
            )
        s = request.shipper
        shipper = model.Shipper(
            required(s.shipper_id, "shipper.shipper_id"),
            _finite(s.qualified_hold_hours, "shipper.qualified_hold_hours"),
            s.uses_since_requalification,
        )
        shipment_id, outcome = await self.app.create_shipment(
            required(request.order_id, "order_id"), shipper, request.logger_id,
            required(request.courier, "courier"), request.route,
            _finite(request.planned_transit_minutes, "planned_transit_minutes"),
            timestamp(request, "promised_at"), meta(request.reason, self.clock),
        )  # fmt: skip
        return shipment_message(shipment_id, outcome.state, outcome.version)

    async def DispatchShipment(
        self, request: pb.DispatchShipmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Shipment:
        shipment_id = required(request.shipment_id, "shipment_id")
        outcome = await self.app.dispatch(
            shipment_id, meta(request.reason, self.clock), expected_version(request)
        )
        return shipment_message(shipment_id, outcome.state, outcome.version)

    async def HandOver(
        self, request: pb.HandOverRequest, context: grpc.aio.ServicerContext
    ) -> pb.Shipment:
        command = model.HandOver(request.to_party, request.place, self.clock(), _person(caller()))
        return await self._handle(request, command)

    async def AcceptCustody(
        self, request: pb.AcceptCustodyRequest, context: grpc.aio.ServicerContext
    ) -> pb.Shipment:
        principal = caller()
        signature = self._signature(principal, request.signature_meaning)
        return await self._handle(
            request, model.AcceptCustody(request.place, signature, _person(principal))
        )

    async def RecordDelivery(
        self, request: pb.RecordDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Shipment:
        command = model.RecordDelivery(self.clock(), request.place, _person(caller()))
        return await self._handle(request, command)

    async def ReportShipperExcursion(
        self, request: pb.ReportShipperExcursionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportShipperExcursionReply:
        shipper_id = required(request.shipper_id, "shipper_id")
        cause = required(request.cause, "cause")
        why = f"shipper {shipper_id}: {request.detail or cause}"
        ids = await self.app.shipper_excursion(
            shipper_id, cause, request.detail, Meta(str(caller()), why, self.clock())
        )
        return pb.ReportShipperExcursionReply(shipment_ids=ids)

    async def DispositionShipment(
        self, request: pb.DispositionShipmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Shipment:
        principal = caller()  # the domain checks the QA role
        signature = self._signature(principal, request.signature_meaning)
        command = model.DispositionShipment(
            parse_enum(model.Decision, request.decision, "decision"),
            signing_role(principal),
            signature,
        )
        return await self._handle(request, command)

    async def FlagAtRisk(
        self, request: pb.FlagAtRiskRequest, context: grpc.aio.ServicerContext
    ) -> pb.Shipment:
        principal = caller()
        shipment_id = required(request.shipment_id, "shipment_id")
        why = request.why or "will miss its promised delivery time"
        command = model.FlagAtRisk(timestamp(request, "expected_at"), why)
        outcome = await self.app.handle(
            shipment_id, command, Meta(str(principal), why, self.clock()), None
        )
        return shipment_message(shipment_id, outcome.state, outcome.version)

    async def RecordReturn(
        self, request: pb.RecordReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.Shipment:
        command = model.RecordReturn(
            parse_enum(model.ReturnOutcome, request.outcome, "outcome"), request.reason
        )
        return await self._handle(request, command)

    async def GetShipment(
        self, request: pb.GetShipmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Shipment:
        shipment_id = required(request.shipment_id, "shipment_id")
        state, version = await self.app.shipment(shipment_id)
        return shipment_message(shipment_id, state, version)

    async def ListShipments(
        self, request: pb.ListShipmentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListShipmentsReply:
        out = []
        for shipment_id in await self.read_model.shipment_ids(self.app.site_id, request.status):
            try:
                state, version = await self.app.shipment(shipment_id)
            except NotFound:
                continue
            out.append(shipment_message(shipment_id, state, version))
        return pb.ListShipmentsReply(shipments=out)

    async def ListOrdersToShip(
        self, request: pb.ListOrdersToShipRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersToShipReply:
        out = []
        for r in await self.read_model.orders_to_ship(self.app.site_id):
            order = pb.OrderToShip(
                order_id=r["order_id"], hospital_id=r["hospital_id"], unit_ids=r["unit_ids"]
            )
            _ts(order.placed_at, r["placed_at"])
            out.append(order)
        return pb.ListOrdersToShipReply(orders=out)

    async def DeclareProductDefect(
        self, request: pb.DeclareProductDefectRequest, context: grpc.aio.ServicerContext
    ) -> pb.Recall:
        principal = caller()
        if bool(request.batch_id) == bool(request.din):
            raise InvalidArgument("batch_id", "name exactly one of batch_id or din")
        reason = required(request.reason, "reason")
        subject = request.batch_id or request.din
        dins = (
            await self.read_model.dins_of(batch_id=request.batch_id)
            if request.batch_id
            else [request.din]
        )
        if not dins:
            raise NotFound(f"batch {request.batch_id} is not known here")
        now = self.clock()
        source = f"defect:{subject}:{now.isoformat()}"
        recall_id = await self.app.raise_recall(
            model.Trigger.PRODUCT_DEFECT, subject, reason, dins, (), source,
            Meta(str(principal), reason, now),
        )  # fmt: skip
        listed = await self.ListRecalls(pb.ListRecallsRequest(), context)
        (found,) = [r for r in listed.recalls if r.recall_id == recall_id]
        return found

    async def ListRecalls(
        self, request: pb.ListRecallsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRecallsReply:
        out = []
        for recall_id, state, raised_at in await self.app.recalls():
            r = state.raised
            assert r is not None
            recall = pb.Recall(
                recall_id=recall_id, trigger=r.trigger.value, subject=r.subject, reason=r.reason,
                unit_ids=r.unit_ids,
                held_unit_ids=[h.unit_id for h in state.held if h.outcome == "RECALLED"],
                unacknowledged_hospitals=await self.read_model.unacknowledged(recall_id),
            )  # fmt: skip
            recall.raised_at.FromDatetime(raised_at)
            out.append(recall)
        return pb.ListRecallsReply(recalls=out)

    async def Trace(
        self, request: pb.TraceRequest, context: grpc.aio.ServicerContext
    ) -> pb.TraceReply:
        given = [f for f in ("din", "donor_id", "batch_id") if getattr(request, f).strip()]
        if len(given) != 1:
            raise InvalidArgument("din", "name exactly one of din, donor_id or batch_id")
        rows = await self.read_model.trace(
            request.din.strip(), request.donor_id.strip(), request.batch_id.strip()
        )
        if not rows:
            raise NotFound(f"nothing known for {given[0]} {getattr(request, given[0]).strip()}")
        return pb.TraceReply(rows=[_trace_row(r) for r in rows])

    async def _handle(self, request: Message, command: Any) -> pb.Shipment:
        outcome: Outcome[model.Shipment] = await dispatch(
            self.app.handle, request, "shipment_id", command, self.clock
        )
        shipment_id = getattr(request, "shipment_id")  # noqa: B009 - any shipment request
        return shipment_message(shipment_id.strip(), outcome.state, outcome.version)


def _person(principal: Principal) -> Person:
    """The caller as the custody rules see them (username, roles, hospital, site)."""
    return Person(principal.username, principal.roles, principal.hospital, principal.site)


def _trace_row(r: Any) -> pb.TraceRow:
    status = r["unit_status"] or ""
    if status == "STORED" and r["reserved_for"]:
        status = "RESERVED"
    if r["shipment_status"] and r["order_status"] in ("DELIVERED", "RECEIVED", "INFUSED"):
        status = r["order_status"]
    elif r["shipment_status"] == "IN_TRANSIT":
        status = "IN_TRANSIT"
    location = r["address"] or ""
    if r["shipment_id"]:
        location = f"shipment {r['shipment_id']} ({r['custodian'] or 'bank'})"
        if r["order_status"] in ("RECEIVED", "INFUSED") or r["shipment_status"] == "DELIVERED":
            location = f"hospital {r['hospital_id']}"
    row = pb.TraceRow(
        donor_id=r["donor_id"] or "", donor_site=r["donor_site"] or "", din=r["din"] or "",
        batch_id=r["batch_id"] or "", unit_id=r["unit_id"] or "", unit_status=status,
        location=location, shipment_id=r["shipment_id"] or "",
        shipment_status=r["shipment_status"] or "", order_id=r["order_id"] or "",
        hospital_id=r["hospital_id"] or "", patient_ref=r["patient_ref"] or "",
        unit_site=r["unit_site"] or "",
    )  # fmt: skip
    if r["infused_at"] is not None and r["collected_at"] is not None:
        row.vein_to_vein_seconds = (r["infused_at"] - r["collected_at"]).total_seconds()
    if r["delivered_at"] is not None and r["placed_at"] is not None:
        row.order_to_delivery_seconds = (r["delivered_at"] - r["placed_at"]).total_seconds()
    for field, column in (
        ("collected_at", "collected_at"), ("released_at", "released_at"),
        ("delivered_at", "delivered_at"), ("received_at", "received_at"),
        ("infused_at", "infused_at"),
    ):  # fmt: skip
        _ts(getattr(row, field), r[column])
    return row


# Who may call which RPC (README, "Roles"): the guard enforces it before any handler runs.
ACCESS: AccessTable = {
    "CreateShipment": roles(OPERATOR),
    "DispatchShipment": roles(OPERATOR),
    "HandOver": roles(OPERATOR, COURIER),
    "AcceptCustody": roles(OPERATOR, COURIER, CLINICIAN),  # only the handoff's named receiver
    "RecordDelivery": roles(OPERATOR, COURIER, CLINICIAN),  # only the present custodian
    "ReportShipperExcursion": roles(OPERATOR, QA, COURIER, MONITOR_COLDCHAIN),
    "DispositionShipment": roles(QA),
    "FlagAtRisk": roles(OPERATOR, MONITOR_SLA),
    "RecordReturn": roles(OPERATOR, QA),
    "GetShipment": STAFF | roles(COURIER),
    "ListShipments": STAFF | roles(COURIER),
    "ListOrdersToShip": STAFF,
    "DeclareProductDefect": roles(QA),
    "ListRecalls": STAFF,
    "Trace": STAFF,
}


def delivery_binding(servicer: DeliveryServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, servicer, pb_grpc.add_DeliveryServiceServicer_to_server, ACCESS
    )
