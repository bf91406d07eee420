"""Rebuild a site from the Kafka log, and compare deterministic state digests.

A site's state is a function of the log: for each of its services, a fresh database gets the
service's projections replayed from offset 0 (and, when its event store is gone, the site's own
events restored from the service's topic at their own positions, so the chain still verifies and
the relay does not publish them again — but only once every record's signature verified and every
keyed hash was recomputed from genesis: a broken chain is refused, naming its first bad link, with
nothing written). Policies — projections that act (raise recalls, record
shipment facts on orders) — are not replayed: what they did is already in the event stores.

`site_digests` hashes every read-model table (rows as canonical JSON, sorted) and the event
store (ids, versions and hashes in position order); equal digests mean equal state.

Platform code: the services a replay rebuilds (their specs) and the command that starts a
worker for one of them are the caller's (deploy/replay.py binds the network's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from shared import kafka_clients
from shared.bulk_replay import VOLATILE_COLUMNS, BulkProjection, BulkReplay, tables_empty
from shared.chain_key import ChainKey
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
from shared.hashchain import GENESIS
from shared.kafka_admin import end_offsets
from shared.log_chain import BrokenChain, LogRecord, restorable
from shared.log_reader import records_to_end
from shared.projections import Projection, ProjectionRunner, consumed, next_offsets
from shared.service_host import ServiceSpec
from shared.service_lock import ServicesRunning, running_services
from shared.settings import Settings
from shared.topics import SERVICE_TOPICS
from shared.trust import TRUST_LIST_ENV, TrustList, Untrusted, envelope_signer, verify_envelope

# Bookkeeping of the runner and the relay, not state: differs between a live site and a replay.
NOT_STATE = frozenset(
    {
        "events", "relay_checkpoints", "projection_checkpoints", "processed_events",
        "parked_records", "schema_migrations",
        "untrusted_records",  # what each consumer refused, and when (the log's forgeries)
        "state_snapshot_marks", "state_snapshots",  # as-of snapshots: derived, taken when due
        "shipment_orders",  # matching's delivery policy's own lookup (policies are not replayed)
    }
)  # fmt: skip
# VOLATILE_COLUMNS (shared.bulk_replay): transaction ids differ by construction
Progress = Callable[[str], None]
# A replay assigns no DINs (it runs no commands); donor intake's build still wants a valid FIN.
REPLAY_FIN = "R0000"
# Records a replay runner takes per poll: a bigger batch is fewer transactions and longer
# executemany waves (live runners keep the default, for latency).
REPLAY_FETCH_RECORDS = 6000
REPLAY_SERVER_ENV = "CELLBANK_REPLAY_SERVER_URL"  # a worker's PostgreSQL server (not in argv)


Specs = Callable[[], Mapping[str, ServiceSpec]]  # name → spec, imported on demand (heavy)


# Verified batch signatures and tree nodes a replay worker remembers (shared.trust).
REPLAY_VERIFIED = 1 << 16
REPLAY_NODES = 1 << 16  # some 30 MB


@dataclass(frozen=True, slots=True)
class WorkerCommand:
    """How replay_site starts the process replaying one service: `argv` followed by the
    worker's arguments, run in `cwd`; the program it runs hands them to worker_main."""

    argv: tuple[str, ...]
    cwd: Path | None = None


@dataclass
class Meter:
    """events/s and ETA for a progress line on stderr (a bar when it is a terminal)."""

    label: str
    total: int
    out: Progress
    started: float = field(default_factory=time.monotonic)
    last: float = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 and self.total > done else 0.0
        width = 24
        filled = int(width * min(1.0, done / self.total)) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        self.out(
            f"{self.label:<28} [{bar}] {done:,}/{self.total:,} events  {rate:,.0f} ev/s"
            f"  ETA {eta:,.0f}s" + ("  done" if final else "")
        )


# ---- restoring a site's own events --------------------------------------------------------


class UntrustedOnLog(Exception):
    """Records on the log claim the site but the trust list does not vouch for them."""


