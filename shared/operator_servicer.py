"""OperatorService: the store's head, the relay's progress, the audit-chain check, an
aggregate's history (who did what, when and why) and the store's state as of a moment."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime

import grpc
from cellbank.operator.v1 import operator_service_pb2 as pb
from cellbank.operator.v1 import operator_service_pb2_grpc as pb_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from shared.access import (
    OPERATOR,
    STAFF,
    AccessTable,
    roles,
)  # fmt: skip
from shared.aggregate_history import aggregate_history
from shared.caller_streams import CallerStreams
from shared.errors import InvalidArgument, PreconditionFailed, ResourceExhausted
from shared.event_watch import EventFilter, Watched, watch_events
from shared.eventstore import Clock, utc_now
from shared.gc_pause import cyclic_gc_paused
from shared.grpc_requests import caller, moment_of
from shared.grpc_server import ServiceBinding
from shared.postgres_eventstore import PostgresEventStore
from shared.redaction import redact_watched
from shared.state_as_of import Bound, Folded, StatesAsOf, fold_as_of
from shared.trust import TrustList

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OperatorService"].full_name


NetworkStatusSource = Callable[[], Awaitable[pb.NetworkStatus]]
MAX_HASHES_AT = 64  # positions one VerifyAuditChain may ask the hashes of
STATES_PER_MESSAGE = 500  # aggregates per GetStateAsOf message (well under the message limit)
# GetStateAsOf calls folding at once, servicer-wide: each holds one of the service's own
# connections (and the states it folds) for the whole fold.
STATES_AS_OF_AT_ONCE = 2


class OperatorServicer(pb_grpc.OperatorServiceServicer):
    def __init__(
        self,
        store: PostgresEventStore,
        *,
        service: str,
        relay_name: str,
        trust: TrustList,
        bootstrap: str = "",
        network_status: NetworkStatusSource | None = None,
        folds: Sequence[Folded] = (),
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.trust = trust
        self.service = service
        self.relay_name = relay_name
        self.bootstrap = bootstrap
        self.network_status = network_status
        self.folds = tuple(folds)
        self.clock = clock
        self.watches = CallerStreams()
        self.folding = asyncio.Semaphore(STATES_AS_OF_AT_ONCE)

    async def GetStoreStatus(
        self, request: pb.GetStoreStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StoreStatus:
        published = await self.store.pool.fetchval(
            "SELECT position FROM relay_checkpoints WHERE relay_name = $1", self.relay_name
        )
        return pb.StoreStatus(
            site_id=self.store.site_id,
            service=self.service,
            head_position=await self.store.head_position(),
            published_position=published or 0,
            event_count=await self.store.count(),
        )

    async def VerifyAuditChain(
        self, request: pb.VerifyAuditChainRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuditChainReport:
        if len(request.hashes_at) > MAX_HASHES_AT:
            raise InvalidArgument("hashes_at", f"at most {MAX_HASHES_AT} positions")
        report = await self.store.verify_chain(request.from_position)
        head_position, head_hash = await self.store.head()
        hashes = await self.store.hashes_at(list(request.hashes_at))
        broken = report.broken_event
        return pb.AuditChainReport(
            intact=report.intact,
            events_checked=report.events_checked,
            broken_at_position=report.broken_at_position or 0,
            problem=report.problem,
            broken_event_id=broken.event_id if broken else "",
            broken_aggregate_id=broken.aggregate_id if broken else "",
            broken_aggregate_version=broken.aggregate_version if broken else 0,
            broken_event_type=broken.event_type if broken else "",
            site_id=self.store.site_id,
            service=self.service,
            head_position=head_position,
            head_hash=head_hash,
            event_count=await self.store.count(),
            hashes=[pb.PositionHash(position=p, hash=h) for p, h in sorted(hashes.items())],
        )

    async def GetAggregateHistory(
        self, request: pb.GetAggregateHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.AggregateHistory:
        # QA reads histories too: a release or disposition decision is made on the record.
        if not request.aggregate_id:
            raise InvalidArgument("aggregate_id", "must not be empty")
        events = await self.store.load(request.aggregate_id)
        return aggregate_history(
            request.aggregate_id, events, site_id=self.store.site_id, service=self.service,
            roles=caller().roles,  # patients' and donors' data only for whom it is meant
        )  # fmt: skip

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchedEvent]:
        selection = EventFilter(
            request.site_id.strip(), request.topic.strip(), request.event_type.strip(),
            request.aggregate_id.strip(),
        )  # fmt: skip
        selection.topics()  # an unknown topic is refused before streaming starts
        with self.watches.slot(str(caller()), "WatchEvents"):
            events = watch_events(
                self.bootstrap, selection, trust=self.trust, from_beginning=request.from_beginning
            )
            async with contextlib.aclosing(events):  # the consumer stops with the call
                roles = caller().roles
                async for watched in events:
                    yield watched_message(redact_watched(watched, roles))

    async def GetNetworkStatus(
        self, request: pb.GetNetworkStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.NetworkStatus:
        if self.network_status is None:
            raise PreconditionFailed(
                "network status", "ask a site's delivery service (it keeps the network's lookback)"
            )
        return await self.network_status()

    async def GetStateAsOf(
        self, request: pb.GetStateAsOfRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StateAsOf]:
        bound = Bound(
            request.at_position,
            moment_of(request.as_of, "as_of") if request.HasField("as_of") else None,
            request.aggregate_type.strip(), request.aggregate_id.strip(),
        )  # fmt: skip
        if self.folding.locked():
            raise ResourceExhausted(
                f"{STATES_AS_OF_AT_ONCE} GetStateAsOf calls are already folding this store;"
                " retry when one is done"
            )
        async with self.folding:
            found = await fold_as_of(self.store.pool, self.folds, bound, self.clock())
        for chunk in state_messages(found, self.store.site_id, self.service):
            yield chunk


def watched_message(watched: Watched) -> pb.WatchedEvent:
    e = watched.event
    out = pb.WatchedEvent(
        topic=watched.topic, partition=watched.partition, offset=watched.offset,
        site_id=e.site_id, event_type=e.event_type, aggregate_type=e.aggregate_type,
        aggregate_id=e.aggregate_id, aggregate_version=e.aggregate_version, actor=e.actor,
        reason=e.reason, summary=watched.summary, payload_json=watched.payload_json,
        event_id=e.event_id,
    )  # fmt: skip
    out.occurred_at.FromDatetime(e.occurred_at)
    return out


def state_messages(found: StatesAsOf, site_id: str, service: str) -> Iterator[pb.StateAsOf]:
    """The states in messages of STATES_PER_MESSAGE, each with the position reached; one
    message (no states) when none. Lazily: a stream yields to other calls between chunks."""
    for start in range(0, max(len(found.states), 1), STATES_PER_MESSAGE):
        with cyclic_gc_paused():  # a chunk at a time: never held while the stream waits
            message = _state_message(found, start, site_id, service)
        yield message


def _state_message(found: StatesAsOf, start: int, site_id: str, service: str) -> pb.StateAsOf:
    message = pb.StateAsOf(
        site_id=site_id, service=service, position=found.position,
        head_position=found.head_position,
    )  # fmt: skip
    if found.recorded_at is not None:
        message.recorded_at.CopyFrom(_stamp(found.recorded_at))
    message.states.extend(
        pb.AggregateState(
            aggregate_type=state.aggregate_type,
            aggregate_id=state.aggregate_id,
            version=state.version,
            updated_at=_stamp(state.updated_at),
            state_json=_json(state.record),
        )
        for state in found.states[start : start + STATES_PER_MESSAGE]
    )
    return message


_json = json.JSONEncoder(separators=(",", ":")).encode
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stamp(moment: datetime) -> Timestamp:
    """Timestamp.FromDatetime without its generic conversions (one per state streamed)."""
    since = moment - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1_000)


# Who may call which RPC (README, "Roles"): the event streams (patients' and donors' data)
# are for operators; QA reads audits and status.
ACCESS: AccessTable = {
    "GetStoreStatus": STAFF,
    "VerifyAuditChain": STAFF,
    "GetAggregateHistory": STAFF,
    "WatchEvents": roles(OPERATOR),
    "GetNetworkStatus": STAFF,
    # Read like a history (QA decides on the record too): what a store held at a moment.
    "GetStateAsOf": STAFF,
}


def operator_binding(servicer: OperatorServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, servicer, pb_grpc.add_OperatorServiceServicer_to_server, ACCESS
    )
