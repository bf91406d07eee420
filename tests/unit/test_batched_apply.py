"""The batched fast path of projections (shared.batched_apply), without a database."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.batched_apply import apply_in_waves, waves
from shared.events import StoredEvent
from tests.site_log import site_log


class FakeConnection:
    """Keeps every call in order; answers reads with None."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[tuple[Any, ...]]]] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.calls.append(("execute", sql, [args]))
        return ""

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.calls.append(("executemany", sql, list(rows)))

    async def fetchval(self, sql: str, *args: Any) -> None:
        self.calls.append(("fetchval", sql, [args]))


def test_a_wave_holds_each_aggregates_kth_statement_grouped_by_sql() -> None:
    plan = waves(
        [
            [("A", (1,)), ("B", (1,)), ("A", (2,))],  # aggregate 1
            [("B", (10,)), ("A", (10,))],  # aggregate 2
            [("A", (20,))],  # aggregate 3
        ]
    )
    assert plan == [
        {"A": [(1,), (20,)], "B": [(10,)]},
        {"B": [(1,)], "A": [(10,)]},
        {"A": [(2,)]},
    ]


async def test_statements_of_one_aggregate_keep_their_order_and_batch_across_aggregates() -> None:
    events = [e for _, e in site_log(3)]
    interleaved = sorted(events, key=lambda e: (e.aggregate_version, e.aggregate_id))

    async def apply(conn: Any, event: StoredEvent) -> None:
        await conn.execute(f"UPDATE t SET v = $2 -- {event.event_type}", event.aggregate_id, 1)
        if event.aggregate_version == 1:
            await conn.executemany("INSERT INTO u VALUES ($1)", [(event.aggregate_id,)])

    conn = FakeConnection()
    wrote = await apply_in_waves(conn, apply, interleaved)
    assert wrote == [e.event_id for e in interleaved]
    per_aggregate: dict[str, list[str]] = {}
    for _kind, sql, rows in conn.calls:
        for row in rows:
            per_aggregate.setdefault(row[0], []).append(sql)
    for aggregate in {e.aggregate_id for e in events}:
        expected = []
        for e in (x for x in events if x.aggregate_id == aggregate):
            expected.append(f"UPDATE t SET v = $2 -- {e.event_type}")
            if e.aggregate_version == 1:
                expected.append("INSERT INTO u VALUES ($1)")
        assert per_aggregate[aggregate] == expected
    assert len(conn.calls) < len(events) / 4  # far fewer round trips than statements


async def test_an_apply_that_reads_runs_on_the_connection_after_what_came_before() -> None:
    first, second, third = [e for _, e in site_log(1)][:3]
    reading = replace(second, event_type="reads")

    async def apply(conn: Any, event: StoredEvent) -> None:
        if event.event_type == "reads":
            await conn.fetchval("SELECT 1")
        await conn.execute("W", event.event_id)

    conn = FakeConnection()
    wrote = await apply_in_waves(conn, apply, [first, reading, third])
    assert [(kind, rows[0][0] if rows[0] else None) for kind, _, rows in conn.calls] == [
        ("execute", first.event_id),
        ("fetchval", None),
        ("execute", reading.event_id),
        ("execute", third.event_id),
    ]
    assert wrote == [first.event_id, reading.event_id, third.event_id]


async def test_events_a_projection_ignores_are_not_reported_as_written() -> None:
    events = [e for _, e in site_log(1)][:4]

    async def apply(conn: Any, event: StoredEvent) -> None:
        if event.aggregate_version % 2:
            await conn.execute("W", event.event_id)

    wrote = await apply_in_waves(FakeConnection(), apply, events)
    assert wrote == [e.event_id for e in events if e.aggregate_version % 2]
