"""HlaReferenceService: the release KIR ligands are read from, and an operator's approval of another."""

from __future__ import annotations

import grpc
from cellbank.matching.v1 import hla_reference_service_pb2 as pb
from cellbank.matching.v1 import hla_reference_service_pb2_grpc as pb_grpc

from services.matching.hla_references import HlaReferences, InUse
from shared.access import (
    OPERATOR,
    STAFF,
    AccessTable,
    roles,
)  # fmt: skip
from shared.grpc_requests import Clock, meta
from shared.grpc_server import ServiceBinding

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["HlaReferenceService"].full_name


class HlaReferenceServicer(pb_grpc.HlaReferenceServiceServicer):
    def __init__(self, references: HlaReferences, clock: Clock) -> None:
        self.references = references
        self.clock = clock

    async def GetHlaReference(
        self, request: pb.GetHlaReferenceRequest, context: grpc.aio.ServicerContext
    ) -> pb.HlaReferenceInUse:
        return in_use_message(await self.references.in_use())

    async def ApproveHlaReference(
        self, request: pb.ApproveHlaReferenceRequest, context: grpc.aio.ServicerContext
    ) -> pb.HlaReferenceInUse:
        command_meta = meta(request.reason, self.clock)
        await self.references.approve(request.directory, request.release, command_meta)
        return in_use_message(await self.references.in_use())


def in_use_message(in_use: InUse) -> pb.HlaReferenceInUse:
    reference = in_use.reference
    out = pb.HlaReferenceInUse(
        release=reference.release if reference else "",
        classification_version=in_use.table.version,
        source=in_use.source,
    )
    if reference is not None:
        for file, sha256 in sorted(reference.checksums.items()):
            out.checksums.add(file=file, sha256=sha256)
    if in_use.recorded is not None:
        out.recorded_by, out.reason = in_use.recorded.actor, in_use.recorded.reason
        out.recorded_at.FromDatetime(in_use.recorded.occurred_at)
    return out


# Who may call which RPC (README, "Roles"): operators change the release, staff read it.
ACCESS: AccessTable = {
    "GetHlaReference": STAFF,
    "ApproveHlaReference": roles(OPERATOR),
}


def hla_reference_binding(servicer: HlaReferenceServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, servicer, pb_grpc.add_HlaReferenceServiceServicer_to_server, ACCESS
    )
