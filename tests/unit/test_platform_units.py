"""Pure units of the common library: ids, envelope codec, settings, roles, hash chain."""

from __future__ import annotations

import dataclasses
import pickle
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.auth import Principal, require
from shared.chain_key import ChainKey
from shared.db import TRANSIENT_DB_ERRORS
from shared.envelope_codec import decode, encode, from_envelope, to_envelope
from shared.errors import ConcurrencyConflict, InvalidArgument, PermissionDenied, Unauthenticated
from shared.events import StoredEvent
from shared.eventstore import InMemoryEventStore
from shared.hashchain import GENESIS, verify_chain
from shared.ids import uuid7
from shared.settings import Settings
from tests.factories import new_event
from tests.support.strategies import dataclass_strategy

ENV = {
    "CELLBANK_SITE_ID": "LON",
    "CELLBANK_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "CELLBANK_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
    "CELLBANK_OIDC_ISSUER": "https://id.example/realms/cellbank/",
}


def test_uuid7_has_version_7_and_sorts_by_time():
    a, b = uuid7(1_700_000_000_000), uuid7(1_700_000_000_001)
    assert a.version == 7 and a.variant == uuid.RFC_4122
    assert str(a) < str(b)
    with pytest.raises(ValueError):
        uuid7(-1)


@settings(max_examples=200, deadline=None)
@given(
    event=dataclass_strategy(
        StoredEvent,
        payload=st.binary(max_size=64),
        prev_hash=st.binary(max_size=32),
        hash=st.binary(max_size=32),
        position=st.integers(0, 2**64 - 1),  # the envelope's uint64 and uint32 fields
        aggregate_version=st.integers(0, 2**64 - 1),
        schema_version=st.integers(0, 2**32 - 1),
    )
)
def test_decoding_builds_the_event_the_constructor_builds(event: StoredEvent) -> None:
    # from_envelope (from_proto) sets StoredEvent's slots directly (shared.proto_mapping): it must
    # be indistinguishable from StoredEvent(...) with the same fields, frozen and hashable.
    decoded = from_envelope(to_envelope(event))
    assert decoded == event and hash(decoded) == hash(event)
    assert type(decoded) is StoredEvent
    assert dataclasses.asdict(decoded) == dataclasses.asdict(event)
    assert pickle.loads(pickle.dumps(decoded)) == event
    assert dataclasses.replace(decoded) == StoredEvent(**dataclasses.asdict(event))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.event_id = "changed"  # type: ignore[misc]


async def test_envelope_round_trips_every_field():
    store = InMemoryEventStore("MAN")
    (event,) = (await store.append("agg-1", 0, [new_event(1, payload=b"\x00\x01")])).events
    assert decode(encode(event)) == event


@pytest.mark.parametrize("data", [b"\xff\xfe garbage", b""])
def test_garbage_is_not_an_envelope(data):
    with pytest.raises(ValueError):
        decode(data)


def test_settings_read_from_environment(tmp_path):
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret\n")  # a mounted Kubernetes Secret ends with a newline
    s = Settings.from_env(
        {**ENV, "CELLBANK_GRPC_PORT": "50051", "CELLBANK_OIDC_CLIENT_ID": "lon-storage",
         "CELLBANK_OIDC_CLIENT_SECRET_FILE": str(secret)},
        service="storage",
    )  # fmt: skip
    assert (s.site_id, s.service, s.grpc_port) == ("LON", "storage", 50051)
    assert (s.oidc_issuer, s.oidc_audience) == ("https://id.example/realms/cellbank", "cellbank")
    assert (s.oidc_client_id, s.oidc_client_secret) == ("lon-storage", "s3cret")
    assert s.token_url == "https://id.example/realms/cellbank/protocol/openid-connect/token"
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"CELLBANK_SITE_ID": "london"}, "CELLBANK_SITE_ID"),
        ({"CELLBANK_KAFKA_BOOTSTRAP": ""}, "CELLBANK_KAFKA_BOOTSTRAP"),
        ({"CELLBANK_DATABASE_URL": " "}, "CELLBANK_DATABASE_URL"),
        ({"CELLBANK_GRPC_PORT": "70000"}, "CELLBANK_GRPC_PORT"),
        ({"CELLBANK_OIDC_ISSUER": ""}, "CELLBANK_OIDC_ISSUER"),
        ({"CELLBANK_OIDC_CLIENT_SECRET_FILE": "/nonexistent"}, "CELLBANK_OIDC_CLIENT_SECRET_FILE"),
        ({"CELLBANK_SIGNING_WINDOW_SECONDS": "soon"}, "CELLBANK_SIGNING_WINDOW_SECONDS"),
        ({"CELLBANK_TLS_CERT": "/c.pem"}, "CELLBANK_TLS_CERT"),
        ({"CELLBANK_TLS_CLIENT_CA": "/ca.pem"}, "CELLBANK_TLS_CLIENT_CA"),
    ],
)
def test_bad_settings_name_the_variable(override, field):
    with pytest.raises(InvalidArgument) as err:
        Settings.from_env({**ENV, **override})
    assert err.value.field == field


def test_require_checks_the_principal_s_roles():
    alice = Principal("sub-a", "alice", frozenset({"operator", "qa"}))
    assert require(alice, "operator") == alice and require(alice, "courier", "qa") == alice
    with pytest.raises(PermissionDenied):
        require(
            Principal("sub-h", "service-account-hospital-h1", frozenset({"hospital"})), "operator"
        )
    with pytest.raises(Unauthenticated):
        require(None, "operator")


async def test_chain_of_an_empty_store_is_intact():
    report = verify_chain([], ChainKey.generate(), GENESIS)
    assert report.intact and report.events_checked == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3), st.booleans()), max_size=25))
async def test_any_sequence_of_appends_keeps_versions_contiguous_and_chain_intact(commands):
    """Commands: (aggregate, batch size, stale?) — stale ones must conflict and write nothing."""
    store = InMemoryEventStore("EDI", clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    versions = dict.fromkeys(range(4), 0)
    for agg, size, stale in commands:
        expected = versions[agg] + 1 if stale else versions[agg]
        batch = [new_event(i) for i in range(size)]
        if stale:
            with pytest.raises(ConcurrencyConflict):
                await store.append(f"a{agg}", expected, batch)
        else:
            await store.append(f"a{agg}", expected, batch)
            versions[agg] += size
    for agg, version in versions.items():
        assert [e.aggregate_version for e in await store.load(f"a{agg}")] == list(
            range(1, version + 1)
        )
    assert await store.head_position() == sum(versions.values())
    assert (await store.verify_chain()).intact


def test_a_connection_broken_mid_operation_is_a_database_failure_not_poison():
    # asyncpg reports a protocol left mid-operation by a server shutting down as
    # InternalClientError; projections must retry it, never dead-letter the record or die.
    error = asyncpg.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    )
    assert isinstance(error, TRANSIENT_DB_ERRORS)
