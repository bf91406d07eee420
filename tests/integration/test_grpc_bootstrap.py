"""gRPC bootstrap: health, reflection, the guard (authentication, the access table), domain
error → status mapping. Tokens here are opaque stand-ins (a fake authenticator): the JWT
checks themselves are tested in test_jwt_auth.py and, over Keycloak, in e2e/test_access.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from cellbank.operator.v1 import operator_service_pb2 as pb
from cellbank.operator.v1 import operator_service_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shared.auth import HOSPITAL, OPERATOR, Principal
from shared.auth import bearer as bearer_of
from shared.chain_key import ChainKey
from shared.errors import Unauthenticated
from shared.grpc_server import MAX_REFLECTION_STREAMS, RunningServer, start_server
from shared.operator_servicer import SERVICE_NAME, OperatorServicer, operator_binding
from shared.postgres_eventstore import PostgresEventStore
from shared.waits import eventually
from tests.factories import aggregate_id, new_event
from tests.support.trust import trust_list

PRINCIPALS = {
    "op-token": Principal("s-alice", "alice", frozenset({OPERATOR}), "Alice Morgan"),
    "hosp-token": Principal("s-h1", "service-account-hospital-h1", frozenset({HOSPITAL}),
                            client_id="hospital-h1", hospital="H1"),
}  # fmt: skip


class FakeAuthenticator:
    async def authenticate(self, metadata):
        principal = PRINCIPALS.get(bearer_of(metadata))
        if principal is None:
            raise Unauthenticated("the bearer token is not recognised")
        return principal


@pytest.fixture
async def server(pool: asyncpg.Pool) -> AsyncIterator[RunningServer]:
    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())
    await store.append(aggregate_id(), 0, [new_event(1), new_event(2)])
    servicer = OperatorServicer(
        store, service="storage", relay_name="LON.storage.relay", trust=trust_list()
    )
    running = await start_server([operator_binding(servicer)], authenticator=FakeAuthenticator())
    try:
        yield running
    finally:
        await running.stop(grace=1)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_health_reports_serving_without_credentials(channel: grpc.aio.Channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_services(channel: grpc.aio.Channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names = set()
    async for reply in stub.ServerReflectionInfo(iter([request])):
        names |= {s.name for s in reply.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize("metadata", [(), bearer("wrong"), (("authorization", "Basic abc"),)])
async def test_call_without_a_valid_token_is_unauthenticated(channel: grpc.aio.Channel, metadata):
    stub = pb_grpc.OperatorServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetStoreStatus(pb.GetStoreStatusRequest(), metadata=metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_authenticated_operator_reads_the_store_status(channel: grpc.aio.Channel):
    stub = pb_grpc.OperatorServiceStub(channel)
    status = await stub.GetStoreStatus(pb.GetStoreStatusRequest(), metadata=bearer("op-token"))
    assert (status.site_id, status.service, status.event_count) == ("LON", "storage", 2)
    assert status.head_position >= 2 and status.published_position == 0
    report = await stub.VerifyAuditChain(pb.VerifyAuditChainRequest(), metadata=bearer("op-token"))
    assert report.intact and report.events_checked == 2


async def test_wrong_principal_kind_is_permission_denied(channel: grpc.aio.Channel):
    stub = pb_grpc.OperatorServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.VerifyAuditChain(pb.VerifyAuditChainRequest(), metadata=bearer("hosp-token"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "hospital:H1" in (err.value.details() or "")


async def test_aggregate_history_comes_from_the_store_and_unknown_ids_are_not_found(
    channel: grpc.aio.Channel, pool: asyncpg.Pool
):
    agg = aggregate_id()
    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())
    stored = (await store.append(agg, 0, [new_event(1)])).events
    stub = pb_grpc.OperatorServiceStub(channel)
    history = await stub.GetAggregateHistory(
        pb.GetAggregateHistoryRequest(aggregate_id=agg), metadata=bearer("op-token")
    )
    assert (history.aggregate_id, history.site_id, history.service) == (agg, "LON", "storage")
    (entry,) = history.entries
    assert (entry.event_id, entry.position, entry.actor) == (
        stored[0].event_id,
        stored[0].position,
        "operator:alice",
    )
    # A test type: raw bytes, which could hold anything, so redacted (shared/redaction.py)
    assert entry.payload_json == '{"undecodable": "[redacted]"}'
    for request, metadata, code in (
        (pb.GetAggregateHistoryRequest(aggregate_id="nope"), bearer("op-token"), "NOT_FOUND"),
        (pb.GetAggregateHistoryRequest(), bearer("op-token"), "INVALID_ARGUMENT"),
        (
            pb.GetAggregateHistoryRequest(aggregate_id=agg),
            bearer("hosp-token"),
            "PERMISSION_DENIED",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetAggregateHistory(request, metadata=metadata)
        assert err.value.code().name == code, err.value.details()


async def test_graceful_stop_reports_not_serving(server: RunningServer, channel: grpc.aio.Channel):
    await server.health.enter_graceful_shutdown()
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="")
    )
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_health_watch_needs_a_token_but_check_does_not(channel: grpc.aio.Channel):
    """Watch holds a call slot open: strangers may not fill the server's slots with them."""
    stub = health_pb2_grpc.HealthStub(channel)
    stream = stub.Watch(health_pb2.HealthCheckRequest(service=""))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stream.read()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    watched = stub.Watch(health_pb2.HealthCheckRequest(service=""), metadata=bearer("op-token"))
    first = await watched.read()
    watched.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_token_less_reflection_streams_are_capped_and_calls_go_on(
    channel: grpc.aio.Channel,
):
    """Reflection needs no token, so strangers may hold its streams open: at most
    MAX_REFLECTION_STREAMS at once, and authenticated calls are served meanwhile."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    held = []
    for _ in range(MAX_REFLECTION_STREAMS):
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.read()  # open and answered: it now holds a slot
        held.append(call)
    extra = stub.ServerReflectionInfo()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await extra.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await extra.read()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ops = pb_grpc.OperatorServiceStub(channel)
    status = await ops.GetStoreStatus(pb.GetStoreStatusRequest(), metadata=bearer("op-token"))
    assert status.event_count >= 2
    held.pop().cancel()
    await eventually(_reflection_answers(stub), until=bool, what="a slot freed", timeout=10)
    for call in held:
        call.cancel()


def _reflection_answers(stub: reflection_pb2_grpc.ServerReflectionStub):
    async def attempt() -> bool:
        call = stub.ServerReflectionInfo()
        try:
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            return bool(await call.read())
        except grpc.aio.AioRpcError:
            return False
        finally:
            call.cancel()

    return attempt