async def site_events_from_log(
    bootstrap: str, topic: str, site_id: str, *, trust: TrustList
) -> list[StoredEvent]:
    """The site's events on the topic (up to its current end), deduplicated by event id, each
    verified against the trust list. A record that claims the site but does not verify
    refuses the restore (UntrustedOnLog names the first): history is restored only from what
    the site signed."""
    ends = await end_offsets(bootstrap, [topic])
    consumer = kafka_clients.consumer(
        bootstrap=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: dict[str, StoredEvent] = {}
    untrusted: list[str] = []
    try:
        partitions = [tp for tp, end in ends.items() if end > 0]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= remaining.get(tp, 0):
                        continue
                    try:
                        event = verify_envelope(trust, record.value)
                    except Untrusted as exc:
                        if exc.site_id == site_id:
                            untrusted.append(
                                f"{record.topic}/{record.partition}@{record.offset}: {exc.reason}"
                            )
                        continue
                    except ValueError:
                        continue  # poison on the log claims nobody
                    if event.site_id == site_id:
                        seen.setdefault(event.event_id, event)
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
    finally:
        await consumer.stop()
    if untrusted:
        raise UntrustedOnLog(
            f"restore of {site_id} refused: {len(untrusted)} record(s) on {topic} claim the site"
            f" but do not verify (first: {untrusted[0]}); they were dead-lettered by the live"
            " consumers — look into how they got onto the log before restoring"
        )
    return chain_order(list(seen.values()))


def chain_order(events: Sequence[StoredEvent]) -> list[StoredEvent]:
    """The store's order, recovered from the hash chain (each event links to its predecessor)."""
    by_prev = {bytes(e.prev_hash): e for e in events}
    ordered: list[StoredEvent] = []
    link = GENESIS
    while link in by_prev:
        event = by_prev.pop(link)
        ordered.append(event)
        link = bytes(event.hash)
    if by_prev:
        raise ValueError(
            f"{len(by_prev)} event(s) on the log do not continue the site's hash chain "
            f"(first unlinked: {next(iter(by_prev.values())).event_id}); the log is incomplete"
        )
    return ordered


class RestoreRefused(Exception):
    """The site's log cannot be restored as it is; the message names the first bad link."""


async def site_records_from_log(bootstrap: str, topic: str, site_id: str) -> list[LogRecord]:
    """The records on the topic (up to its current end) whose envelope claims the site, as
    they are on the log: a restore verifies them before it trusts any."""
    return [
        LogRecord(topic, record.partition, record.offset, record.value)
        async for record in records_to_end(bootstrap, topic)
        if record.value is not None and envelope_signer(record.value)[0] == site_id
    ]


async def verified_site_logs(
    site_id: str,
    bootstrap: str,
    services: Sequence[str],
    *,
    chain_keys: Mapping[str, ChainKey],
    trust: TrustList,
    topics: Mapping[str, str] = SERVICE_TOPICS,
) -> dict[str, list[StoredEvent]]:
    """service → the site's events of its store, each signature verified and every keyed hash
    recomputed from genesis; RestoreRefused naming the first bad record or link otherwise."""
    verified: dict[str, list[StoredEvent]] = {}
    for name in services:
        key = chain_keys.get(name)
        if key is None:
            raise RestoreRefused(f"{site_id} {name}: no chain key to recompute its hashes with")
        records = await site_records_from_log(bootstrap, topics[name], site_id)
        try:
            verified[name] = restorable(records, site_id=site_id, key=key, trust=trust)
        except BrokenChain as exc:
            raise RestoreRefused(
                f"{site_id} {name}: refused, nothing was written: the log's chain is broken at"
                f" {exc}"
            ) from None
    return verified


async def restore_events(
    pool: asyncpg.Pool, events: Sequence[StoredEvent], relay_name: str
) -> None:
    """Insert the (verified) events at their own positions and mark them published (they are
    on Kafka): the restored store is the lost one, anchors and all."""
    rows = [
        (e.position, e.event_id, e.aggregate_id, e.aggregate_version, e.aggregate_type,
         e.event_type, e.schema_version, e.site_id, e.occurred_at, e.recorded_at, e.actor,
         e.reason, e.correlation_id, e.causation_id, e.payload, e.prev_hash, e.hash,
         e.traceparent)
        for e in events
    ]  # fmt: skip
    head = events[-1].position if events else 0
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT count(*) FROM events"):
            raise RuntimeError("the target event store is not empty; restore into a fresh one")
        await conn.copy_records_to_table(
            "events",
            records=rows,
            columns=[
                "position", "event_id", "aggregate_id", "aggregate_version", "aggregate_type",
                "event_type", "schema_version", "site_id", "occurred_at", "recorded_at", "actor",
                "reason", "correlation_id", "causation_id", "payload", "prev_hash", "hash",
                "traceparent",
            ],
        )  # fmt: skip
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'position'), greatest($1, 1), $1 > 0)",
            head,
        )
        await conn.execute(
            "INSERT INTO relay_checkpoints (relay_name, position) VALUES ($1, $2)"
            " ON CONFLICT (relay_name) DO UPDATE SET position = $2",
            relay_name, head,
        )  # fmt: skip


