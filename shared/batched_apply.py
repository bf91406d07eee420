"""Apply a batch of events with one executemany per statement shape instead of one round trip
per statement — the projection runner's fast path (replay and catch-up spend their time here).

A projection opts in by declaring `rows_keyed_by_aggregate = True`: the statements it issues for
an event write only rows of that event's aggregate, or commute with the statements of every
other aggregate (disjoint columns, idempotent upserts). Then the batch may run in *waves*: wave
k holds the k-th statement of every aggregate in the batch, so each aggregate's statements keep
their order, and within a wave no two statements belong to the same aggregate; a wave runs as
one executemany per SQL text.

The projection's own apply() is the single definition: it runs against a recorder that keeps
its execute/executemany calls instead of sending them. An apply that reads (fetch*, anything
but execute/executemany) cannot be recorded: what was recorded so far is flushed, and that
event is applied on the real connection, so order is kept exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import asyncpg

from shared.events import StoredEvent

Statement = tuple[str, tuple[Any, ...]]
Apply = Callable[[Any, StoredEvent], Awaitable[None]]


class _NeedsConnection(Exception):
    """The projection asked the recorder for something only a real connection can do."""


class _Recorder:
    """Stands in for an asyncpg connection: keeps writes, refuses reads."""

    __slots__ = ("statements",)

    def __init__(self) -> None:
        self.statements: list[Statement] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.statements.append((sql, args))
        return ""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.statements.extend((sql, tuple(row)) for row in rows)

    def __getattr__(self, name: str) -> Any:
        raise _NeedsConnection(name)


def waves(per_aggregate: Iterable[list[Statement]]) -> list[dict[str, list[tuple[Any, ...]]]]:
    """Wave k: the k-th statement of every aggregate, grouped by SQL text (in first-seen order)."""
    result: list[dict[str, list[tuple[Any, ...]]]] = []
    for statements in per_aggregate:
        for k, (sql, args) in enumerate(statements):
            if k == len(result):
                result.append({})
            result[k].setdefault(sql, []).append(args)
    return result


async def _flush(conn: asyncpg.Connection, pending: dict[str, list[Statement]]) -> None:
    for wave in waves(pending.values()):
        for sql, rows in wave.items():
            if len(rows) == 1:
                await conn.execute(sql, *rows[0])
            else:
                await conn.executemany(sql, rows)
    pending.clear()


async def apply_in_waves(
    conn: asyncpg.Connection, apply: Apply, events: Sequence[StoredEvent]
) -> list[str]:
    """Equivalent to `for e in events: await apply(conn, e)` for a rows_keyed_by_aggregate
    projection, in far fewer round trips. Returns the ids of the events that wrote something
    (an event the projection ignores issues no statement)."""
    pending: dict[str, list[Statement]] = defaultdict(list)
    wrote: list[str] = []
    for event in events:
        recorder = _Recorder()
        try:
            await apply(recorder, event)
        except _NeedsConnection:
            await _flush(conn, pending)
            await apply(conn, event)
            wrote.append(event.event_id)
            continue
        if recorder.statements:
            pending[event.aggregate_id].extend(recorder.statements)
            wrote.append(event.event_id)
    await _flush(conn, pending)
    return wrote
