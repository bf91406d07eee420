"""PostgreSQL event store: commit-ordered positions under racing writers, tamper evidence."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shared.chain_key import ChainKey
from shared.errors import ConcurrencyConflict
from shared.eventstore import AggregateAppend
from shared.postgres_eventstore import PostgresEventStore
from tests.factories import aggregate_id, new_event


async def test_racing_writers_never_show_a_tailing_reader_a_gap_it_later_fills(pool: asyncpg.Pool):
    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())
    writers, appends_each = 8, 40
    done = asyncio.Event()
    seen: list[int] = []

    async def writer(w: int) -> None:
        agg = aggregate_id(f"w{w}")
        for n in range(appends_each):
            await store.append(agg, 2 * n, [new_event(n), new_event(n)])

    async def tail() -> None:
        position = 0
        while True:
            finished = done.is_set()  # read before the batch, so the last batch is complete
            batch = await store.read_all(position, limit=50)
            for event in batch:
                # positions only grow: a reader never sees N+1 and later finds N
                assert event.position > position
                seen.append(event.position)
                position = event.position
            if finished and not batch:
                return
            await asyncio.sleep(0)

    reader = asyncio.create_task(tail())
    try:
        await asyncio.gather(*(writer(w) for w in range(writers)))
    finally:
        done.set()
        await asyncio.wait_for(reader, 30)
    committed = [
        r["position"] for r in await pool.fetch("SELECT position FROM events ORDER BY position")
    ]
    assert seen == committed  # missed nothing, in order
    assert len(committed) == writers * appends_each * 2


async def test_concurrent_appends_to_one_aggregate_let_exactly_one_win(pool: asyncpg.Pool):
    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())
    agg = aggregate_id()
    results = await asyncio.gather(
        *(store.append(agg, 0, [new_event(i)]) for i in range(6)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConcurrencyConflict) for r in results if r not in winners)
    assert len(await store.load(agg)) == 1


async def test_two_stores_racing_multi_aggregate_appends_commit_one_whole_and_nothing_else(
    pool: asyncpg.Pool,
):
    """Two processes (two stores, no shared group commit) take the same tank position."""
    key = ChainKey.generate()
    stores = [PostgresEventStore(pool, "LON", chain_key=key) for _ in range(2)]
    tank, units = aggregate_id("tank"), [aggregate_id("unit") for _ in range(2)]
    results = await asyncio.gather(
        *(
            s.append_all(
                [AggregateAppend(tank, 0, [new_event(1)]), AggregateAppend(u, 0, [new_event(2)])]
            )
            for s, u in zip(stores, units, strict=True)
        ),
        return_exceptions=True,
    )
    winners = [u for u, r in zip(units, results, strict=True) if not isinstance(r, BaseException)]
    (loser,) = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and isinstance(loser, ConcurrencyConflict)
    assert loser.aggregate_id == tank
    rows = await pool.fetch("SELECT aggregate_id, position FROM events ORDER BY position")
    assert [r["aggregate_id"] for r in rows] == [tank, winners[0]]
    assert [r["position"] for r in rows] == [rows[0]["position"], rows[0]["position"] + 1]
    assert (await stores[0].verify_chain()).intact


async def test_stored_events_cannot_be_updated_or_deleted(pool: asyncpg.Pool):
    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())
    await store.append(aggregate_id(), 0, [new_event()])
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("UPDATE events SET reason = 'edited'")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("DELETE FROM events")


async def test_altering_a_stored_event_is_detected_by_the_chain(pool: asyncpg.Pool):
    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())
    for _ in range(4):
        await store.append(aggregate_id(), 0, [new_event(1), new_event(2)])
    assert (await store.verify_chain()).intact
    victim = (await store.read_all(0))[4]
    # An attacker with superuser rights gets past the append-only trigger.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        await conn.execute(
            "UPDATE events SET actor = 'operator:mallory' WHERE position = $1", victim.position
        )
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
    report = await store.verify_chain()
    assert not report.intact
    assert report.broken_at_position == victim.position
    assert report.events_checked == 4
    assert "hash" in report.problem


async def test_deleting_an_event_breaks_the_next_link(pool: asyncpg.Pool):
    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())
    await store.append(aggregate_id(), 0, [new_event(i) for i in range(3)])
    events = await store.read_all(0)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        await conn.execute("DELETE FROM events WHERE position = $1", events[1].position)
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
    report = await store.verify_chain()
    assert not report.intact and report.broken_at_position == events[2].position
    assert "prev_hash" in report.problem


async def test_in_memory_store_detects_tampering_too():
    from shared.eventstore import InMemoryEventStore

    store = InMemoryEventStore("LON")
    await store.append(aggregate_id(), 0, [new_event(i) for i in range(3)])
    store.tamper(2, payload=b"forged")
    report = await store.verify_chain()
    assert not report.intact and report.broken_at_position == 2


async def test_append_that_cannot_take_the_lock_in_time_is_store_busy_and_writes_nothing(
    pool: asyncpg.Pool,
):
    from shared.errors import StoreBusy

    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate(), lock_timeout_ms=100)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        with pytest.raises(StoreBusy):
            await store.append(aggregate_id(), 0, [new_event()])
    assert await store.head_position() == 0