# ---- replaying projections ----------------------------------------------------------------


@dataclass
class _Replay:
    """One projection being replayed: its runner, its goal (offsets) and how far it is."""

    label: str
    pool: asyncpg.Pool
    name: str
    goal: dict[TopicPartition, int]
    task: asyncio.Task[None]
    stop: asyncio.Event

    @property
    def total(self) -> int:
        return sum(self.goal.values())


def service_projections(spec: ServiceSpec) -> list[Projection]:
    """The projections the service's spec declares — not its policies (consumers that act):
    the ones a replay runs."""
    return spec.read_models()


Goals = dict[str, dict[TopicPartition, int]]  # projection → next offset to reach per partition


async def projection_goals(
    spec: ServiceSpec, settings: Settings, *, policies: bool = False
) -> Goals:
    """Each projection's goal (policies' too with policies=True): its topics' ends now."""
    subscribed = (
        spec.subscriptions()
        if policies
        else {p.name: tuple(p.topics) for p in service_projections(spec)}
    )
    return {
        name: await end_offsets(settings.kafka_bootstrap, list(topics))
        for name, topics in subscribed.items()
    }


async def start_projections(
    spec: ServiceSpec,
    pool: asyncpg.Pool,
    settings: Settings,
    goals: Goals | None = None,
    *,
    trust: TrustList,
    projections: Sequence[Projection] | None = None,
) -> list[_Replay]:
    """Start the service's projections (not its policies; or the `projections` given) from
    offset 0, each aiming at its goal (by default the log's end as it is now). Records the
    trust list does not vouch for are skipped and kept in the rebuilt database's
    untrusted_records (not dead-lettered again: the live consumers did that)."""
    goals = goals if goals is not None else await projection_goals(spec, settings)
    started = []
    for projection in service_projections(spec) if projections is None else projections:
        goal = goals[projection.name]
        group = f"replay.{settings.site_id}.{spec.name}.{projection.name}.{uuid.uuid4().hex[:8]}"
        runner = ProjectionRunner(
            pool, projection, trust=trust, bootstrap=settings.kafka_bootstrap, group_id=group,
            max_records=REPLAY_FETCH_RECORDS, dead_letter_untrusted=False,
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop), name=group)
        label = f"{settings.site_id} {spec.name}.{projection.name}"
        started.append(_Replay(label, pool, projection.name, goal, task, stop))
    return started


async def finish_projections(replays: list[_Replay], progress: Progress, timeout: float) -> int:
    """Wait until every replay reached its goal, showing one progress line; stop them."""
    total = sum(r.total for r in replays)
    meter = Meter(f"replaying {len(replays)} read models", total, progress)
    deadline = time.monotonic() + timeout
    try:
        while True:
            done = 0
            for r in replays:
                done += await _consumed(r.pool, r.name, r.goal)
                if r.task.done():
                    r.task.result()  # the runner died: raise its error
                    if await _consumed(r.pool, r.name, r.goal) < r.total:
                        raise RuntimeError(f"{r.label} stopped before the end of the log")
            meter.update(done)
            if done >= total:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay: {done:,}/{total:,} records after {timeout:.0f}s")
            await asyncio.sleep(0.1)
    finally:
        for r in replays:
            r.stop.set()
        for r in replays:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r.task, 30)
    meter.update(total, final=True)
    return total


