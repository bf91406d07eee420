"""Hostile input to every public RPC: hypothesis-generated requests (random and huge strings,
NaN/∞ and huge numbers, wrong enum values, out-of-range timestamps, empty and oversized
fields), bytes that are not the message at all (bad UTF-8, truncated) and 4 MB payloads → only
INVALID_ARGUMENT / FAILED_PRECONDITION / NOT_FOUND / RESOURCE_EXHAUSTED (or OK for a harmless
read), never UNKNOWN or INTERNAL, and a refused call writes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
import pytest_asyncio
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.operator.v1 import operator_service_pb2 as opb
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.demo import auth
from deploy.infra import Endpoints
from shared import kafka_clients
from shared.topics import DEADLETTER, SERVICE_TOPICS
from shared.waits import eventually
from tests.e2e.network import NetworkSite, network
from tests.e2e.test_matching import order, visible
from tests.support.topic_reader import records_so_far

H1, H2, OP = auth("hosp-h1"), auth("hosp-h2"), auth("op-alice")
CLINICIAN = auth("clin-h1")  # may call every HospitalService RPC, signing ones included
SERVICE = hpb.DESCRIPTOR.services_by_name["HospitalService"]
ALLOWED = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,  # e.g. a signer_name that is not the signed-in person
}  # fmt: skip
WRITES = {"PlaceOrder", "CancelOrder", "ConfirmReceipt", "ConfirmInfusion", "ReportAdverseEvent",
          "AcknowledgeNotification"}  # fmt: skip
STRINGS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "A*02:01", "C*07:02", "ORD-XXX-1", "\x00", "é" * 50, "A" * 5000]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=3000),
)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1e308, -1e308, 5e6, 3e7, 70.0]),
)


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Random field values for any message (depth-limited), as keyword arguments."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in descriptor.fields:
        value = _field(f, depth)
        if value is None:
            continue
        if f.is_repeated:
            value = st.lists(value, max_size=12)
        fields[f.name] = value
    return st.fixed_dictionaries({}, optional=fields)


def _field(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return STRINGS
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return FLOATS
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        return st.integers(-(2**31), 2**31 - 1)
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        return st.integers(-(2**63), 2**63 - 1)
    if t == FieldDescriptor.TYPE_MESSAGE:
        kind = f.message_type
        assert kind is not None
        if kind.full_name == "google.protobuf.Timestamp":
            return st.fixed_dictionaries(
                {"seconds": st.integers(-(2**40), 2**40), "nanos": st.integers(0, 999_999_999)}
            )
        if kind.full_name == "google.protobuf.Duration":
            return st.fixed_dictionaries({"seconds": st.integers(-(2**40), 2**40)})
        return messages(kind, depth + 1) if depth < 2 else None
    return None


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    _fill(message, values)
    return message


def _fill(message: Message, values: dict[str, Any]) -> None:
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        target: Any = getattr(message, name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for item in value:
                    _fill(target.add(), item)
            else:
                _fill(target, value)
                target.SetInParent()
        elif field.is_repeated:
            target.extend(value)
        else:
            setattr(message, name, value)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site(endpoints: Endpoints):
    async with network(endpoints, sites=1) as running:
        yield running[0]


async def events_written(site: NetworkSite) -> int:
    status = await site.matching_ops.GetStoreStatus(opb.GetStoreStatusRequest(), metadata=OP)
    return int(status.event_count)


async def invoke(site: NetworkSite, method: str, request: Message) -> grpc.StatusCode:
    stub_method = getattr(site.hospital, method)
    try:
        reply = stub_method(request, metadata=CLINICIAN, timeout=30)
        if SERVICE.methods_by_name[method].server_streaming:
            await reply.read()  # the first answer (or the error) is what the input decided
            reply.cancel()
        else:
            await reply
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
@settings(
    max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(data=st.data())
async def test_every_rpc_answers_hostile_requests_with_a_clear_status_and_writes_nothing(
    site, method, data
):
    spec = SERVICE.methods_by_name[method]
    cls = getattr(hpb, spec.input_type.name)
    request = build(cls, data.draw(messages(spec.input_type)))
    before = await events_written(site)
    code = await invoke(site, method, request)
    assert code in ALLOWED, f"{method} answered {code.name} to {request!r:.500}"
    if code is not grpc.StatusCode.OK or method not in WRITES:
        assert await events_written(site) == before, (
            f"{method} wrote although it answered {code.name}"
        )


BAD_BYTES = [
    b"\x0a\x03\xff\xfe\xfd",  # field 1 (a string) holding invalid UTF-8
    b"\x0a\x10abc",  # truncated: says 16 bytes, has 3
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # not protobuf at all
]


def _string_field_1(method: str) -> bool:
    field = SERVICE.methods_by_name[method].input_type.fields_by_number.get(1)
    return field is not None and field.type == FieldDescriptor.TYPE_STRING


CASES = [
    pytest.param(m.name, payload, id=f"{kind}-{m.name}")
    for m in SERVICE.methods
    for kind, payload in zip(("bad-utf8", "truncated", "garbage"), BAD_BYTES, strict=True)
    # Bad UTF-8 is only bad in a string field; elsewhere field 1 is an unknown field (ignored).
    if kind != "bad-utf8" or _string_field_1(m.name)
]


@pytest.mark.parametrize(("method", "payload"), CASES)
async def test_bytes_that_are_not_the_message_are_invalid_argument(site, method, payload):
    spec = SERVICE.methods_by_name[method]
    path = f"/{SERVICE.full_name}/{method}"
    before = await events_written(site)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{site.matching.port}") as channel:
        if spec.server_streaming:
            stream = channel.unary_stream(path)(payload, metadata=CLINICIAN, timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stream.read()
        else:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.unary_unary(path)(payload, metadata=CLINICIAN, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert await events_written(site) == before


async def test_a_4mb_request_is_resource_exhausted(site):
    huge = hpb.PlaceOrderRequest(request_id="x" * (4 * 1024 * 1024 + 10))
    assert await invoke(site, "PlaceOrder", huge) == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_garbage_and_truncated_records_on_every_topic_are_dead_lettered_and_consumers_go_on(
    site, endpoints: Endpoints
):
    """Poison on the log (not an envelope, a truncated one) goes to cellbank.deadletter.v1 with
    the error; every consumer keeps going (new stock still reaches the network inventory)."""
    keys = {topic: f"poison-{uuid.uuid4().hex[:8]}" for topic in SERVICE_TOPICS.values()}
    producer = kafka_clients.producer(endpoints.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key in keys.items():
            await producer.send_and_wait(topic, b"\xff\x00 not an envelope", key=key.encode())
            await producer.send_and_wait(topic, b"\x0a\x50truncated", key=key.encode())
    finally:
        await producer.stop()
    viable = 7.9e8
    (unit_id,) = await site.stock(1, viable)
    found = await visible(site, viable, 1)  # storage and matching consumers went on
    assert found.candidates[0].unit_id == unit_id

    async def dead_letters() -> set[tuple[str, str]]:
        records = await records_so_far(endpoints.kafka_bootstrap, DEADLETTER)
        return {
            (dict(r.headers)["original_topic"].decode(), r.key.decode())
            for r in records
            if r.key and r.key.decode() in keys.values()
        }

    consumed = {topic for spec in TOPIC_CONSUMERS for topic in spec}
    expected = {(t, keys[t]) for t in keys if t in consumed}
    seen = await eventually(
        dead_letters, until=lambda s: expected <= s, what="poison dead-lettered", timeout=60
    )
    assert expected <= seen
    for host in (*site.bank.hosts, site.matching, site.delivery_host):
        assert host.failed() is None


# The topics some projection of a site consumes (every event topic is read by one).
TOPIC_CONSUMERS = [tuple(SERVICE_TOPICS.values())]


async def test_a_600kb_cancel_reason_is_invalid_argument_naming_the_field_and_writes_nothing(site):
    """One hospital's huge free text cannot make an envelope Kafka refuses (issue 14)."""
    viable = 7.3e8
    await site.stock(1, viable)
    await visible(site, viable, 1)
    placed = await site.hospital.PlaceOrder(order(viable), metadata=H1)
    assert placed.status == hpb.ORDER_STATUS_ALLOCATED, placed.status_reason
    before = await events_written(site)
    huge = hpb.CancelOrderRequest(order_id=placed.order_id, reason="x" * 600_000)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await site.hospital.CancelOrder(huge, metadata=H1, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "reason: at most 2000 characters (got 600000)"
    assert await events_written(site) == before
    still = await site.hospital.GetOrder(hpb.GetOrderRequest(order_id=placed.order_id), metadata=H1)
    assert still.status == hpb.ORDER_STATUS_ALLOCATED and still.version == placed.version


async def test_a_hospital_holds_at_most_four_watches_at_once(site):
    # H2: the hypothesis tests above watch as H1 (their streams close asynchronously).
    viable = 7.4e8
    await site.stock(1, viable)
    await visible(site, viable, 1)
    placed = await site.hospital.PlaceOrder(order(viable), metadata=H2)
    watch = hpb.WatchOrderRequest(order_id=placed.order_id)
    streams = [site.hospital.WatchOrder(watch, metadata=H2) for _ in range(4)]
    try:
        for stream in streams:
            assert (await stream.read()).order_id == placed.order_id
        fifth = site.hospital.WatchOrder(watch, metadata=H2)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fifth.read()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 4 per caller" in (err.value.details() or "")
        streams.pop().cancel()  # one closes: its slot is free again
        again = await eventually(
            lambda: _first_update(site.hospital.WatchOrder(watch, metadata=H2)),
            until=lambda update: update is not None,
            what="a watch after one closed",
        )
        assert again is not None and again.order_id == placed.order_id
    finally:
        for stream in streams:
            stream.cancel()


async def _first_update(stream: Any) -> hpb.Order | None:
    try:
        update: hpb.Order = await stream.read()
    except grpc.aio.AioRpcError:
        return None
    finally:
        stream.cancel()
    return update
