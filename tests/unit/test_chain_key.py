"""The keyed audit chain: HMAC with the store's secret key, where the key comes from, and the
clear refusal without it."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import replace

import pytest

from deploy.chain_keys import ChainKeys
from services.storage.entrypoints.main import SPEC as STORAGE_SPEC
from shared.chain_key import CHAIN_KEY_ENV, ChainKey, MissingChainKey, chain_key_from_env
from shared.errors import InvalidArgument
from shared.eventstore import InMemoryEventStore
from shared.hashchain import GENESIS, event_hash, verify_chain
from shared.postgres_eventstore import PostgresEventStore
from shared.service_host import ServiceHost
from shared.settings import Settings
from tests.factories import new_event
from tests.unit.test_platform_units import ENV


async def three_events(key: ChainKey):
    store = InMemoryEventStore("LON", chain_key=key)
    await store.append("agg-1", 0, [new_event(1), new_event(2), new_event(3)])
    return await store.read_all()


async def test_a_row_rewritten_and_rehashed_without_the_key_breaks_the_chain_there():
    """The attacker can write the database, so rewrites the reason and re-hashes the rest of
    the chain the way an unkeyed chain would let them — with any key but the store's."""
    key = ChainKey.generate()
    events = await three_events(key)
    forged = [events[0], replace(events[1], reason="released without review")]
    for guess in (ChainKey.generate(), ChainKey(b"\x00" * 32)):
        rehashed, prev = [], events[0].hash
        for event in [*forged[1:], events[2]]:
            event = replace(event, prev_hash=prev)
            event = replace(event, hash=event_hash(guess, prev, event))
            rehashed.append(event)
            prev = event.hash
        report = verify_chain([events[0], *rehashed], key)
        assert not report.intact and report.broken_at_position == 2
        assert report.problem == "hash does not match the event's contents"
    assert verify_chain(events, key).intact


async def test_the_hash_is_an_hmac_not_a_plain_digest_of_the_fields():
    key = ChainKey.generate()
    (first, *_) = await three_events(key)
    assert first.hash != hashlib.sha256(GENESIS).digest()
    assert first.hash == event_hash(key, GENESIS, first)
    assert first.hash != event_hash(ChainKey.generate(), GENESIS, first)
    assert len(first.hash) == 32


def test_a_short_or_malformed_key_is_refused_naming_the_variable():
    with pytest.raises(InvalidArgument, match=CHAIN_KEY_ENV):
        ChainKey(b"short")
    with pytest.raises(InvalidArgument, match="hex"):
        ChainKey.from_hex("not hex at all")
    with pytest.raises(InvalidArgument, match="at least 32 bytes"):
        ChainKey.from_hex("ab" * 16)
    key = ChainKey.generate()
    assert key.hex() not in repr(key)


def test_the_key_comes_from_the_file_the_variable_names(tmp_path):
    key = ChainKey.generate()
    path = tmp_path / "lon.storage.key"
    path.write_text(key.hex() + "\n")
    assert chain_key_from_env({CHAIN_KEY_ENV: str(path)}) == key
    assert chain_key_from_env({}) is None
    with pytest.raises(InvalidArgument, match=f"{CHAIN_KEY_ENV}: cannot be read"):
        chain_key_from_env({CHAIN_KEY_ENV: str(tmp_path / "missing")})
    settings = Settings.from_env({**ENV, CHAIN_KEY_ENV: str(path)}, service="storage")
    assert settings.chain_key == key and key.hex() not in repr(settings)


def test_settings_read_the_anchor_interval():
    assert Settings.from_env(ENV).anchor_interval_seconds == 60.0
    s = Settings.from_env({**ENV, "CELLBANK_ANCHOR_INTERVAL_SECONDS": "0.5"})
    assert s.anchor_interval_seconds == 0.5
    with pytest.raises(InvalidArgument, match="CELLBANK_ANCHOR_INTERVAL_SECONDS"):
        Settings.from_env({**ENV, "CELLBANK_ANCHOR_INTERVAL_SECONDS": "soon"})


def test_local_chain_keys_are_made_once_per_site_service_and_owner_only(tmp_path):
    keys = ChainKeys(tmp_path / "chain-keys")
    lon = keys.key("LON", "storage")
    assert keys.key("LON", "storage") == lon  # kept: a restarted service chains on
    assert keys.key("MAN", "storage") != lon and keys.key("LON", "matching") != lon
    path = keys.file("LON", "storage")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keys.env("LON", "storage") == {CHAIN_KEY_ENV: str(path)}


async def test_a_store_without_its_key_refuses_to_append_or_verify():
    store = PostgresEventStore(None, "LON")  # never reaches a pool
    with pytest.raises(MissingChainKey, match=CHAIN_KEY_ENV):
        await store.append("agg-1", 0, [new_event(1)])
    with pytest.raises(MissingChainKey, match="keyed"):
        await store.verify_chain()


async def test_a_service_host_without_a_chain_key_does_not_start():
    settings = Settings.from_env(ENV, service="storage")
    with pytest.raises(MissingChainKey, match=CHAIN_KEY_ENV):
        await ServiceHost(STORAGE_SPEC, settings).start()