async def _consumed(pool: asyncpg.Pool, projection: str, goal: Mapping[TopicPartition, int]) -> int:
    return consumed(await next_offsets(pool, projection), goal)


# ---- one process per service ---------------------------------------------------------------
# A replay is CPU-bound in Python (decoding, building statements): each service's projections
# run in a process of their own, so a site's replay uses every core. The parent prepares the
# databases, fixes the goals, shows progress from the checkpoints and stops the workers.


@dataclass
class _Worker:
    service: str
    pool: asyncpg.Pool  # the parent's, to follow the checkpoints
    goals: Goals
    process: asyncio.subprocess.Process
    log: Path

    @property
    def total(self) -> int:
        return sum(sum(goal.values()) for goal in self.goals.values())

    async def consumed(self) -> int:
        return sum([await _consumed(self.pool, name, goal) for name, goal in self.goals.items()])

    def failure(self) -> str:
        tail = self.log.read_text(errors="replace").strip().splitlines()[-15:]
        return f"replay of {self.service} exited with {self.process.returncode}: " + "\n".join(tail)


def _goals_json(goals: Goals) -> str:
    return json.dumps(
        {
            name: [[tp.topic, tp.partition, end] for tp, end in goal.items()]
            for name, goal in goals.items()
        }
    )


def _goals_from_json(text: str) -> Goals:
    return {
        name: {TopicPartition(topic, partition): end for topic, partition, end in goal}
        for name, goal in json.loads(text).items()
    }


async def _start_worker(
    command: WorkerCommand, settings: Settings, pool: asyncpg.Pool, goals: Goals, log_dir: Path
) -> _Worker:
    log = log_dir / f"{settings.service}.log"
    # The server URL (it may hold a password) goes through the environment, not the command
    # line that `ps` shows.
    env = {
        **os.environ, REPLAY_SERVER_ENV: settings.database_url,
        TRUST_LIST_ENV: settings.trust_list_file,
    }  # fmt: skip
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *command.argv,
            "--site", settings.site_id, "--service", settings.service,
            "--kafka", settings.kafka_bootstrap, "--database", settings.database_name,
            "--facility", settings.facility_id, "--parent-pid", str(os.getpid()),
            "--goals", _goals_json(goals),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, cwd=command.cwd, env=env,
        )  # fmt: skip
    return _Worker(settings.service, pool, goals, process, log)


async def _follow(workers: list[_Worker], progress: Progress, timeout: float) -> int:
    total = sum(w.total for w in workers)
    meter = Meter(f"replaying {sum(len(w.goals) for w in workers)} read models", total, progress)
    deadline = time.monotonic() + timeout
    while True:
        done = sum([await w.consumed() for w in workers])
        meter.update(done)
        for w in workers:
            if w.process.returncode not in (None, 0):
                raise RuntimeError(w.failure())
        if all(w.process.returncode == 0 for w in workers):
            done = sum([await w.consumed() for w in workers])  # their last commits included
            if done < total:
                raise RuntimeError(f"replay workers ended at {done:,}/{total:,} records")
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"replay: {done:,}/{total:,} records after {timeout:.0f}s")
        await asyncio.sleep(0.1)
    meter.update(total, final=True)
    return total


async def _stop_workers(workers: list[_Worker]) -> None:
    for w in workers:
        if w.process.returncode is None:
            w.process.kill()
    for w in workers:
        await w.process.wait()


@dataclass(frozen=True, slots=True)
class ReplayResult:
    databases: dict[str, str]  # service → the database rebuilt
    events_restored: dict[str, int]
    records_replayed: int
    seconds: float
    # Records the rebuild skipped because the trust list does not vouch for them: service →
    # reason → how many distinct records.
    untrusted: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records_replayed / self.seconds if self.seconds else 0.0


