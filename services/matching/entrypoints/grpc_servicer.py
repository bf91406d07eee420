"""HospitalService over gRPC: translate requests into domain values; matching decides."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import grpc
from cellbank.hospital.v1 import hospital_pb2 as pb
from cellbank.hospital.v1 import hospital_pb2_grpc as pb_grpc

from services.matching.app import Matching
from services.matching.domain.model import (
    AdverseEventReported,
    Cmv,
    ConfirmInfusion,
    ConfirmReceipt,
    OrderPlaced,
    OrderStatus,
    PatientSnapshot,
    ProductCategory,
    ReportAdverseEvent,
    Signature,
)
from services.matching.domain.ranking import (
    Assessment,
    Classification,
    Criteria,
    needed_on,
    validate_dose,
    validate_needed_by,
    validate_patient,
)
from services.matching.views import NotificationView, OrderView
from shared.access import (
    CLINICIAN,
    HOSPITAL_CALLERS,
    OPERATOR,
    AccessTable,
    roles,
)  # fmt: skip
from shared.auth import Principal
from shared.caller_streams import CallerStreams
from shared.commands import Meta
from shared.errors import InvalidArgument, PermissionDenied
from shared.grpc_requests import Clock, caller, moment_of, required
from shared.grpc_server import ServiceBinding
from shared.signing import meaning, signer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["HospitalService"].full_name
MAX_LIMIT = 100
DEFAULT_LIMIT = 10

_CATEGORY: dict[int, ProductCategory] = {
    pb.PRODUCT_TYPE_NK: ProductCategory.NK,
    pb.PRODUCT_TYPE_CAR_NK: ProductCategory.CAR_NK,
    pb.PRODUCT_TYPE_VST: ProductCategory.VST,
}
_PRODUCT_TYPE: dict[ProductCategory, Any] = {v: k for k, v in _CATEGORY.items()}
_CMV: dict[int, Cmv] = {
    pb.CMV_STATUS_UNSPECIFIED: Cmv.UNKNOWN,
    pb.CMV_STATUS_NEGATIVE: Cmv.NEGATIVE,
    pb.CMV_STATUS_POSITIVE: Cmv.POSITIVE,
}
_STATUS = {
    OrderStatus.PLACED: pb.ORDER_STATUS_PLACED,
    OrderStatus.ALLOCATED: pb.ORDER_STATUS_ALLOCATED,
    OrderStatus.REJECTED: pb.ORDER_STATUS_REJECTED,
    OrderStatus.CANCELLED: pb.ORDER_STATUS_CANCELLED,
    OrderStatus.DISPATCHED: pb.ORDER_STATUS_DISPATCHED,
    OrderStatus.DELIVERED: pb.ORDER_STATUS_DELIVERED,
    OrderStatus.RECEIVED: pb.ORDER_STATUS_RECEIVED,
    OrderStatus.INFUSED: pb.ORDER_STATUS_INFUSED,
}


def parse_category(value: int) -> ProductCategory:
    if value not in _CATEGORY:
        raise InvalidArgument("product_type", f"{value} is not one of NK (1), CAR_NK (2), VST (3)")
    return _CATEGORY[value]


def parse_patient(
    patient: pb.PatientProfile, present: bool, table: Classification
) -> PatientSnapshot:
    if not present:
        raise InvalidArgument("patient", "is required")
    if patient.cmv not in _CMV:
        raise InvalidArgument("patient.cmv", f"{patient.cmv} is not a CmvStatus")
    checked = validate_patient(
        PatientSnapshot(
            patient.patient_ref,
            patient.weight_kg,
            tuple(patient.hla_alleles),
            patient.abo,
            _CMV[patient.cmv],
        )
    )
    table.refuse_retired(checked.hla_alleles, "patient.hla_alleles")
    return checked


def _needed_by(
    request: pb.PlaceOrderRequest | pb.SearchInventoryRequest, now: datetime
) -> datetime | None:
    if not request.HasField("needed_by"):
        return None
    try:
        moment: datetime = request.needed_by.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument("needed_by", "is not a valid timestamp") from None
    return validate_needed_by(moment, now)


def candidate(a: Assessment) -> pb.Candidate:
    out = pb.Candidate(
        unit_id=a.unit.unit_id, din=a.unit.din, site_id=a.unit.site_id,
        dose_cells_per_kg=a.dose_per_kg, score=a.score, reasons=a.reasons,
    )  # fmt: skip
    out.estimated_delivery.FromTimedelta(timedelta(hours=a.transit_hours))
    # An expiry date means the end of that day (ISBT 128 Data Structure 004/005).
    out.expires_at.FromDatetime(datetime.combine(a.unit.expires_on, time(23, 59, 59), tzinfo=UTC))
    return out


def order_message(view: OrderView) -> pb.Order:
    state = view.state
    placed = state.placed
    assert placed is not None
    out = pb.Order(
        order_id=view.order_id,
        hospital_id=placed.hospital_id,
        status=_STATUS.get(state.status, pb.ORDER_STATUS_UNSPECIFIED),
        units=[
            pb.AllocatedUnit(
                unit_id=u.unit_id,
                din=u.din,
                site_id=u.site_id,
                dose_cells_per_kg=u.dose_cells_per_kg,
                score=u.score,
                reasons=u.reasons,
            )
            for u in state.units
        ],
        status_reason=state.status_reason,
        shipment_id=state.shipment_id,
        version=view.version,
        request_id=placed.request_id,
        classification_version=state.classification_version,
        product_type=_PRODUCT_TYPE[placed.product_type],
        patient_ref=placed.patient.patient_ref,
        allow_multiple_units=placed.allow_multiple_units,
    )
    if view.placed_at is not None:
        out.placed_at.FromDatetime(view.placed_at)
    if view.updated_at is not None:
        out.updated_at.FromDatetime(view.updated_at)
    if placed.needed_by is not None:
        out.needed_by.FromDatetime(placed.needed_by)
    return out


class HospitalServicer(pb_grpc.HospitalServiceServicer):
    def __init__(self, app: Matching, clock: Clock, signing_window: float = 300.0) -> None:
        self.app = app
        self.clock = clock
        self.signing_window = signing_window  # Part 11: how recent the signer's sign-in is
        self.watches = CallerStreams()

    def _signature(
        self, principal: Principal, signature: pb.Signature, present: bool, now: datetime
    ) -> Signature:
        """Part 11: the signed-in person's name (a request's signer_name may only repeat it),
        what the signature means, and when (server time)."""
        if not present:
            raise InvalidArgument("signature", "an e-signature (its meaning) is required")
        person = signer(
            principal, self.signing_window, signature.signer_name, "signature.signer_name"
        )
        said = meaning(signature.meaning, "signature.meaning")
        return Signature(person.name, said, now, person.subject)

    async def SearchInventory(
        self, request: pb.SearchInventoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchInventoryResponse:
        principal = caller()
        now = self.clock()
        patient = parse_patient(request.patient, request.HasField("patient"), self.app.search.table)
        category = parse_category(request.product_type)
        validate_dose(request.dose_cells_per_kg_min, request.dose_cells_per_kg_max)
        if not 0 <= request.limit <= MAX_LIMIT:
            raise InvalidArgument("limit", f"must be 0 (default {DEFAULT_LIMIT}) to {MAX_LIMIT}")
        criteria = Criteria(
            principal.hospital if principal.has(*HOSPITAL_CALLERS) else "",
            patient, category, request.dose_cells_per_kg_min, request.dose_cells_per_kg_max,
            needed_on(_needed_by(request, now), now),
        )  # fmt: skip
        result = await self.app.search.search(criteria, request.limit or DEFAULT_LIMIT)
        return pb.SearchInventoryResponse(
            candidates=[candidate(a) for a in result.ranked],
            classification_version=self.app.search.table.version,
            excluded=[f"{rule}: {n}" for rule, n in sorted(result.excluded.items())],
            notes=self.app.search.table.search_notes(criteria.category),
        )

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        principal = caller()
        now = self.clock()
        request_id = required(request.request_id, "request_id")
        if len(request_id) > 128 or not request_id.isprintable():
            raise InvalidArgument("request_id", "at most 128 printable characters")
        placed = OrderPlaced(
            hospital_id=_hospital(principal),
            request_id=request_id,
            patient=parse_patient(
                request.patient, request.HasField("patient"), self.app.search.table
            ),
            product_type=parse_category(request.product_type),
            dose_min=request.dose_cells_per_kg_min,
            dose_max=request.dose_cells_per_kg_max,
            needed_by=_needed_by(request, now),
            allow_multiple_units=request.allow_multiple_units,
        )
        validate_dose(placed.dose_min, placed.dose_max)
        meta = Meta(str(principal), f"order {request_id} placed by {principal.label}", now)
        return order_message(await self.app.handlers.place_order(placed, meta))

    async def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        principal = caller()
        return order_message(
            await self.app.views.view(required(request.order_id, "order_id"), _hospital(principal))
        )

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersResponse:
        principal = caller()
        views = await self.app.views.orders_of(_hospital(principal))
        return pb.ListOrdersResponse(orders=[order_message(v) for v in views])

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        principal = caller()
        order_id = required(request.order_id, "order_id")
        reason = required(request.reason, "reason")
        meta = Meta(str(principal), reason, self.clock())
        return order_message(
            await self.app.handlers.cancel_order(order_id, _hospital(principal), reason, meta)
        )

    async def WatchOrder(
        self, request: pb.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Order]:
        principal = caller()
        order_id = required(request.order_id, "order_id")
        with self.watches.slot(str(principal), "WatchOrder"):
            async for view in self.app.views.watch(order_id, _hospital(principal)):
                yield order_message(view)

    async def ConfirmReceipt(
        self, request: pb.ConfirmReceiptRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        principal = caller()
        now = self.clock()
        signature = self._signature(
            principal, request.signature, request.HasField("signature"), now
        )
        order_id = required(request.order_id, "order_id")
        hospital = _hospital(principal)
        command = ConfirmReceipt(hospital, signature)
        meta = Meta(str(principal), f"receipt confirmed: {signature.meaning}", now)
        return order_message(
            await self.app.handlers.hospital_step(order_id, hospital, command, meta)
        )

    async def ConfirmInfusion(
        self, request: pb.ConfirmInfusionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        principal = caller()
        now = self.clock()
        signature = self._signature(
            principal, request.signature, request.HasField("signature"), now
        )
        order_id = required(request.order_id, "order_id")
        unit_id = required(request.unit_id, "unit_id")
        hospital = _hospital(principal)
        view = await self.app.views.view(order_id, hospital)
        since = (now - view.placed_at).total_seconds() if view.placed_at else 0.0
        command = ConfirmInfusion(hospital, unit_id, signature, since)
        meta = Meta(str(principal), f"infusion of {unit_id}: {signature.meaning}", now)
        return order_message(
            await self.app.handlers.hospital_step(order_id, hospital, command, meta)
        )

    async def ReportAdverseEvent(
        self, request: pb.ReportAdverseEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdverseEventReport:
        principal = caller()
        now = self.clock()
        order_id = required(request.order_id, "order_id")
        unit_id = required(request.unit_id, "unit_id")
        description = required(request.description, "description")
        if len(description) > 4000:
            raise InvalidArgument("description", "at most 4000 characters")
        occurred = now
        if request.HasField("occurred_at"):
            occurred = moment_of(request.occurred_at, "occurred_at")
            if occurred > now + timedelta(minutes=5):
                raise InvalidArgument("occurred_at", "is in the future")
        report_id = (
            "AE-"
            + hashlib.sha256(
                f"{order_id}\0{unit_id}\0{description}\0{occurred.isoformat()}".encode()
            )
            .hexdigest()[:16]
            .upper()
        )
        report = AdverseEventReported(
            report_id, unit_id, description, request.severity.strip() or "UNSPECIFIED", occurred
        )
        meta = Meta(str(principal), f"adverse event reported for {unit_id}", now)
        hospital = _hospital(principal)
        await self.app.handlers.hospital_step(
            order_id, hospital, ReportAdverseEvent(hospital, report), meta
        )
        out = pb.AdverseEventReport(report_id=report_id, order_id=order_id, unit_id=unit_id)
        out.recorded_at.FromDatetime(now)
        return out

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListNotificationsResponse:
        principal = caller()
        views = await self.app.views.notifications(_hospital(principal))
        if request.unacknowledged_only:
            views = [v for v in views if v.acknowledged_at is None]
        return pb.ListNotificationsResponse(notifications=[notification_message(v) for v in views])

    async def AcknowledgeNotification(
        self, request: pb.AcknowledgeNotificationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Notification:
        principal = caller()
        notification_id = required(request.notification_id, "notification_id")
        meta = Meta(str(principal), "notification acknowledged", self.clock())
        return notification_message(
            await self.app.handlers.acknowledge_notification(
                notification_id, _hospital(principal), meta
            )
        )


def notification_message(view: NotificationView) -> pb.Notification:
    issued = view.state.issued
    assert issued is not None
    out = pb.Notification(
        notification_id=view.notification_id, kind=issued.kind, message=issued.message,
        unit_ids=issued.unit_ids,
    )  # fmt: skip
    out.created_at.FromDatetime(view.created_at)
    if view.acknowledged_at is not None:
        out.acknowledged_at.FromDatetime(view.acknowledged_at)
    return out


def _hospital(principal: Principal) -> str:
    """The hospital a hospital system or clinician acts for (its `/hospitals/<id>` group)."""
    if not principal.hospital:
        raise PermissionDenied(f"{principal} belongs to no hospital (no /hospitals/<id> group)")
    return principal.hospital


# Who may call which RPC (README, "Roles"): a hospital's system or its clinicians; only a
# clinician (a signed-in person) signs receipt and infusion. Operators may search.
ACCESS: AccessTable = {
    "SearchInventory": HOSPITAL_CALLERS | roles(OPERATOR),
    "PlaceOrder": HOSPITAL_CALLERS,
    "GetOrder": HOSPITAL_CALLERS,
    "ListOrders": HOSPITAL_CALLERS,
    "CancelOrder": HOSPITAL_CALLERS,
    "WatchOrder": HOSPITAL_CALLERS,
    "ConfirmReceipt": roles(CLINICIAN),
    "ConfirmInfusion": roles(CLINICIAN),
    "ReportAdverseEvent": HOSPITAL_CALLERS,
    "ListNotifications": HOSPITAL_CALLERS,
    "AcknowledgeNotification": HOSPITAL_CALLERS,
}


def hospital_binding(servicer: HospitalServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, servicer, pb_grpc.add_HospitalServiceServicer_to_server, ACCESS
    )
