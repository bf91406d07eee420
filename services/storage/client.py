"""Calls to a unit's owning site's StorageService (the owner decides): reserve, release, pick,
recall. Used by matching and delivery with their own client's access token."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import grpc
from cellbank.storage.v1 import storage_service_pb2 as spb
from cellbank.storage.v1 import storage_service_pb2_grpc as spb_grpc

from shared.errors import Unauthenticated
from shared.oidc import ClientCredentials

log = logging.getLogger(__name__)

# The owner refused or the unit moved on: try the next candidate.
REFUSALS = {
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
}


@dataclass(frozen=True, slots=True)
class Reserved:
    ok: bool
    version: int = 0
    why: str = ""  # the owner's refusal, or why the site could not be reached


class StorageGateway:
    """One channel per site's storage service; calls carry this service's bearer token."""

    def __init__(
        self,
        endpoints: Mapping[str, str],
        tokens: ClientCredentials,
        *,
        timeout: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.endpoints = dict(endpoints)
        self.tokens = tokens  # this service's own client (client-credentials grant)
        self.timeout = timeout
        self.credentials = credentials
        self._stubs: dict[str, spb_grpc.StorageServiceStub] = {}
        self._channels: list[grpc.aio.Channel] = []

    def _stub(self, site_id: str) -> spb_grpc.StorageServiceStub | None:
        if site_id not in self._stubs:
            target = self.endpoints.get(site_id)
            if target is None:
                return None
            channel = (
                grpc.aio.secure_channel(target, self.credentials)
                if self.credentials is not None
                else grpc.aio.insecure_channel(target)
            )
            self._channels.append(channel)
            self._stubs[site_id] = spb_grpc.StorageServiceStub(channel)
        return self._stubs[site_id]

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            return await self.tokens.ametadata()
        except Unauthenticated as exc:  # callers treat it like an unreachable site
            raise LookupError(f"no access token for site-to-site calls: {exc}") from None

    async def reserve(
        self,
        site_id: str,
        unit_id: str,
        order_id: str,
        hold_until: datetime,
        expected_version: int | None,
        reason: str,
    ) -> Reserved:
        stub = self._stub(site_id)
        if stub is None:
            return Reserved(False, why=f"site {site_id} has no storage endpoint configured")
        request = spb.ReserveUnitRequest(unit_id=unit_id, order_id=order_id, reason=reason)
        request.hold_until.FromDatetime(hold_until)
        if expected_version is not None:
            request.expected_version = expected_version
        try:
            reply = await stub.ReserveUnit(
                request, metadata=await self.tokens.ametadata(), timeout=self.timeout
            )
        except Unauthenticated as exc:  # no token from the identity provider: try again later
            return Reserved(False, why=f"UNAVAILABLE: {exc}")
        except grpc.aio.AioRpcError as err:
            if err.code() not in REFUSALS:
                log.warning(
                    "reservation call failed",
                    extra={"site": site_id, "unit_id": unit_id, "code": err.code().name,
                           "details": err.details()},
                )  # fmt: skip
            return Reserved(False, why=f"{err.code().name}: {err.details()}")
        return Reserved(True, version=reply.version)

    async def release(self, site_id: str, unit_id: str, order_id: str, reason: str) -> bool:
        """True once the owner no longer holds the unit for the order."""
        stub = self._stub(site_id)
        if stub is None:
            return False
        request = spb.ReleaseReservationRequest(unit_id=unit_id, order_id=order_id, reason=reason)
        try:
            await stub.ReleaseReservation(
                request, metadata=await self.tokens.ametadata(), timeout=self.timeout
            )
        except Unauthenticated as exc:
            log.warning("release call failed", extra={"site": site_id, "error": str(exc)})
            return False
        except grpc.aio.AioRpcError as err:
            if err.code() is grpc.StatusCode.FAILED_PRECONDITION:
                return True  # not (or no longer) reserved for this order
            log.warning(
                "release call failed",
                extra={"site": site_id, "unit_id": unit_id, "code": err.code().name},
            )
            return False
        return True

    async def pick(self, site_id: str, unit_id: str, order_id: str, reason: str) -> int:
        """Take the unit out of its position for the order's shipment; its version after."""
        stub = self._stub(site_id)
        if stub is None:
            raise LookupError(f"site {site_id} has no storage endpoint configured")
        request = spb.PickUnitRequest(unit_id=unit_id, order_id=order_id, reason=reason)
        reply = await stub.PickUnit(request, metadata=await self._metadata(), timeout=self.timeout)
        return int(reply.version)

    async def recall(self, site_id: str, unit_id: str, recall_id: str, reason: str) -> str:
        """Hold the unit back for the recall; its status after (RECALLED, or PICKED/… if it
        already left stock). Raises grpc.aio.AioRpcError when the site cannot be reached."""
        stub = self._stub(site_id)
        if stub is None:
            raise LookupError(f"site {site_id} has no storage endpoint configured")
        request = spb.RecallUnitRequest(unit_id=unit_id, recall_id=recall_id, reason=reason)
        reply = await stub.RecallUnit(
            request, metadata=await self._metadata(), timeout=self.timeout
        )
        return str(reply.status)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