async def replay_site(
    site_id: str,
    *,
    specs: Specs,
    worker: WorkerCommand,
    bootstrap: str,
    server_url: str,
    targets: Mapping[str, str],
    restore_events_from_log: bool,
    progress: Progress = lambda line: print(line, file=sys.stderr, flush=True),
    services: Sequence[str] | None = None,
    facility_id: str = REPLAY_FIN,
    timeout: float = 1800.0,
    trust_list_file: str = "",
    chain_keys: Mapping[str, ChainKey] | None = None,
    topics: Mapping[str, str] = SERVICE_TOPICS,  # where each store's events are (restore)
) -> ReplayResult:
    """Rebuild each service of the site (`specs`, or the `services` named) into
    `targets[service]` (a database name; an existing one is dropped first unless events are
    restored into it … which needs it empty). Each service replays in a worker process of its
    own, started by `worker`. Every record is verified against the trust list
    (trust_list_file, else CELLBANK_TRUST_LIST_FILE). Restoring events needs every store's
    chain key too: the whole log is verified before any database is touched."""
    started = time.monotonic()
    if restore_events_from_log:  # never drop databases from under running services
        chosen = [targets[name] for name in services or list(targets)]
        if running := await running_services(server_url, chosen):
            raise ServicesRunning(site_id, running)
    trust_list_file = trust_list_file or os.environ.get(TRUST_LIST_ENV, "")
    trust = TrustList.from_env({TRUST_LIST_ENV: trust_list_file})  # fails early, names it
    restored: dict[str, int] = {}
    all_specs = specs()
    verified: dict[str, list[StoredEvent]] = {}
    if restore_events_from_log:
        verified = await verified_site_logs(
            site_id, bootstrap, services or list(all_specs), chain_keys=chain_keys or {},
            trust=trust, topics=topics,
        )  # fmt: skip
    pools: list[asyncpg.Pool] = []
    workers: list[_Worker] = []
    try:
        with tempfile.TemporaryDirectory(prefix="cellbank-replay-") as log_dir:
            for name in services or list(all_specs):
                spec = all_specs[name]
                dbname = targets[name]
                await drop_database(server_url, dbname)
                await ensure_database(server_url, dbname)
                pool = await create_pool(with_database(server_url, dbname), min_size=1, max_size=2)
                pools.append(pool)
                await migrate(
                    pool,
                    migration_files(SHARED_MIGRATIONS, spec.migrations),
                )
                if restore_events_from_log:
                    events = verified[name]
                    await restore_events(pool, events, f"{site_id}.{name}.relay")
                    restored[name] = len(events)
                    progress(f"{site_id} {name}: {len(events):,} own events restored from the log")
                settings = Settings(
                    site_id=site_id, service=name, kafka_bootstrap=bootstrap,
                    database_url=server_url, database_name=dbname, facility_id=facility_id,
                    trust_list_file=trust_list_file,
                )  # fmt: skip
                goals = await projection_goals(spec, settings)
                workers.append(await _start_worker(worker, settings, pool, goals, Path(log_dir)))
            records = await _follow(workers, progress, timeout)
            untrusted = {w.service: await _untrusted(w.pool) for w in workers}
            for service, reasons in untrusted.items():
                if reasons:
                    progress(
                        f"{site_id} {service}: skipped {sum(reasons.values()):,} untrusted"
                        f" record(s): {', '.join(f'{r} {n}' for r, n in sorted(reasons.items()))}"
                    )
    finally:
        await _stop_workers(workers)  # whatever failed (or was cancelled) on the way
        for pool in pools:
            await pool.close()
    return ReplayResult(dict(targets), restored, records, time.monotonic() - started, untrusted)


async def _untrusted(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        'SELECT reason, count(DISTINCT (topic, partition, "offset")) AS n'
        " FROM untrusted_records GROUP BY 1"
    )
    return {r["reason"]: r["n"] for r in rows}


