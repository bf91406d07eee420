"""StorageService over gRPC: translate requests into commands; the domain decides."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
from cellbank.storage.v1 import storage_service_pb2 as pb
from cellbank.storage.v1 import storage_service_pb2_grpc as pb_grpc
from google.protobuf.message import Message

from services.storage.app import Storage
from services.storage.coldchain.watch import Reading, validate_reading
from services.storage.domain import model, tank
from services.storage.entrypoints.telemetry import TelemetryPublisher
from services.storage.read_model import StorageReadModel
from shared.access import (
    MONITOR_COLDCHAIN,
    OPERATOR,
    QA,
    SERVICE_DELIVERY,
    SERVICE_MATCHING,
    STAFF,
    AccessTable,
    roles,
)  # fmt: skip
from shared.auth import signing_role
from shared.commands import Outcome
from shared.errors import InvalidArgument
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

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StorageService"].full_name


def _reply(outcome: Outcome[model.StoredUnit]) -> pb.UnitReply:
    state = outcome.state
    reply = pb.UnitReply(
        unit_id=outcome.events[0].aggregate_id if outcome.events else state.unit_id,
        version=outcome.version,
        status=state.status.value,
        address=state.address,
        reserved_for=state.reservation.order_id if state.reservation else "",
    )
    if state.reservation is not None:
        reply.hold_until.FromDatetime(state.reservation.hold_until)
    return reply


class StorageServicer(pb_grpc.StorageServiceServicer):
    def __init__(
        self,
        app: Storage,
        read_model: StorageReadModel,
        telemetry: TelemetryPublisher,
        site_id: str,
        clock: Clock,
        signing_window: float = 300.0,
        max_hold: timedelta | None = None,
    ) -> None:
        self.app = app
        self.max_hold = max_hold  # CELLBANK_MAX_HOLD_SECONDS
        self.read_model = read_model
        self.telemetry = telemetry
        self.site_id = site_id
        self.clock = clock
        self.signing_window = signing_window  # Part 11: how recent the signer's sign-in is

    async def RegisterTank(
        self, request: pb.RegisterTankRequest, context: grpc.aio.ServicerContext
    ) -> pb.TankReply:
        command = model.RegisterTank(
            required(request.tank_id, "tank_id"), request.racks, request.boxes_per_rack,
            request.positions_per_box, tuple(request.segregated_boxes),
        )  # fmt: skip
        outcome = await self.app.register_tank(command, meta(request.reason, self.clock))
        return pb.TankReply(
            tank_id=command.tank_id,
            version=outcome.version,
            positions=len(outcome.state.segregated),
        )

    async def StoreUnit(
        self, request: pb.StoreUnitRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnitReply:
        unit_id = required(request.unit_id, "unit_id")
        outcome = await self.app.store_unit(
            unit_id, required(request.address, "address"), meta(request.reason, self.clock)
        )
        return _reply(outcome)

    async def MoveUnit(
        self, request: pb.MoveUnitRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnitReply:
        outcome = await self.app.move(
            required(request.unit_id, "unit_id"), required(request.to_address, "to_address"),
            meta(request.reason, self.clock), expected_version(request),
        )  # fmt: skip
        return _reply(outcome)

    async def QuarantineUnit(
        self, request: pb.QuarantineUnitRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnitReply:
        command = model.QuarantineUnit(required(request.cause, "cause"), request.reason)
        return await self._handle(request, command)

    async def QuarantineTank(
        self, request: pb.QuarantineTankRequest, context: grpc.aio.ServicerContext
    ) -> pb.QuarantineTankReply:
        tank_id = required(request.tank_id, "tank_id")
        units = await self.app.quarantine_tank(
            tank_id, required(request.cause, "cause"), meta(request.reason, self.clock)
        )
        return pb.QuarantineTankReply(tank_id=tank_id, unit_ids=units)

    async def DispositionUnit(
        self, request: pb.DispositionUnitRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnitReply:
        principal = caller()  # the domain checks the QA role
        person = signer(principal, self.signing_window)  # Part 11: the signed-in person
        said = meaning(request.signature_meaning, "signature_meaning")
        signature = model.Signature(person.name, said, self.clock(), person.subject)
        command = model.DispositionUnit(
            parse_enum(model.Disposition, request.decision, "decision"),
            person.username, signing_role(principal), said, signature,
        )  # fmt: skip
        return await self._handle(request, command)

    async def ReserveUnit(
        self, request: pb.ReserveUnitRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnitReply:
        command = model.ReserveUnit(
            required(request.order_id, "order_id"), timestamp(request, "hold_until"), self.clock(),
            self.max_hold,
        )  # fmt: skip
        return await self._handle(request, command)

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnitReply:
        return await self._handle(
            request, model.ReleaseReservation(required(request.order_id, "order_id"))
        )

    async def PickUnit(
        self, request: pb.PickUnitRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnitReply:
        return await self._handle(
            request, model.PickUnit(required(request.order_id, "order_id"), self.clock())
        )

    async def DiscardUnit(
        self, request: pb.DiscardUnitRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnitReply:
        return await self._handle(request, model.DiscardUnit(request.reason))

    async def RecallUnit(
        self, request: pb.RecallUnitRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnitReply:
        return await self._handle(
            request, model.RecallUnit(required(request.recall_id, "recall_id"), request.reason)
        )

    async def GetUnit(
        self, request: pb.GetUnitRequest, context: grpc.aio.ServicerContext
    ) -> pb.InventoryUnit:
        return await self.read_model.unit(required(request.unit_id, "unit_id"), self.site_id)

    async def ListInventory(
        self, request: pb.ListInventoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInventoryReply:
        units = await self.read_model.inventory(
            self.site_id, request.status, request.product_type, request.tank_id
        )
        return pb.ListInventoryReply(units=units)

    async def ListNetworkInventory(
        self, request: pb.ListNetworkInventoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListNetworkInventoryReply:
        return pb.ListNetworkInventoryReply(
            units=await self.read_model.network(request.product_type, self.clock())
        )

    async def RecordTemperature(
        self, request: pb.RecordTemperatureRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordTemperatureReply:
        tank_id = required(request.tank_id, "tank_id")
        tank.tank_of(f"{tank_id}/R1/B1/P01")  # validates the tank id's form
        if not tank_id.startswith(f"{self.site_id}-"):
            raise InvalidArgument("tank_id", f"not a tank of site {self.site_id}")
        reading = Reading(self.site_id, tank_id, request.celsius, timestamp(request, "measured_at"))
        await self.telemetry.publish(validate_reading(reading, self.clock()))
        return pb.RecordTemperatureReply()

    async def _handle(self, request: Message, command: Any) -> pb.UnitReply:
        return _reply(await dispatch(self.app.handle, request, "unit_id", command, self.clock))


# Who may call which RPC (README, "Roles"): matching reserves/releases (and extends by
# reserving again), delivery picks and recalls, the cold-chain monitor only reports.
ACCESS: AccessTable = {
    "RegisterTank": roles(OPERATOR),
    "StoreUnit": roles(OPERATOR),
    "MoveUnit": roles(OPERATOR),
    "QuarantineUnit": STAFF,
    "QuarantineTank": STAFF | roles(MONITOR_COLDCHAIN),
    "DispositionUnit": roles(QA),
    "ReserveUnit": roles(OPERATOR, SERVICE_MATCHING),
    "ReleaseReservation": roles(OPERATOR, SERVICE_MATCHING),
    "PickUnit": roles(OPERATOR, SERVICE_DELIVERY),
    "DiscardUnit": STAFF,
    "RecallUnit": STAFF | roles(SERVICE_DELIVERY),
    "GetUnit": STAFF,
    "ListInventory": STAFF,
    "ListNetworkInventory": STAFF,
    "RecordTemperature": roles(OPERATOR, MONITOR_COLDCHAIN),
}


def storage_binding(servicer: StorageServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, servicer, pb_grpc.add_StorageServiceServicer_to_server, ACCESS
    )
