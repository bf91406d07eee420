"""State snapshots (shared/state_as_of.py) against a real PostgreSQL: folding from the newest
snapshot a bound allows gives exactly the states of folding every event from the first — at any
position, at any time (recorded times out of position order included), for one aggregate or
all — and a chain written by another version, or missing a snapshot, is never read."""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import asyncpg

from services.storage.adapters.as_of import FOLDS
from shared.events import StoredEvent
from shared.state_as_of import AsOfState, Bound, fold_as_of, take_snapshot
from tests.bench_as_of import storage_store

EVENTS = 2_400
EVERY = 500  # events a snapshot
COLUMNS = [f.name for f in fields(StoredEvent)]


def skewed(events: list[StoredEvent]) -> list[StoredEvent]:
    """Some appenders' clocks ahead: recorded_at out of position order now and then."""
    rng = random.Random(17)
    return [
        replace(e, recorded_at=e.recorded_at + timedelta(minutes=rng.choice((90, 400))))
        if rng.random() < 0.03
        else e
        for e in events
    ]


async def fill(pool: asyncpg.Pool) -> list[StoredEvent]:
    events = skewed(list(storage_store(EVENTS)))
    records = [tuple(getattr(e, c) for c in COLUMNS) for e in events]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("events", records=records, columns=COLUMNS)
    return events


def plain(states: list[AsOfState]) -> list[tuple[object, ...]]:
    return [(s.aggregate_type, s.aggregate_id, s.version, s.updated_at, dict(s.record))
            for s in states]  # fmt: skip


async def every_snapshot(pool: asyncpg.Pool) -> list[int]:
    taken = []
    while position := await take_snapshot(pool, FOLDS, every=EVERY):
        taken.append(position)
    return taken


async def test_folding_from_snapshots_equals_folding_every_event(
    pool: asyncpg.Pool, runtime_pool: asyncpg.Pool
):
    events = await fill(pool)
    now = datetime.now(UTC) + timedelta(days=1)
    rng = random.Random(5)
    times = sorted(e.recorded_at for e in events)
    some_unit = events[EVENTS // 2].aggregate_id
    bounds = [
        Bound(),
        *(Bound(at_position=p) for p in (1, EVERY - 1, EVERY, EVERY + 1, 1234, 2000, EVENTS)),
        *(Bound(as_of=rng.choice(times)) for _ in range(8)),
        Bound(as_of=times[-1]),
        Bound(at_position=1900, aggregate_type="unit", aggregate_id=some_unit),
        Bound(as_of=times[EVENTS // 2], aggregate_type="unit", aggregate_id=some_unit),
    ]
    expected = [plain((await fold_as_of(runtime_pool, FOLDS, b, now)).states) for b in bounds]
    # Written by the services' runtime role (as the host's snapshot worker does).
    assert await every_snapshot(runtime_pool) == [500, 1000, 1500, 2000]
    assert await take_snapshot(runtime_pool, FOLDS, every=EVERY) == 0  # nothing due yet
    rows = await pool.fetchval("SELECT count(*) FROM state_snapshots")
    units = await pool.fetchval(
        "SELECT count(DISTINCT aggregate_id) FROM events WHERE position <= 2000"
    )
    assert units <= rows < 2 * units  # only what changed since the snapshot before
    for bound, states in zip(bounds, expected, strict=True):
        found = await fold_as_of(runtime_pool, FOLDS, bound, now)
        assert plain(found.states) == states, bound


async def test_a_chain_of_another_shape_is_never_read_and_deleted_once_left_behind(
    pool: asyncpg.Pool, runtime_pool: asyncpg.Pool
):
    await fill(pool)
    now = datetime.now(UTC) + timedelta(days=1)
    truth = plain((await fold_as_of(runtime_pool, FOLDS, Bound(), now)).states)
    await every_snapshot(runtime_pool)
    # As if written by another version (other state types, another evolve): garbage to today's.
    await pool.execute("UPDATE state_snapshot_marks SET shape = 'other'")
    await pool.execute("UPDATE state_snapshots SET state = '\\x5b5d'::bytea")  # []
    assert plain((await fold_as_of(runtime_pool, FOLDS, Bound(), now)).states) == truth
    assert await every_snapshot(runtime_pool) == [500, 1000, 1500, 2000]  # today's own chain
    assert plain((await fold_as_of(runtime_pool, FOLDS, Bound(), now)).states) == truth
    others = "SELECT count(*) FROM state_snapshot_marks WHERE shape = 'other'"
    assert await pool.fetchval(others) == 4  # the other version may still be running
    await pool.execute(
        "UPDATE state_snapshot_marks SET taken_at = now() - interval '2 days' WHERE shape = 'other'"
    )
    assert await take_snapshot(runtime_pool, FOLDS, every=EVERY) == 0
    assert await pool.fetchval(others) == 0
    assert await pool.fetchval("SELECT count(*) FROM state_snapshots WHERE shape = 'other'") == 0


async def test_a_chain_missing_a_snapshot_is_not_read_and_is_written_again(
    pool: asyncpg.Pool, runtime_pool: asyncpg.Pool
):
    await fill(pool)
    now = datetime.now(UTC) + timedelta(days=1)
    truth = [
        plain((await fold_as_of(runtime_pool, FOLDS, b, now)).states)
        for b in (Bound(), Bound(at_position=1700))
    ]
    await every_snapshot(runtime_pool)
    await pool.execute("DELETE FROM state_snapshot_marks WHERE position = 1000")  # and its states
    for bound, states in zip((Bound(), Bound(at_position=1700)), truth, strict=True):
        assert plain((await fold_as_of(runtime_pool, FOLDS, bound, now)).states) == states
    assert await every_snapshot(runtime_pool) == [500, 1000, 1500, 2000]
    for bound, states in zip((Bound(), Bound(at_position=1700)), truth, strict=True):
        assert plain((await fold_as_of(runtime_pool, FOLDS, bound, now)).states) == states


async def test_two_writers_at_once_write_each_snapshot_once(
    pool: asyncpg.Pool, runtime_pool: asyncpg.Pool
):
    await fill(pool)
    taken = await asyncio.gather(every_snapshot(runtime_pool), every_snapshot(runtime_pool))
    assert sorted(itertools.chain(*taken)) == [500, 1000, 1500, 2000]
    marks = await pool.fetch("SELECT position FROM state_snapshot_marks ORDER BY 1")
    assert [m["position"] for m in marks] == [500, 1000, 1500, 2000]
