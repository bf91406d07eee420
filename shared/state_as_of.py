"""An event store's aggregates as of a position or a time, folded by their domain's evolve."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from shared.commands import Aggregate
from shared.errors import InvalidArgument, PreconditionFailed
from shared.gc_pause import cyclic_gc_paused
from shared.proto_mapping import from_proto
from shared.state_codec import codec_for

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    " WHERE position > $1 AND position <= $2 AND aggregate_type = ANY($3::text[])"
    # recorded_at comes from each appender's clock, taken before the append lock: positions
    # are commit-ordered but the times need not be, so a time bound filters, never stops.
    " AND ($4::timestamptz IS NULL OR recorded_at <= $4){only} ORDER BY position"
)
# The newest snapshot a bound may start from: of today's shape, at or before the position
# reached and, for a time bound, with every event up to it recorded by then (a time bound
# filters events by recorded_at, and a snapshot has folded all of them); with the number of
# marks of its chain up to it (whole when it equals its ordinal).
_SNAPSHOT_BEFORE = (
    "SELECT m.position, m.ordinal, (SELECT count(*) FROM state_snapshot_marks c"
    " WHERE c.shape = m.shape AND c.position <= m.position) AS present"
    " FROM state_snapshot_marks m WHERE m.shape = $1 AND m.position <= $2"
    " AND ($3::timestamptz IS NULL OR m.max_recorded_at <= $3) ORDER BY m.position DESC LIMIT 1"
)
# Each aggregate's newest state in a chain at or before one of its snapshots.
_SNAPSHOT_STATES = (
    "SELECT DISTINCT ON (aggregate_type, aggregate_id) aggregate_type, aggregate_id, version,"
    " updated_at, state FROM state_snapshots WHERE shape = $1 AND position <= $2"
    " AND aggregate_type = ANY($3::text[]){only}"
    " ORDER BY aggregate_type, aggregate_id, position DESC"
)


async def fold_as_of(
    pool: asyncpg.Pool, folds: Sequence[Folded], bound: Bound, now: datetime
) -> StatesAsOf:
    """Fold the store's events up to the bound, in position order, with each aggregate type's
    domain evolve, in one read-only snapshot of the database (nothing is written). It starts
    from the newest state snapshot the bound allows (take_snapshot) and folds the events after
    it: the same states as folding from the first event. Rows are read with server-side
    cursors in batches; each batch is decoded and folded off the event loop."""
    chosen = bound.checked(folds, now)
    by_type = {f.aggregate.aggregate_type: f for f in chosen}
    snapshots = Snapshots.of(folds)
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
            start = 0
            mark = await conn.fetchrow(_SNAPSHOT_BEFORE, snapshots.shape, position, bound.as_of)
            if mark is not None and mark["present"] == mark["ordinal"]:
                start = int(mark["position"])
            elif mark is not None:  # a mark of the chain deleted: its states are missing
                log.warning(
                    "state snapshots incomplete; folding from the first event",
                    extra={"position": mark["position"], "ordinal": mark["ordinal"],
                           "present": mark["present"]},
                )  # fmt: skip
            only, extra = "", []
            if bound.aggregate_id:
                only, extra = " AND aggregate_id = $4", [bound.aggregate_id]
            if start:
                await _stream(
                    conn, _SNAPSHOT_STATES.format(only=only),
                    [snapshots.shape, start, list(by_type), *extra],
                    lambda rows: folding.restore(rows, snapshots),
                )  # fmt: skip
            only = " AND aggregate_id = $5" if bound.aggregate_id else ""
            await _stream(
                conn, _EVENTS.format(only=only),
                [start, position, list(by_type), bound.as_of, *extra], folding.fold,
            )  # fmt: skip
    states = await _in_thread(folding.states)  # every record, off the event loop too
    return StatesAsOf(position, reached["recorded_at"] if reached else None, int(head), states)


async def _stream(
    conn: asyncpg.Connection,
    query: str,
    args: Sequence[object],
    handle: Callable[[Sequence[asyncpg.Record]], None],
) -> None:
    """Each batch of the query's rows handled in a worker thread while the next is read."""
    cursor = await conn.cursor(query, *args)
    rows = await cursor.fetch(BATCH)
    while rows:
        following = asyncio.ensure_future(cursor.fetch(BATCH))
        try:
            await _in_thread(handle, rows)
        finally:
            rows = await following


async def _in_thread(work: Callable[..., T], *args: Any) -> T:
    """work(*args) in a worker thread, the cyclic collector paused for just that long."""

    def paused() -> T:
        with cyclic_gc_paused():
            return work(*args)

    return await asyncio.to_thread(paused)


# ---- snapshots -----------------------------------------------------------------------------

