"""ManufacturingService over gRPC: translate requests into commands; the domain decides."""

from __future__ import annotations

from typing import Any

import grpc
from cellbank.manufacturing.v1 import manufacturing_service_pb2 as pb
from cellbank.manufacturing.v1 import manufacturing_service_pb2_grpc as pb_grpc
from google.protobuf.message import Message

from services.manufacturing.app import Manufacturing
from services.manufacturing.domain import model
from services.manufacturing.read_model import ManufacturingReadModel, unit_view
from shared.access import (
    OPERATOR,
    QA,
    STAFF,
    AccessTable,
    roles,
)  # fmt: skip
from shared.auth import signing_role
from shared.commands import Outcome
from shared.grpc_requests import (
    Clock,
    caller,
    dispatch,
    expected_version,
    meta,
    parse_date,
    parse_enum,
    required,
    timestamp,
)
from shared.grpc_server import ServiceBinding
from shared.signing import meaning, signer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ManufacturingService"].full_name


def _reply(outcome: Outcome[model.Batch]) -> pb.BatchReply:
    return pb.BatchReply(
        batch_id=outcome.state.batch_id, version=outcome.version, status=outcome.state.status.value
    )


class ManufacturingServicer(pb_grpc.ManufacturingServiceServicer):
    def __init__(
        self,
        app: Manufacturing,
        read_model: ManufacturingReadModel,
        clock: Clock,
        signing_window: float = 300.0,
    ) -> None:
        self.app = app
        self.read_model = read_model
        self.clock = clock
        self.signing_window = signing_window  # Part 11: how recent the signer's sign-in is

    async def StartBatch(
        self, request: pb.StartBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchReply:
        principal = caller()
        outcome = await self.app.start_batch(
            required(request.din, "din"),
            required(request.product_type, "product_type"),
            principal.username,  # a person: the two-person rule compares people, not roles
            meta(request.reason, self.clock),
        )
        return _reply(outcome)

    async def RecordProcessStep(
        self, request: pb.RecordProcessStepRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchReply:
        principal = caller()
        command = model.RecordProcessStep(
            step=parse_enum(model.Step, request.step, "step"),
            day=request.day,
            performed_by=principal.username,
            performed_at=timestamp(request, "performed_at"),
            viable_cells=request.viable_cells,
            viability_pct=request.viability_pct,
        )
        return await self._handle(request, command)

    async def RecordQcResult(
        self, request: pb.RecordQcResultRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchReply:
        command = model.RecordQcResult(
            test=required(request.test, "test"),
            value=request.value if request.HasField("value") else None,
            text=request.text,
            tested_at=timestamp(request, "tested_at"),
        )
        return await self._handle(request, command)

    async def ReleaseBatch(
        self, request: pb.ReleaseBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseBatchReply:
        principal = caller()  # the domain checks the signing role and the two-person rule
        person = signer(principal, self.signing_window)  # Part 11: the signed-in person
        said = meaning(request.signature_meaning, "signature_meaning", model.RELEASE_MEANINGS)
        command_meta = meta(request.reason, self.clock)
        command = model.ReleaseBatch(
            signature=model.Signature(person.name, command_meta.at, said, person.subject),
            signer_role=signing_role(principal),
            donor_eligibility="",
            units=tuple(
                model.UnitSpec(
                    u.viable_nk_cells, u.cd3_cells, u.volume_ml, u.restricting_allele.strip()
                )
                for u in request.units
            ),
            urgent_physician_request=request.urgent_physician_request,
            signer_username=person.username,
        )
        outcome = await self.app.release(
            required(request.batch_id, "batch_id"), command, command_meta, expected_version(request)
        )
        units = [
            unit_view({**_unit_row(u), "batch_id": outcome.state.batch_id})
            for u in outcome.state.units
        ]
        return pb.ReleaseBatchReply(
            batch_id=outcome.state.batch_id, version=outcome.version, units=units
        )

    async def RecordSterilityResult(
        self, request: pb.RecordSterilityResultRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchReply:
        command = model.RecordSterilityResult(
            request.positive, parse_date(request.specimen_date, "specimen_date")
        )
        return await self._handle(request, command)

    async def GetBatch(
        self, request: pb.GetBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchView:
        return await self.read_model.batch(required(request.batch_id, "batch_id"))

    async def ListUnits(
        self, request: pb.ListUnitsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUnitsReply:
        return pb.ListUnitsReply(units=await self.read_model.units(request.din))

    async def _handle(self, request: Message, command: Any) -> pb.BatchReply:
        return _reply(await dispatch(self.app.handle, request, "batch_id", command, self.clock))


def _unit_row(unit: model.UnitRecord) -> dict[str, object]:
    return {
        "unit_id": unit.unit_id,
        "din": unit.din,
        "product_code": unit.product_code,
        "division": unit.division,
        "viable_nk_cells": unit.viable_nk_cells,
        "cd3_cells": unit.cd3_cells,
        "volume_ml": unit.volume_ml,
        "expires_on": unit.expires_on,
        "status": unit.status,
        "segregated": unit.segregated,
        "labels": unit.labels,
        "restricting_allele": unit.restricting_allele,
    }


# Who may call which RPC (README, "Roles"): only QA signs a release.
ACCESS: AccessTable = {
    "StartBatch": roles(OPERATOR),
    "RecordProcessStep": roles(OPERATOR),
    "RecordQcResult": STAFF,
    "ReleaseBatch": roles(QA),
    "RecordSterilityResult": STAFF,
    "GetBatch": STAFF,
    "ListUnits": STAFF,
}


def manufacturing_binding(servicer: ManufacturingServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, servicer, pb_grpc.add_ManufacturingServiceServicer_to_server, ACCESS
    )