async def _replay_one_service(args: argparse.Namespace, specs: Specs) -> None:
    """A worker: replay one service's projections to the goals it was given, then stop. Read
    models with a fold (BulkProjection) are rebuilt in bulk when they are still empty (one
    consumer for all their topics, rows COPYed in); the others by live runners."""
    spec = specs()[args.service]
    server_url = os.environ[REPLAY_SERVER_ENV]
    settings = Settings(
        site_id=args.site, service=args.service, kafka_bootstrap=args.kafka,
        database_url=server_url, database_name=args.database, facility_id=args.facility,
    )  # fmt: skip
    trust = TrustList.from_env()
    # A rebuild reads whole topics at once, partitions and topics at their own pace: a batch's
    # members can be far apart, so it remembers more verified batches than a live consumer.
    trust.verified_cache_size, trust.verified_nodes_size = REPLAY_VERIFIED, REPLAY_NODES
    pool = await create_pool(with_database(server_url, args.database), min_size=2, max_size=8)
    try:
        goals = _goals_from_json(args.goals)
        projections = service_projections(spec)
        bulk = [p for p in projections if isinstance(p, BulkProjection)]
        if bulk and not await tables_empty(pool, bulk):
            bulk = []  # not a rebuild from nothing: the live runners' way
        replays = await start_projections(
            spec, pool, settings, goals, trust=trust,
            projections=[p for p in projections if p not in bulk],
        )  # fmt: skip
        work: list[Coroutine[Any, Any, object]] = [
            finish_projections(replays, lambda _line: None, timeout=float("inf"))
        ]
        if bulk:
            group = f"replay.{settings.site_id}.{spec.name}.bulk"
            rebuild = BulkReplay(
                pool, bulk, goals, trust=trust, bootstrap=settings.kafka_bootstrap, group_id=group
            )
            work.append(rebuild.run())
        finishing = asyncio.ensure_future(_all(work))
        orphaned = asyncio.ensure_future(_parent_gone(args.parent_pid))
        await asyncio.wait({finishing, orphaned}, return_when=asyncio.FIRST_COMPLETED)
        if not finishing.done():  # nobody waits for this replay any more: stop it
            finishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await finishing
            raise SystemExit(f"replay of {args.service}: the parent process is gone")
        orphaned.cancel()
        finishing.result()
    finally:
        await pool.close()


async def _all(work: Sequence[Coroutine[Any, Any, object]]) -> None:
    await asyncio.gather(*work)


async def _parent_gone(parent: int) -> None:
    """Returns once the process that started this worker is no longer its parent."""
    while os.getppid() == parent:  # noqa: ASYNC110 - nothing signals it; polled
        await asyncio.sleep(1.0)


def worker_main(argv: Sequence[str] | None, specs: Specs, *, prog: str) -> int:
    """A worker's entry point: parse the arguments _start_worker gives it (argv, else
    sys.argv) and replay that service of `specs`."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    for option in ("--site", "--service", "--kafka", "--database", "--goals"):
        parser.add_argument(option, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--facility", default=REPLAY_FIN)
    asyncio.run(_replay_one_service(parser.parse_args(argv), specs))
    return 0


# ---- digests ------------------------------------------------------------------------------


async def database_digests(
    server_url: str, dbname: str, *, with_events: bool = True
) -> dict[str, str]:
    """table → digest of every read-model table (and the event store) of one database."""
    pool = await create_pool(with_database(server_url, dbname), min_size=1, max_size=2)
    try:
        tables = [
            r["table_name"]
            for r in await pool.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                " AND table_type = 'BASE TABLE' ORDER BY table_name"
            )
        ]
        out: dict[str, str] = {}
        volatile = " - ".join(f"'{c}'" for c in VOLATILE_COLUMNS)
        for table in tables:
            if table in NOT_STATE:
                continue
            rows = await pool.fetch(
                f'SELECT (to_jsonb(t) - {volatile})::text AS j FROM "{table}" t ORDER BY 1'
            )
            out[table] = rows_digest((r["j"],) for r in rows)
        if with_events:
            rows = await pool.fetch(
                "SELECT event_id::text, aggregate_id, aggregate_version, hash FROM events"
                " ORDER BY position"
            )
            out["events"] = rows_digest(tuple(r.values()) for r in rows)
        return out
    finally:
        await pool.close()


async def site_digests(
    server_url: str, databases: Mapping[str, str], *, with_events: bool = True
) -> dict[str, str]:
    """`service/table` → digest over the site's databases."""
    out: dict[str, str] = {}
    for service, dbname in databases.items():
        for table, digest in (
            await database_digests(server_url, dbname, with_events=with_events)
        ).items():
            out[f"{service}/{table}"] = digest
    return out


def differences(live: Mapping[str, str], replayed: Mapping[str, str]) -> list[str]:
    """The tables whose digests differ (or exist on one side only)."""
    return sorted(k for k in set(live) | set(replayed) if live.get(k) != replayed.get(k))