# One snapshot writer a database at a time (every replica of a service may run one).
_SNAPSHOT_LOCK = 0x636273_6E6170  # "cbsnap"
# A chain of another shape (written by another version of the service) is kept while that
# version may still be running (a rolling deploy), then deleted.
OTHER_SHAPES_KEPT = "1 day"


class Snapshots:
    """How the folded aggregates' states are written in snapshots: a codec per type, and the
    shape — a fingerprint of the state types and of the code that folds them (the modules of
    the state types, of evolve and of the decoding, and the event messages' definitions). A
    version whose snapshots could hold other states has another shape, and its snapshots are
    never read: conservative (a change to those modules' comments changes it too), since
    writing them again costs a background fold, and a stale one would be a wrong answer."""

    def __init__(self, folds: Sequence[Folded]) -> None:
        self.codecs = {
            f.aggregate.aggregate_type: codec_for(type(f.aggregate.initial)) for f in folds
        }
        parts = [f"{kind} {c.shape}" for kind, c in sorted(self.codecs.items())]
        for f in sorted(folds, key=lambda f: f.aggregate.aggregate_type):
            parts.append(_code_of(f.aggregate))
        self.shape = hashlib.sha256("\n".join(parts).encode()).hexdigest()

    @classmethod
    def of(cls, folds: Sequence[Folded]) -> Snapshots:
        """Built once per set of folds (a service declares them once)."""
        key = tuple(id(f) for f in folds)
        found = _SNAPSHOTS.get(key)
        if found is None or found[0] != tuple(folds):
            found = _SNAPSHOTS[key] = (tuple(folds), cls(folds))
        return found[1]


_SNAPSHOTS: dict[tuple[int, ...], tuple[tuple[Folded, ...], Snapshots]] = {}


def _code_of(aggregate: Aggregate[Any]) -> str:
    """What an aggregate's folding depends on, as text: the source of the modules that define
    its state, evolve and decoding, and its event messages' proto definitions."""
    pairs = aggregate.codec.pairs()
    modules = {
        type(aggregate.initial).__module__, aggregate.evolve.__module__,
        type(aggregate.codec).__module__, from_proto.__module__,
        *(event.__module__ for event, _ in pairs),
    }  # fmt: skip
    texts = [_module_source(name) for name in sorted(modules)]
    files = {m.DESCRIPTOR.file.name: m.DESCRIPTOR.file.serialized_pb for _, m in pairs}
    texts += [f"{name} {hashlib.sha256(pb).hexdigest()}" for name, pb in sorted(files.items())]
    return "\n".join(texts)


def _module_source(name: str) -> str:
    module = sys.modules.get(name)
    try:
        return inspect.getsource(module) if module is not None else name
    except (OSError, TypeError):  # no source (a frozen or compiled module): its name only
        return name


