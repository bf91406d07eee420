"""Every projection that opts into the batched fast path (rows_keyed_by_aggregate) leaves the
same rows applied in waves of executemany as applied one event at a time, and every read model's
bulk fold (a replay's) the same rows as its apply — on the real PostgreSQL, with the real domain
events of a site's log."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from deploy.infra import Endpoints
from deploy.replay import specs
from shared.batched_apply import apply_in_waves
from shared.bulk_replay import BulkProjection, load_tables, write_tables
from shared.db import (
    SHARED_MIGRATIONS,
    create_pool,
    drop_database,
    ensure_database,
    migrate,
    migration_files,
    with_database,
)
from shared.digest import rows_digest
from shared.events import StoredEvent
from shared.replay import database_digests
from shared.service_host import ServiceSpec
from tests.site_log import donor_life, new_stores, order_life

pytestmark = pytest.mark.infra


def interleaved_log(donors: int) -> list[tuple[str, StoredEvent]]:
    """Donors' lives woven together round-robin (as concurrent work makes a log): every
    aggregate's events stay in order, neighbours belong to different aggregates."""
    stores = new_stores()
    lives = [[*donor_life(n, stores), *order_life(n, stores)] for n in range(donors)]
    woven = itertools.zip_longest(*lives)
    return [item for row in woven for item in row if item is not None]


async def migrated(server: str, spec: ServiceSpec) -> tuple[str, asyncpg.Pool]:
    name = f"cellbank_t_batch_{spec.name}_{uuid.uuid4().hex[:8]}"
    await ensure_database(server, name)
    pool = await create_pool(with_database(server, name), max_size=2)
    await migrate(pool, migration_files(SHARED_MIGRATIONS, spec.migrations))
    return name, pool


@pytest.fixture
async def pools(endpoints: Endpoints) -> AsyncIterator[list[tuple[str, asyncpg.Pool]]]:
    made: list[tuple[str, asyncpg.Pool]] = []
    try:
        yield made
    finally:
        for name, pool in made:
            await pool.close()
            await drop_database(endpoints.database_url, name)


@pytest.mark.parametrize(
    "service", ["donor_intake", "manufacturing", "storage", "matching", "delivery"]
)
async def test_waves_leave_the_same_rows_as_one_event_at_a_time(
    endpoints: Endpoints, pools: list[tuple[str, asyncpg.Pool]], service: str
) -> None:
    spec = specs()[service]
    log = interleaved_log(12)
    (one_db, one), (many_db, many) = [await migrated(endpoints.database_url, spec) for _ in "ab"]
    pools.extend([(one_db, one), (many_db, many)])
    batched = [p for p in spec.read_models() if getattr(p, "rows_keyed_by_aggregate", False)]
    assert batched, f"{service} has no batched projection"
    for projection in batched:
        events = [e for topic, e in log if topic in projection.topics]
        assert events
        async with one.acquire() as conn, conn.transaction():
            for e in events:
                await projection.apply(conn, e)
        sizes = itertools.cycle([1, 7, 64, 500])
        rest = events
        while rest:
            n = next(sizes)
            chunk, rest = rest[:n], rest[n:]
            async with many.acquire() as conn, conn.transaction():
                await apply_in_waves(conn, projection.apply, chunk)
    one_rows = await database_digests(endpoints.database_url, one_db, with_events=False)
    many_rows = await database_digests(endpoints.database_url, many_db, with_events=False)
    assert one_rows == many_rows
    empty = rows_digest([])
    filled = {table for table, digest in one_rows.items() if digest != empty}
    assert filled, "the log wrote no rows at all"
    if service == "delivery":  # lookback: every kind of aggregate of the log went through waves
        assert {"lb_donors", "lb_collections", "lb_batches", "lb_units", "lb_orders",
                "lb_notifications"} <= filled  # fmt: skip


@pytest.mark.parametrize(
    "service", ["donor_intake", "manufacturing", "storage", "matching", "delivery"]
)
async def test_bulk_fold_leaves_the_same_rows_as_live_apply(
    endpoints: Endpoints, pools: list[tuple[str, asyncpg.Pool]], service: str
) -> None:
    """A replay's bulk path (shared.bulk_replay): each read model's fold, written in batches of
    every size (rows new in a batch COPYed, rows of earlier batches merged), leaves the rows
    its live apply leaves."""
    spec = specs()[service]
    log = interleaved_log(12)
    (live_db, live), (bulk_db, bulk) = [await migrated(endpoints.database_url, spec) for _ in "ab"]
    pools.extend([(live_db, live), (bulk_db, bulk)])
    folded = [p for p in spec.read_models() if isinstance(p, BulkProjection)]
    assert len(folded) == len(spec.read_models()), f"a read model of {service} has no fold"
    for projection in folded:
        events = [e for topic, e in log if topic in projection.topics]
        async with live.acquire() as conn, conn.transaction():
            for e in events:
                await projection.apply(conn, e)
        async with bulk.acquire() as conn:
            tables = await load_tables(conn, projection.bulk_tables)
        sizes = itertools.cycle([1, 7, 64, 500])
        rest = events
        while rest:
            n = next(sizes)
            chunk, rest = rest[:n], rest[n:]
            for e in chunk:
                projection.fold(tables, e)
            async with bulk.acquire() as conn, conn.transaction():
                await write_tables(conn, [t.take() for t in tables.values()])
    live_rows = await database_digests(endpoints.database_url, live_db, with_events=False)
    bulk_rows = await database_digests(endpoints.database_url, bulk_db, with_events=False)
    assert {t for t in live_rows if live_rows[t] != bulk_rows.get(t)} == set()
    assert {t for t, d in live_rows.items() if d != rows_digest([])}, "the log wrote no rows"
