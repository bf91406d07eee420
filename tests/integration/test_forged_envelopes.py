"""Forged envelopes on a topic (published straight to it, as a client the broker let in could):
the projection runner dead-letters each with its reason, counts it, keeps it in
untrusted_records, changes no row and never parks the genuine aggregate; key rotation keeps
old events verifiable and refuses the retired key's later signatures."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import asyncpg
from prometheus_client import REGISTRY

from deploy.infra import Endpoints
from shared.chain_key import ChainKey
from shared.outbox_relay import OutboxRelay
from shared.postgres_eventstore import PostgresEventStore
from shared.projections import ProjectionRunner
from shared.trust import Signer, TrustList, sign_event
from shared.waits import eventually
from tests.factories import aggregate_id, new_event
from tests.forgeries import forgeries, send_raw
from tests.integration.test_projection_runner import (
    caught_up,
    projected_digest,
    read_deadletters,
    running,
    stored_events,
)
from tests.integration.test_relay import read_topic  # verifies every record it reads
from tests.integration.thing_projection import ThingProjection, create_schema, expected_digest
from tests.support.trust import signer, trust_list


def untrusted_metric(consumer: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "cellbank_untrusted_records_total", {"consumer": consumer, "reason": reason}
    )
    return value or 0.0


async def test_forged_envelopes_change_nothing_and_never_park_the_genuine_aggregate(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    await create_schema(pool)
    target, bystander = aggregate_id("target"), aggregate_id("bystander")
    genuine = await stored_events((target, [b"v1", b"v2"]), (bystander, [b"b1"]))
    lon, man = signer("LON"), signer("MAN")
    first, second = [e for e in genuine if e.aggregate_id == target]
    # Each forgery pretends to be the target's next event, under the first one's event id.
    fake = replace(first, aggregate_version=3)
    forged = forgeries(replace(fake, payload=b"forged"), genuine=lon, other_site=man)
    before = {f.reason: untrusted_metric("things", f.reason) for f in forged}
    await send_raw(
        endpoints.kafka_bootstrap, topic,
        [(e.aggregate_id, sign_event(lon, e)) for e in (first, *[g for g in genuine if g.aggregate_id == bystander])]
        + [(f.key, f.value) for f in forged]
        + [(second.aggregate_id, sign_event(lon, second))],
    )  # fmt: skip
    projection = ThingProjection([topic])
    runner = ProjectionRunner(
        pool, projection, trust=trust_list(), bootstrap=endpoints.kafka_bootstrap,
        group_id=f"LON.test.{topic}",
    )  # fmt: skip
    async with running(runner):
        await caught_up(pool, endpoints, projection)
        # The genuine events behind the forgeries were applied: nothing was parked.
        assert runner.parked_aggregates() == frozenset()
        assert await projected_digest(pool) == expected_digest(genuine)
        letters = await read_deadletters(endpoints.kafka_bootstrap, {target: len(forged)})
    assert sorted(x["untrusted_reason"] for x in letters[target]) == sorted(
        f.reason for f in forged
    )
    assert all(x["error"].startswith("untrusted: ") for x in letters[target])
    assert all(x["original_topic"] == topic for x in letters[target])
    rows = await pool.fetch(
        "SELECT projection, claimed_site, key_id, reason, topic, event_id, aggregate_id"
        ' FROM untrusted_records ORDER BY "offset"'
    )
    assert [r["reason"] for r in rows] == [f.reason for f in forged]
    assert {(r["projection"], r["claimed_site"], r["aggregate_id"], r["topic"]) for r in rows} == {
        ("things", "LON", target, topic)
    }
    assert rows[1]["key_id"] == man.key_id  # whose key signed the wrong-site forgery
    assert await pool.fetchval("SELECT count(*) FROM parked_records") == 0
    for f in forged:
        assert untrusted_metric("things", f.reason) == before[f.reason] + 1, f.label


async def test_rotated_keys_old_events_still_verify_and_the_retired_key_is_refused_after(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    await create_schema(pool)
    agg = aggregate_id("rotated")
    old_events = await stored_events((agg, [b"a", b"b"]))
    old = Signer.generate("LON", "LON-old-rot")
    new = Signer.generate("LON", "LON-new-rot")
    rotated_at = max(e.recorded_at for e in old_events) + timedelta(minutes=1)
    start = min(e.recorded_at for e in old_events) - timedelta(hours=1)
    trust = TrustList([old.trusted_key(start)])
    trust = trust.with_key(new.trusted_key(rotated_at)).retire(old.key_id, rotated_at)
    later = replace(
        old_events[-1], event_id=old_events[-1].event_id[:-4] + "ffff", aggregate_version=3,
        recorded_at=rotated_at + timedelta(minutes=5), payload=b"c",
    )  # fmt: skip
    late_forgery = replace(later, event_id=later.event_id[:-4] + "eeee", aggregate_version=4)
    await send_raw(
        endpoints.kafka_bootstrap, topic,
        [(e.aggregate_id, sign_event(old, e)) for e in old_events]  # signed while valid
        + [(agg, sign_event(new, later))]  # the new key, after the rotation
        + [(agg, sign_event(old, late_forgery))],  # the retired key, after its valid_until
    )  # fmt: skip
    projection = ThingProjection([topic])
    runner = ProjectionRunner(
        pool, projection, trust=trust, bootstrap=endpoints.kafka_bootstrap,
        group_id=f"LON.test.{topic}",
    )  # fmt: skip
    async with running(runner):  # a replay from offset 0 with the rotated list
        await caught_up(pool, endpoints, projection)
    assert await projected_digest(pool) == expected_digest([*old_events, later])
    assert [r["reason"] for r in await pool.fetch("SELECT reason FROM untrusted_records")] == [
        "key_not_valid"
    ]


async def test_the_relay_signs_what_it_publishes_with_the_sites_key(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())
    agg = aggregate_id()
    await store.append(agg, 0, [new_event(1), new_event(2)])
    try:
        OutboxRelay(store, signer=signer("MAN"), topic=topic, bootstrap="-", name="x")
    except ValueError as exc:
        assert "cannot sign with MAN's key" in str(exc)
    else:
        raise AssertionError("a relay accepted another site's key")
    relay = OutboxRelay(
        store, signer=signer("LON"), topic=topic, bootstrap=endpoints.kafka_bootstrap,
        name=f"LON.test.{topic}",
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await eventually(relay.stored_position, until=lambda p: p == 2, what="relayed")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    published = await read_topic(endpoints.kafka_bootstrap, topic)
    assert [e.aggregate_version for e in published] == [1, 2]
