"""An event store's aggregates as of a position or a time, folded by their domain's evolve."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.commands import Aggregate
from shared.errors import InvalidArgument, PreconditionFailed

BATCH = 5_000  # events per fetch: one round trip each, folded while the next one is read
STATEMENT_TIMEOUT_S = 60  # per statement of a fold: a runaway fold gives its connection back


@dataclass(frozen=True, slots=True)
class Folded:
    """One aggregate type an operator may see as of a moment: how its events fold (the
    domain's Aggregate: initial state, evolve, codec) and how a state reads — a JSON-ready
    record with the service's stable keys (never personal data: states are not redacted)."""

    aggregate: Aggregate[Any]
    record: Callable[[str, Any], Mapping[str, object]]  # (aggregate id, state) → record


@dataclass(frozen=True, slots=True)
class AsOfState:
    aggregate_type: str
    aggregate_id: str
    version: int  # events folded into it
    updated_at: datetime  # recorded_at of the newest of them
    record: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class StatesAsOf:
    position: int  # the newest event the bound takes in (0 = none)
    recorded_at: datetime | None  # when it was recorded
    head_position: int
    states: list[AsOfState]  # by aggregate type, then id


@dataclass(frozen=True, slots=True)
class Bound:
    """Where to stop: after the event at `at_position`, or after every event recorded at or
    before `as_of`; neither = the head."""

    at_position: int = 0
    as_of: datetime | None = None
    aggregate_type: str = ""  # "" = every folded type
    aggregate_id: str = ""  # "" = every aggregate

    def checked(self, folds: Sequence[Folded], now: datetime) -> list[Folded]:
        """The folds the bound asks for; InvalidArgument naming the field and rule otherwise."""
        if not folds:
            raise PreconditionFailed(
                "state as of a moment", "this service declares no aggregate to fold"
            )
        if self.at_position and self.as_of is not None:
            raise InvalidArgument("at_position", "give a position or a time (as_of), not both")
        if self.as_of is not None and self.as_of > now:
            raise InvalidArgument(
                "as_of", f"{self.as_of.isoformat()} is in the future (now {now.isoformat()})"
            )
        known = {f.aggregate.aggregate_type: f for f in folds}
        if self.aggregate_type and self.aggregate_type not in known:
            raise InvalidArgument("aggregate_type", f"one of {', '.join(sorted(known))}")
        return [known[self.aggregate_type]] if self.aggregate_type else list(known.values())


_REACHED = {  # the newest event the bound takes in, and when it was recorded
    "head": "SELECT position, recorded_at FROM events ORDER BY position DESC LIMIT 1",
    "position": "SELECT position, recorded_at FROM events WHERE position <= $1"
    " ORDER BY position DESC LIMIT 1",
    # From the end backwards: a recent time stops early.
    "time": "SELECT position, recorded_at FROM events WHERE recorded_at <= $1"
    " ORDER BY position DESC LIMIT 1",
}
_EVENTS = (
    "SELECT aggregate_type, aggregate_id, event_type, payload, recorded_at FROM events"
    " WHERE position <= $1 AND aggregate_type = ANY($2::text[])"
    # recorded_at comes from each appender's clock, taken before the append lock: positions
    # are commit-ordered but the times need not be, so a time bound filters, never stops.
    " AND ($3::timestamptz IS NULL OR recorded_at <= $3){only} ORDER BY position"
)


async def fold_as_of(
    pool: asyncpg.Pool, folds: Sequence[Folded], bound: Bound, now: datetime
) -> StatesAsOf:
    """Fold the store's events up to the bound, in position order, with each aggregate type's
    domain evolve, in one read-only snapshot (nothing is written). Events are read with a
    server-side cursor in batches; each batch is folded off the event loop."""
    chosen = bound.checked(folds, now)
    by_type = {f.aggregate.aggregate_type: f for f in chosen}
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT_S}s'")
        head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
        if bound.at_position > head:
            raise InvalidArgument(
                "at_position", f"{bound.at_position} is beyond the store's head ({head})"
            )
        if bound.at_position:
            reached = await conn.fetchrow(_REACHED["position"], bound.at_position)
        elif bound.as_of is not None:
            reached = await conn.fetchrow(_REACHED["time"], bound.as_of)
        else:
            reached = await conn.fetchrow(_REACHED["head"])
        position = int(reached["position"]) if reached else 0
        folding = Folding(by_type)
        if position:
            args: list[object] = [position, list(by_type), bound.as_of]
            only = ""
            if bound.aggregate_id:
                args.append(bound.aggregate_id)
                only = " AND aggregate_id = $4"
            cursor = await conn.cursor(_EVENTS.format(only=only), *args)
            rows = await cursor.fetch(BATCH)
            while rows:
                following = asyncio.ensure_future(cursor.fetch(BATCH))
                try:
                    await asyncio.to_thread(folding.fold, rows)
                finally:
                    rows = await following
    states = await asyncio.to_thread(folding.states)  # every record, off the event loop too
    return StatesAsOf(position, reached["recorded_at"] if reached else None, int(head), states)


class Folding:
    """Every aggregate's state so far: [state, version, updated_at] by (type, id)."""

    def __init__(self, by_type: Mapping[str, Folded]) -> None:
        self.by_type = by_type
        self.found: dict[tuple[str, str], list[Any]] = {}

    def fold(self, rows: Sequence[asyncpg.Record]) -> None:
        found, by_type = self.found, self.by_type
        for aggregate_type, aggregate_id, event_type, payload, recorded_at in rows:
            aggregate = by_type[aggregate_type].aggregate
            key = (aggregate_type, aggregate_id)
            entry = found.get(key)
            if entry is None:
                entry = found[key] = [aggregate.initial, 0, recorded_at]
            entry[0] = aggregate.evolve(entry[0], aggregate.codec.decode(event_type, payload))
            entry[1] += 1
            entry[2] = recorded_at

    def states(self) -> list[AsOfState]:
        return [
            AsOfState(kind, aggregate_id, version, at, self.by_type[kind].record(aggregate_id, s))
            for (kind, aggregate_id), (s, version, at) in sorted(self.found.items())
        ]
