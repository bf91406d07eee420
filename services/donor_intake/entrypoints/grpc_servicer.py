"""DonorIntakeService over gRPC: translate requests into commands; the domain decides."""

from __future__ import annotations

from typing import Any

import grpc
from cellbank.donor.v1 import donor_service_pb2 as pb
from cellbank.donor.v1 import donor_service_pb2_grpc as pb_grpc
from google.protobuf.message import Message

from services.donor_intake.app import DonorIntake
from services.donor_intake.domain import model
from services.donor_intake.read_model import DonorReadModel
from services.kernel.isbt128 import parse_din
from shared.access import (
    OPERATOR,
    STAFF,
    AccessTable,
    roles,
)  # fmt: skip
from shared.commands import Outcome
from shared.grpc_requests import (
    Clock,
    dispatch,
    expected_version,
    meta,
    parse_date,
    parse_enum,
    required,
    timestamp,
)
from shared.grpc_server import ServiceBinding

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DonorIntakeService"].full_name


def _reply(outcome: Outcome[model.Donor]) -> pb.DonorReply:
    state = outcome.state
    return pb.DonorReply(
        donor_id=state.donor_id,
        version=outcome.version,
        eligibility=state.eligibility.value,
        eligibility_reasons=list(state.eligibility_reasons),
    )


class DonorIntakeServicer(pb_grpc.DonorIntakeServiceServicer):
    def __init__(self, app: DonorIntake, read_model: DonorReadModel, clock: Clock) -> None:
        self.app = app
        self.read_model = read_model
        self.clock = clock

    async def _handle(self, request: Message, command: Any) -> pb.DonorReply:
        return _reply(await dispatch(self.app.handle, request, "donor_id", command, self.clock))

    async def RegisterDonor(
        self, request: pb.RegisterDonorRequest, context: grpc.aio.ServicerContext
    ) -> pb.DonorReply:
        return _reply(await self.app.register(request.donor_ref, meta(request.reason, self.clock)))

    async def GiveConsent(
        self, request: pb.GiveConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DonorReply:
        return await self._handle(request, model.GiveConsent(request.consent_form))

    async def WithdrawConsent(
        self, request: pb.WithdrawConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DonorReply:
        return await self._handle(request, model.WithdrawConsent())

    async def RecordScreeningResult(
        self, request: pb.RecordScreeningResultRequest, context: grpc.aio.ServicerContext
    ) -> pb.DonorReply:
        command = model.RecordScreeningResult(
            marker=request.marker,
            result=parse_enum(model.Result, request.result, "result"),
            specimen_date=parse_date(request.specimen_date, "specimen_date"),
            today=self.clock().date(),
        )
        return await self._handle(request, command)

    async def RecordQuestionnaire(
        self, request: pb.RecordQuestionnaireRequest, context: grpc.aio.ServicerContext
    ) -> pb.DonorReply:
        return await self._handle(request, model.RecordQuestionnaire(request.passed))

    async def DetermineEligibility(
        self, request: pb.DetermineEligibilityRequest, context: grpc.aio.ServicerContext
    ) -> pb.DonorReply:
        as_of = parse_date(request.as_of, "as_of") if request.as_of else self.clock().date()
        return await self._handle(request, model.DetermineEligibility(as_of))

    async def DeferDonor(
        self, request: pb.DeferDonorRequest, context: grpc.aio.ServicerContext
    ) -> pb.DonorReply:
        command = model.DeferDonor(
            parse_date(request.until, "until"), self.clock().date(), reason=request.reason.strip()
        )
        return await self._handle(request, command)

    async def RecordTyping(
        self, request: pb.RecordTypingRequest, context: grpc.aio.ServicerContext
    ) -> pb.DonorReply:
        command = model.RecordTyping(
            hla={locus.locus: tuple(locus.alleles) for locus in request.hla},
            kir=tuple(request.kir_genes),
            abo=request.abo,
            rh=request.rh,
            cmv=parse_enum(model.Cmv, request.cmv or "UNKNOWN", "cmv"),
        )
        return await self._handle(request, command)

    async def RecordCollection(
        self, request: pb.RecordCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionReply:
        command = model.RecordCollection(
            din="",
            collected_at=timestamp(request, "collected_at"),
            volume_ml=request.volume_ml,
            total_nucleated_cells=request.total_nucleated_cells,
            nk_cells=request.nk_cells,
            cd3_cells=request.cd3_cells,
            urgent_physician_request=request.urgent_physician_request,
        )
        done = await self.app.record_collection(
            required(request.donor_id, "donor_id"),
            command,
            meta(request.reason, self.clock),
            expected_version(request),
        )
        return pb.CollectionReply(
            donor_id=request.donor_id,
            version=done.outcome.version,
            din=done.din,
            check_character=done.check_character,
            type3_flag=done.type3_flag,
        )

    async def GetDonor(
        self, request: pb.GetDonorRequest, context: grpc.aio.ServicerContext
    ) -> pb.DonorView:
        return await self.read_model.donor(required(request.donor_id, "donor_id"))

    async def ValidateDin(
        self, request: pb.ValidateDinRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateDinReply:
        scanned = parse_din(request.din)
        return pb.ValidateDinReply(
            din=scanned.din, check_character=scanned.check_character, type3_flag=scanned.flag
        )


# Who may call which RPC (README, "Roles"): donors' data is for the bank's staff only.
ACCESS: AccessTable = {
    "RegisterDonor": roles(OPERATOR),
    "GiveConsent": roles(OPERATOR),
    "WithdrawConsent": roles(OPERATOR),
    "RecordScreeningResult": roles(OPERATOR),
    "RecordQuestionnaire": roles(OPERATOR),
    "DetermineEligibility": roles(OPERATOR),
    "DeferDonor": roles(OPERATOR),
    "RecordTyping": roles(OPERATOR),
    "RecordCollection": roles(OPERATOR),
    "GetDonor": STAFF,
    "ValidateDin": STAFF,
}


def donor_intake_binding(servicer: DonorIntakeServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, servicer, pb_grpc.add_DonorIntakeServiceServicer_to_server, ACCESS
    )