async def take_snapshot(pool: asyncpg.Pool, folds: Sequence[Folded], *, every: int) -> int:
    """Write the next snapshot when the store has `every` positions past this shape's newest
    (the states after position newest + every, of the aggregates changed since): its position,
    or 0 when there is nothing to write yet (or another writer holds the lock). A chain of
    this shape missing a mark is written again from the first event; chains of other shapes
    are deleted once none was written for OTHER_SHAPES_KEPT."""
    if not folds:
        return 0
    snapshots = Snapshots.of(folds)
    shape, kinds = snapshots.shape, list(snapshots.codecs)
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _SNAPSHOT_LOCK):
            return 0
        await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT_S}s'")
        await conn.execute(
            "DELETE FROM state_snapshot_marks WHERE shape IN (SELECT shape FROM"
            " state_snapshot_marks WHERE shape <> $1 GROUP BY shape"
            f" HAVING max(taken_at) < now() - interval '{OTHER_SHAPES_KEPT}')",
            shape,
        )
        last = await conn.fetchrow(
            "SELECT position, ordinal, max_recorded_at, (SELECT count(*) FROM"
            " state_snapshot_marks c WHERE c.shape = $1) AS present FROM state_snapshot_marks"
            " WHERE shape = $1 ORDER BY position DESC LIMIT 1",
            shape,
        )
        if last is not None and last["present"] != last["ordinal"]:
            log.warning("state snapshots incomplete; writing them again", extra={"shape": shape})
            await conn.execute("DELETE FROM state_snapshot_marks WHERE shape = $1", shape)
            last = None
        since = int(last["position"]) if last else 0
        target = since + every
        if await conn.fetchval("SELECT coalesce(max(position), 0) FROM events") < target:
            return 0
        # The aggregates the next `every` positions change, as the newest snapshot left them.
        touched = await conn.fetch(
            "SELECT DISTINCT aggregate_type, aggregate_id FROM events WHERE position > $1"
            " AND position <= $2 AND aggregate_type = ANY($3::text[])",
            since, target, kinds,
        )  # fmt: skip
        folding = Folding({f.aggregate.aggregate_type: f for f in folds})
        if since:
            await _stream(
                conn,
                "SELECT DISTINCT ON (s.aggregate_type, s.aggregate_id) s.aggregate_type,"
                " s.aggregate_id, s.version, s.updated_at, s.state FROM state_snapshots s"
                " JOIN unnest($3::text[], $4::text[]) AS t(aggregate_type, aggregate_id)"
                " USING (aggregate_type, aggregate_id) WHERE s.shape = $1 AND s.position <= $2"
                " ORDER BY s.aggregate_type, s.aggregate_id, s.position DESC",
                [shape, since, [r[0] for r in touched], [r[1] for r in touched]],
                lambda rows: folding.restore(rows, snapshots),
            )
        await _stream(conn, _EVENTS.format(only=""), [since, target, kinds, None], folding.fold)
        rows = await _in_thread(folding.snapshot_rows, shape, target, snapshots)
        newest = await conn.fetchval(
            "SELECT max(recorded_at) FROM events WHERE position > $1 AND position <= $2",
            since, target,
        )  # fmt: skip
        before = last["max_recorded_at"] if last else None
        if before is not None and (newest is None or before > newest):
            newest = before
        await conn.execute(
            "INSERT INTO state_snapshot_marks (shape, position, ordinal, max_recorded_at)"
            " VALUES ($1, $2, $3, $4)",
            shape, target, (int(last["ordinal"]) if last else 0) + 1, newest,
        )  # fmt: skip
        await conn.copy_records_to_table(
            "state_snapshots",
            records=rows,
            columns=["shape", "position", "aggregate_type", "aggregate_id", "version",
                     "updated_at", "state"],
        )  # fmt: skip
    return target


async def snapshot_worker(
    pool: asyncpg.Pool,
    folds: Sequence[Folded],
    stop: asyncio.Event,
    *,
    every: int,
    interval: float,
) -> None:
    """A service's background writer of snapshots: catches up (one snapshot at a time), then
    looks again every `interval` seconds, until `stop`. A failure is logged and retried."""
    while not stop.is_set():
        try:
            while not stop.is_set() and (position := await take_snapshot(pool, folds, every=every)):
                log.info("state snapshot written", extra={"position": position})
        except Exception as exc:  # the database away, a statement timed out: next time
            log.warning("state snapshot not written", extra={"error": repr(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


class Folding:
    """Every aggregate's state so far: [state, version, updated_at] by (type, id)."""

    def __init__(self, by_type: Mapping[str, Folded]) -> None:
        self.by_type = by_type
        self.found: dict[tuple[str, str], list[Any]] = {}
        self._steps = {  # looked up once, not once an event
            kind: (f.aggregate.initial, f.aggregate.evolve, f.aggregate.codec.decode)
            for kind, f in by_type.items()
        }

    def fold(self, rows: Sequence[asyncpg.Record]) -> None:
        found, steps = self.found, self._steps
        for aggregate_type, aggregate_id, event_type, payload, recorded_at in rows:
            initial, evolve, decode = steps[aggregate_type]
            key = (aggregate_type, aggregate_id)
            entry = found.get(key)
            if entry is None:
                entry = found[key] = [initial, 0, recorded_at]
            entry[0] = evolve(entry[0], decode(event_type, payload))
            entry[1] += 1
            entry[2] = recorded_at

    def restore(self, rows: Sequence[asyncpg.Record], snapshots: Snapshots) -> None:
        """Start from snapshot states: rows of aggregate_type, aggregate_id, version,
        updated_at, state (the codec's bytes)."""
        found, codecs = self.found, snapshots.codecs
        for aggregate_type, aggregate_id, version, updated_at, state in rows:
            found[(aggregate_type, aggregate_id)] = [
                codecs[aggregate_type].decode(state),
                version,
                updated_at,
            ]

    def snapshot_rows(
        self, shape: str, position: int, snapshots: Snapshots
    ) -> list[tuple[object, ...]]:
        """Every state so far as a row of state_snapshots at `position`."""
        codecs = snapshots.codecs
        return [
            (shape, position, kind, aggregate_id, version, at, codecs[kind].encode(state))
            for (kind, aggregate_id), (state, version, at) in self.found.items()
        ]

    def states(self) -> list[AsOfState]:
        return [
            AsOfState(kind, aggregate_id, version, at, self.by_type[kind].record(aggregate_id, s))
            for (kind, aggregate_id), (s, version, at) in sorted(self.found.items())
        ]
