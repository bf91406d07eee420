"""The gRPC adapter of storage's published StorageService, for other services' site-to-site
ports (matching reserves and releases, delivery picks and recalls; the unit's owning site
decides). It lives with the generated stubs it wraps: a consumer depends on the contract, never
on the storage service's code.

One error contract for every call: the owner's refusal raises `SiteRefused`, anything that kept
the question from reaching the owner or its answer from coming back raises `SiteUnavailable`.
No gRPC error leaves this module."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TypeVar

import grpc
from cellbank.storage.v1 import storage_service_pb2 as spb
from cellbank.storage.v1 import storage_service_pb2_grpc as spb_grpc

from shared import tracing
from shared.errors import SiteRefused, SiteUnavailable, Unauthenticated, UnknownAtSite
from shared.oidc import ClientCredentials

log = logging.getLogger(__name__)

# The owner answered and said no: the unit moved on, the version is stale, the rule refused.
REFUSALS = frozenset(
    {grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}
)

Reply = TypeVar("Reply")


class StorageSites:
    """One channel per site's storage service; calls carry this service's bearer token
    (its own client-credentials grant). Close it once the service stops."""

    def __init__(
        self,
        endpoints: Mapping[str, str],
        tokens: ClientCredentials,
        *,
        timeout: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.endpoints = dict(endpoints)
        self.tokens = tokens
        self.timeout = timeout
        self.credentials = credentials
        self._stubs: dict[str, spb_grpc.StorageServiceStub] = {}
        self._channels: list[grpc.aio.Channel] = []

    def _stub(self, site_id: str) -> spb_grpc.StorageServiceStub:
        if site_id not in self._stubs:
            target = self.endpoints.get(site_id)
            if target is None:
                raise SiteUnavailable(site_id, "no storage endpoint configured for the site")
            # Traced calls carry the caller's trace context to the owner (shared.tracing).
            interceptors = tracing.client_interceptors()
            channel = (
                grpc.aio.secure_channel(target, self.credentials, interceptors=interceptors)
                if self.credentials is not None
                else grpc.aio.insecure_channel(target, interceptors=interceptors)
            )
            self._channels.append(channel)
            self._stubs[site_id] = spb_grpc.StorageServiceStub(channel)
        return self._stubs[site_id]

    async def _call(
        self,
        site_id: str,
        what: str,
        unit_id: str,
        call: Callable[
            [spb_grpc.StorageServiceStub, tuple[tuple[str, str], ...]], Awaitable[Reply]
        ],
        *,
        settled: grpc.StatusCode | None = None,
    ) -> Reply | None:
        """The call's reply; None if the owner answered `settled` (already as asked)."""
        stub = self._stub(site_id)
        try:
            metadata = await self.tokens.ametadata()
        except Unauthenticated as exc:  # no token from the identity provider: try again later
            raise SiteUnavailable(
                site_id, f"no access token for site-to-site calls: {exc}"
            ) from None
        try:
            return await call(stub, metadata)
        except grpc.aio.AioRpcError as err:
            if settled is not None and err.code() is settled:
                return None
            why = f"{err.code().name}: {err.details()}"
            if err.code() is grpc.StatusCode.NOT_FOUND:
                raise UnknownAtSite(site_id, why) from None
            if err.code() in REFUSALS:
                raise SiteRefused(site_id, why) from None
            log.warning(
                "site-to-site call failed",
                extra={"site": site_id, "call": what, "unit_id": unit_id, "code": err.code().name,
                       "details": err.details()},
            )  # fmt: skip
            raise SiteUnavailable(site_id, why) from None

    async def reserve(
        self,
        site_id: str,
        unit_id: str,
        order_id: str,
        hold_until: datetime,
        expected_version: int | None,
        reason: str,
    ) -> int:
        """Hold the unit for the order until `hold_until`; the unit's version after."""
        request = spb.ReserveUnitRequest(unit_id=unit_id, order_id=order_id, reason=reason)
        request.hold_until.FromDatetime(hold_until)
        if expected_version is not None:
            request.expected_version = expected_version
        reply = await self._call(
            site_id, "ReserveUnit", unit_id,
            lambda stub, md: stub.ReserveUnit(request, metadata=md, timeout=self.timeout),
        )  # fmt: skip
        assert reply is not None
        return int(reply.version)

    async def release(self, site_id: str, unit_id: str, order_id: str, reason: str) -> None:
        """Returns once the owner no longer holds the unit for the order (also when it never
        did, or no longer does: releasing is idempotent)."""
        request = spb.ReleaseReservationRequest(unit_id=unit_id, order_id=order_id, reason=reason)
        await self._call(
            site_id, "ReleaseReservation", unit_id,
            lambda stub, md: stub.ReleaseReservation(request, metadata=md, timeout=self.timeout),
            # not (or no longer) reserved for this order: what a release wants
            settled=grpc.StatusCode.FAILED_PRECONDITION,
        )  # fmt: skip

    async def pick(self, site_id: str, unit_id: str, order_id: str, reason: str) -> int:
        """Take the unit out of its position for the order's shipment; its version after."""
        request = spb.PickUnitRequest(unit_id=unit_id, order_id=order_id, reason=reason)
        reply = await self._call(
            site_id, "PickUnit", unit_id,
            lambda stub, md: stub.PickUnit(request, metadata=md, timeout=self.timeout),
        )  # fmt: skip
        assert reply is not None
        return int(reply.version)

    async def recall(self, site_id: str, unit_id: str, recall_id: str, reason: str) -> str:
        """Hold the unit back for the recall; its status after (RECALLED, or PICKED/… if it
        already left stock)."""
        request = spb.RecallUnitRequest(unit_id=unit_id, recall_id=recall_id, reason=reason)
        reply = await self._call(
            site_id, "RecallUnit", unit_id,
            lambda stub, md: stub.RecallUnit(request, metadata=md, timeout=self.timeout),
        )  # fmt: skip
        assert reply is not None
        return str(reply.status)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
