"""`replay --restore` verifies the site's log before it writes anything: a log on real Kafka
with one altered record (re-signed with the site's valid key, or with a broken signature) is
refused, the record named, and no database is created."""

from __future__ import annotations

import uuid
from dataclasses import replace

import asyncpg
import pytest

from deploy.infra import Endpoints
from deploy.replay import replay_site
from shared import kafka_clients
from shared.chain_key import ChainKey
from shared.events import StoredEvent
from shared.eventstore import InMemoryEventStore
from shared.replay import RestoreRefused
from shared.trust import sign_event
from tests.factories import new_event
from tests.support.plugin import make_topic
from tests.support.trust import fresh_site, session_trust
from tests.support.trust import signer as signer_of


async def publish(bootstrap: str, topic: str, values: list[tuple[str, bytes]]) -> None:
    producer = kafka_clients.producer(bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in values:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def database_exists(server_url: str, name: str) -> bool:
    conn = await asyncpg.connect(server_url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def refused_restore(endpoints: Endpoints, alter: str) -> tuple[str, StoredEvent, str]:
    """A site's donor store of six events on a fresh topic, its fourth record altered; the
    restore's refusal, the altered event, and the target database's name."""
    site, key = fresh_site(), ChainKey.generate()  # the site is on the session's trust list
    signer = signer_of(site)
    store = InMemoryEventStore(site, chain_key=key)
    for i in range(6):
        await store.append(f"donor-{i % 2}", i // 2, [new_event(i)])
    events = await store.read_all()
    values = [sign_event(signer, e) for e in events]
    victim = events[3]
    if alter == "resigned":  # contents changed, signed again with the site's valid key
        values[3] = sign_event(signer, replace(victim, actor="operator:mallory"))
    else:  # contents changed behind the signature
        tampered = bytearray(values[3])
        tampered[values[3].index(b"payload-3")] ^= 0x01
        values[3] = bytes(tampered)
    topic = await make_topic(endpoints.kafka_bootstrap)
    await publish(
        endpoints.kafka_bootstrap,
        topic,
        [(e.aggregate_id, v) for e, v in zip(events, values, strict=True)],
    )
    target = f"cellbank_t_restore_{uuid.uuid4().hex[:8]}"
    with pytest.raises(RestoreRefused) as refused:
        await replay_site(
            site, bootstrap=endpoints.kafka_bootstrap, server_url=endpoints.database_url,
            targets={"donor_intake": target}, restore_events_from_log=True,
            services=["donor_intake"], chain_keys={"donor_intake": key},
            trust_list_file=str(session_trust().trust_list_file), topics={"donor_intake": topic},
        )  # fmt: skip
    return str(refused.value), victim, target


async def test_a_record_altered_and_resigned_is_refused_by_its_hash_and_nothing_written(
    endpoints: Endpoints,
):
    message, victim, target = await refused_restore(endpoints, "resigned")
    assert message.startswith(f"{victim.site_id} donor_intake: refused, nothing was written")
    assert (
        f"position {victim.position}, event {victim.event_id} of aggregate {victim.aggregate_id}"
        f" v{victim.aggregate_version}" in message
    )
    assert "hash does not match the event's contents" in message
    assert not await database_exists(endpoints.database_url, target)


async def test_a_record_with_a_broken_signature_is_refused_naming_it_and_nothing_written(
    endpoints: Endpoints,
):
    message, victim, target = await refused_restore(endpoints, "unsigned contents")
    assert message.startswith(f"{victim.site_id} donor_intake: refused, nothing was written")
    assert (
        f"(event {victim.event_id} of aggregate {victim.aggregate_id} v{victim.aggregate_version},"
        f" site {victim.site_id}, key " in message
    )
    assert message.endswith("does not verify: bad signature")
    assert not await database_exists(endpoints.database_url, target)
