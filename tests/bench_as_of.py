"""A site's whole inventory as of a moment, folded from a storage store of 1,000,000 events
(part of `make bench`; CELLBANK_BENCH_ONLY=as-of runs it alone).

The store is synthesised with tests/site_log.py's Store — storage's own domain events encoded by
its codec, with positions and a keyed chain as the service writes them — and copied into a fresh
database: the storage part of each donor's life in the site log (four units; stored, moved,
reserved, released, reserved again, picked), each unit's life cut short by 0–3 events so the
inventory holds stored, reserved and picked units. The figure is what GetStateAsOf costs the
service for `cellbank inventory --site S` (at the head: every event folded) — fold_as_of with
storage's declared folds, then the servicer's chunked messages — without the network. Baseline:
the same cursor reading the same events, nothing decoded or folded.
"""

from __future__ import annotations

import itertools
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta

import asyncpg

from deploy.infra import Endpoints
from services.storage.adapters.as_of import FOLDS
from shared.db import create_pool, drop_database, ensure_database, migrate, with_database
from shared.events import StoredEvent
from shared.operator_servicer import state_messages
from shared.settings import SNAPSHOT_EVERY
from shared.state_as_of import BATCH, AsOfState, Bound, fold_as_of, take_snapshot
from tests.bench_report import Row
from tests.site_log import SITE, T0, Store, unit_life

EVENTS = 1_000_000
TARGET_S = 10.0  # "a site's whole inventory in seconds at a million events"


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def storage_store(events: int) -> Iterator[StoredEvent]:
    """The storage store of a site: units living the site log's storage lives, cut short."""
    store, expires = Store("storage"), date(2031, 1, 1)
    for n in itertools.count():
        at = T0 + timedelta(minutes=n)
        for k in range(4):
            unit_id = f"U-{SITE}-{n:08d}-{k}"
            life = unit_life(n, k, f"DIN{n:08d}", at, expires)[: 6 - (n + k) % 4]
            for version, event in enumerate(life, start=1):
                if store.position == events:
                    return
                yield store.event("unit", unit_id, version, event, at)


COLUMNS = [f.name for f in fields(StoredEvent)]


async def fill(url: str, events: int) -> None:
    pool = await create_pool(url, max_size=1)
    try:
        await migrate(pool)  # the event store's tables
        log, copied = storage_store(events), 0
        async with pool.acquire() as conn:
            while chunk := list(itertools.islice(log, 50_000)):
                records = [tuple(getattr(e, c) for c in COLUMNS) for e in chunk]
                await conn.copy_records_to_table("events", records=records, columns=COLUMNS)
                copied += len(chunk)
                progress(f"as-of: stored {copied:,}/{events:,} storage events (untimed)")
            await conn.execute("ANALYZE events")
    finally:
        await pool.close()


async def run(endpoints: Endpoints, scale: float) -> list[Row]:
    events = max(50_000, int(EVENTS * scale))
    name = f"cellbank_bench_as_of_{uuid.uuid4().hex[:8]}"
    await ensure_database(endpoints.database_url, name)
    try:
        url = with_database(endpoints.database_url, name)
        await fill(url, events)
        pool = await create_pool(url, max_size=2)
        try:
            progress("as-of: baseline, the same cursor, nothing decoded")
            baseline_s = await bare_read(pool)
            progress("as-of: the site's inventory at the head, every event folded")
            full = await inventory(pool, events)
            # What the storage service's snapshot worker writes as its store grows.
            progress(f"as-of: snapshots every {SNAPSHOT_EVERY:,} events (untimed)")
            snapshot_s, snapshots = time.perf_counter(), 0
            while await take_snapshot(pool, FOLDS, every=SNAPSHOT_EVERY):
                snapshots += 1
            snapshot_s = time.perf_counter() - snapshot_s
            progress(f"as-of: {snapshots} snapshots written in {snapshot_s:.1f} s")
            progress("as-of: the site's inventory at the head, from the newest snapshot")
            fast = await inventory(pool, events)
        finally:
            await pool.close()
    finally:
        await drop_database(endpoints.database_url, name)
    if fast.states != full.states:
        raise AssertionError("the inventory from snapshots differs from folding every event")
    bare = "the same cursor reading the events, no decode or fold"
    return [
        # The CPU seconds beside the wall time: on a shared machine the wall time is the load's.
        Row(f"as-of inventory ({events:,} events, {fast.units:,} units, from the newest of"
            f" {snapshots} snapshots; {fast.cpu:.1f} s CPU in the service's process)", "s",
            fast.seconds, baseline_s, bare, target=TARGET_S, higher_is_better=False),
        Row(f"as-of inventory, every event folded (no snapshot; {full.cpu:.1f} s CPU)", "s",
            full.seconds, baseline_s, bare, higher_is_better=False),
        Row(f"as-of snapshots: {snapshots} written, one every {SNAPSHOT_EVERY:,} events",
            "s", snapshot_s, None, "(the storage service writes them in the background)",
            higher_is_better=False),
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Inventory:
    units: int
    seconds: float
    cpu: float
    states: list[AsOfState]


async def inventory(pool: asyncpg.Pool, events: int) -> Inventory:
    """`cellbank inventory --site S` at the head, as the storage service answers it."""
    started, cpu = time.perf_counter(), time.process_time()
    found = await fold_as_of(pool, FOLDS, Bound(aggregate_type="unit"), datetime.now(UTC))
    chunks = list(state_messages(found, SITE, "storage"))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if found.position != events:
        raise AssertionError(f"folded up to position {found.position}, not {events}")
    units = sum(len(c.states) for c in chunks)
    progress(f"as-of: {units:,} units from {events:,} events in {seconds:.1f} s ({cpu:.1f} s CPU)")
    return Inventory(units, seconds, cpu, found.states)


async def bare_read(pool: asyncpg.Pool) -> float:
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        cursor = await conn.cursor(
            "SELECT aggregate_type, aggregate_id, event_type, payload, recorded_at FROM events"
            " ORDER BY position"
        )
        while await cursor.fetch(BATCH):
            pass
    return time.perf_counter() - started
