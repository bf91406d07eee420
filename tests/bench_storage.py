"""Storage benchmarks (part of `make bench`): cold-chain readings through Faust (sent in batches,
one record per sensor per interval, and as single-reading records), ReserveUnit latency under 8
concurrent clients. Figures only; nothing here fails on timing."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import grpc
from aiokafka.partitioner import DefaultPartitioner
from cellbank.storage.v1 import events_pb2 as epb
from cellbank.storage.v1 import storage_service_pb2 as spb
from cellbank.storage.v1 import storage_service_pb2_grpc as spb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.demo import auth
from deploy.identities import service_oidc
from deploy.infra import Endpoints
from deploy.processes import REPO_ROOT, stop_process
from services.storage.adapters.telemetry_codec import BATCH_HEADERS, encode_batch, encode_reading
from services.storage.coldchain.watch import ColdChainRules, Reading, unix_ms
from services.storage.entrypoints.main import SPEC as STORAGE_SPEC
from shared import kafka_clients
from shared.chain_key import ChainKey
from shared.db import drop_database
from shared.kafka_admin import ensure_topics
from shared.service_host import ServiceHost
from shared.settings import Settings
from shared.topics import TopicSpec
from shared.waits import eventually
from tests.bench_report import Row
from tests.support.topic_reader import records_so_far
from tests.support.trust import site_trust_settings

PARTITIONS = 3
TANKS = 300
RULES = ColdChainRules()
BATCH = 60  # readings per record: a sensor sampling every 10 s, sending every 10 minutes
Record = tuple[bytes, list[tuple[str, bytes]] | None]  # value, headers


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _records(tank: str, celsius: float, times: list[datetime], batch: int) -> list[Record]:
    """A tank's readings as its sensor sends them: `batch` to a record (1: single readings)."""
    if batch == 1:
        return [(encode_reading(Reading("BEN", tank, celsius, at)), None) for at in times]
    return [
        (
            encode_batch("BEN", tank, [celsius] * len(part), [unix_ms(at) for at in part]),
            BATCH_HEADERS,
        )
        for part in (times[i : i + batch] for i in range(0, len(times), batch))
    ]


def _sentinels() -> list[str]:
    """One tank id per partition (the producer's own partitioner decides where a key goes)."""
    partitioner, found = DefaultPartitioner(), dict[int, str]()
    n = 0
    while len(found) < PARTITIONS:
        tank = f"BEN-S{n}"
        found.setdefault(
            partitioner(tank.encode(), list(range(PARTITIONS)), list(range(PARTITIONS))), tank
        )
        n += 1
    return list(found.values())


async def _fill(bootstrap: str, topic: str, readings: int, batch: int) -> int:
    """`readings` cold readings over TANKS tanks (one every 10 s each), `batch` to a record,
    then per partition a sentinel that warms for longer than the excursion limit: its excursion
    proves its partition was fully processed. Returns the number of records."""
    start = datetime.now(UTC) - timedelta(days=2)
    rounds = -(-readings // (TANKS * batch))
    producer = kafka_clients.producer(bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    sent = 0
    try:
        for r in range(rounds):
            for t in range(TANKS):
                first = (r * batch) * TANKS + t  # the tank's readings are t, t + TANKS, …
                count = len(range(first, readings, TANKS)[:batch])
                at = [start + timedelta(seconds=(r * batch + j) * 10) for j in range(count)]
                for value, headers in _records(f"BEN-T{t}", -185.0, at, batch):
                    await producer.send(topic, value, key=f"BEN-T{t}".encode(), headers=headers)
                    sent += 1
        # A minute after the last reading: no tank is silent when the sentinels warm up.
        end = start + timedelta(seconds=-(-readings // TANKS) * 10 + 60)
        warm = [end + timedelta(minutes=m) for m in range(int(RULES.excursion_minutes) + 2)]
        for tank in _sentinels():
            for value, headers in _records(tank, -100.0, warm, batch):
                await producer.send(topic, value, key=tank.encode(), headers=headers)
                sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _processing_seconds(bootstrap: str, changelog: str) -> float | None:
    """Once every sentinel's excursion is reported: seconds from the worker's first persisted
    watch to the last sentinel's report (the changelog's record times, the worker's clock), so
    the worker's start-up and group join are not counted; None before."""
    records = await records_so_far(bootstrap, changelog, timeout_ms=15_000)
    reported: dict[str, int] = {}
    for r in records:
        if r.value and json.loads(r.value)["excursion_reported"]:
            reported.setdefault(r.key.decode(), r.timestamp)
    if not set(_sentinels()) <= set(reported):
        return None
    return (max(reported.values()) - min(r.timestamp for r in records)) / 1000


async def _faust_run(endpoints: Endpoints, readings: int, batch: int, log_dir: Path) -> float:
    """Seconds a Faust worker spends processing `readings` (+ sentinels), from its first
    persisted watch to its last sentinel's excursion."""
    topic = f"bench.telemetry.{uuid.uuid4().hex[:8]}"
    await ensure_topics(
        endpoints.kafka_bootstrap, [TopicSpec(topic, -1, "bench")], partitions=PARTITIONS
    )
    await _fill(endpoints.kafka_bootstrap, topic, readings, batch)
    app_id = f"bench-coldchain-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CELLBANK_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "CELLBANK_TELEMETRY_TOPIC": topic,
        "CELLBANK_COLDCHAIN_APP_ID": app_id,
        "CELLBANK_STORAGE_ENDPOINTS": "",
        "CELLBANK_COLDCHAIN_DATADIR": str(log_dir / f"{app_id}-data"),
    }
    worker = _start_worker(env, log_dir / f"{app_id}.log")
    try:
        changelog = f"{app_id}-tank_watch-changelog"

        async def processed() -> float | None:
            if worker.poll() is not None:
                raise RuntimeError(
                    f"the Faust worker exited with {worker.returncode}; see {log_dir}"
                )
            return await _processing_seconds(endpoints.kafka_bootstrap, changelog)

        seconds = await eventually(
            processed,
            until=lambda s: s is not None,
            what="Faust worker to process the readings",
            timeout=600,
            interval=0.2,
        )
        assert seconds is not None
        return max(seconds, 1e-3)
    finally:
        stop_process(worker, timeout=30, name="the Faust worker")


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "services.storage.entrypoints.coldchain_worker",
        "worker",
        "-l",
        "warn",
        "--without-web",  # as deployed; no port to collide with
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped with deploy.processes.stop_process
        )  # fmt: skip


async def _raw_consume(bootstrap: str, readings: int, batch: int) -> float:
    """Baseline: a bare aiokafka consumer reading and decoding (protobuf, the message its header
    names) the same records; readings/s from its first record (group join not counted)."""
    topic = f"bench.telemetry.raw.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, -1, "bench")], partitions=PARTITIONS)
    records = await _fill(bootstrap, topic, readings, batch)
    consumer = kafka_clients.consumer(topic, bootstrap=bootstrap, auto_offset_reset="earliest",
                                      group_id=f"bench-raw-{uuid.uuid4().hex[:6]}")  # fmt: skip
    await consumer.start()
    seen, started = 0, 0.0
    try:
        while seen < records:
            fetched = await consumer.getmany(timeout_ms=500, max_records=5000)
            if fetched and not seen:
                started = time.perf_counter()  # from the first record, as the Faust figure
            for rs in fetched.values():
                for r in rs:
                    if r.headers:
                        epb.TemperatureReadingBatch.FromString(r.value)
                    else:
                        epb.TemperatureReading.FromString(r.value)
                seen += len(rs)
    finally:
        await consumer.stop()
    return readings / (time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class ColdChainFigures:
    readings: int
    batch: int  # readings per record
    faust: float  # readings/s through the Faust monitor
    bare: float  # readings/s, bare consumer + decode of the same records


async def cold_chain_throughput(
    endpoints: Endpoints, readings: int, batch: int, log_dir: Path
) -> ColdChainFigures:
    """Readings/s through the Faust monitor (its processing time, start-up excluded) and the
    raw-consumer baseline over the same records."""
    shape = f"{batch} readings a record" if batch > 1 else "single readings"
    progress(f"cold chain ({shape}): Faust worker over {readings:,} readings")
    faust_rate = readings / await _faust_run(endpoints, readings, batch, log_dir)
    progress(f"cold chain ({shape}): raw aiokafka consumer baseline")
    bare = await _raw_consume(endpoints.kafka_bootstrap, readings, batch)
    return ColdChainFigures(readings, batch, faust_rate, bare)


def cold_chain_rows(figures: list[ColdChainFigures]) -> list[Row]:
    rows = []
    for f in figures:
        shape = f"in batches of {f.batch}" if f.batch > 1 else "one per record"
        rows.append(
            Row(f"cold-chain monitor (Faust), {f.readings:,} readings {shape}", "readings/s",
                f.faust, f.bare, "bare consumer + decode, same records",
                target=100_000 if f.batch > 1 else 20_000)
        )  # fmt: skip
    return rows


@dataclass(frozen=True, slots=True)
class ReserveFigures:
    p50: float  # ms
    p99: float
    calls_per_s: float
    health_p50: float  # the baseline: gRPC health Check, same clients
    health_p99: float


async def reserve_latency(endpoints: Endpoints, clients: int, per_client: int) -> ReserveFigures:
    """p50/p99 (ms) of ReserveUnit over gRPC with `clients` concurrent callers, calls/s, and
    the health-check baseline."""
    settings = Settings(
        site_id="BEN", service="storage", kafka_bootstrap=endpoints.kafka_bootstrap,
        database_url=endpoints.database_url,
        database_name=f"cellbank_bench_storage_{uuid.uuid4().hex[:6]}",
        **service_oidc(endpoints.identity, "BEN", "storage"), **site_trust_settings("BEN"),
        chain_key=ChainKey.generate(),
    )  # fmt: skip
    host = ServiceHost(STORAGE_SPEC, settings)
    await host.start()
    try:
        assert host.pool is not None
        units = [f"BEN-UNIT-{i:05d}" for i in range(clients * per_client)]
        # The units manufacturing would have released (seeded straight into the read model).
        await host.pool.executemany(
            "INSERT INTO released_units VALUES ($1, 'BEN', 'b', 'd', 'G100126000001', 'S1001-01',"
            " 'NK-ALLO', 5e8, 2e5, 20, $2, false)",
            [(u, date.today() + timedelta(days=365)) for u in units],
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = spb_grpc.StorageServiceStub(channel)
            op = auth("op-alice")
            per_box = 100
            boxes = (len(units) + per_box - 1) // per_box
            await stub.RegisterTank(
                spb.RegisterTankRequest(tank_id="BEN-T1", racks=1, boxes_per_rack=boxes,
                                        positions_per_box=per_box, reason="bench"), metadata=op,
            )  # fmt: skip
            progress(f"reserve: storing {len(units):,} units")
            sem = asyncio.Semaphore(clients)

            async def put(i: int, unit: str) -> None:
                async with sem:
                    address = f"BEN-T1/R1/B{i // per_box + 1}/P{i % per_box + 1:02d}"
                    await stub.StoreUnit(
                        spb.StoreUnitRequest(unit_id=unit, address=address, reason="bench"),
                        metadata=op,
                    )

            await asyncio.gather(*(put(i, u) for i, u in enumerate(units)))
            latencies: list[float] = []
            hold = datetime.now(UTC) + timedelta(hours=1)

            async def client(mine: list[str]) -> None:
                for unit in mine:
                    request = spb.ReserveUnitRequest(
                        unit_id=unit, order_id=f"ORD-{unit}", reason="bench"
                    )
                    request.hold_until.FromDatetime(hold)
                    started = time.perf_counter()
                    await stub.ReserveUnit(request, metadata=op)
                    latencies.append(time.perf_counter() - started)

            progress(f"reserve: {clients} clients x {per_client} ReserveUnit calls")
            started = time.perf_counter()
            await asyncio.gather(*(client(units[c::clients]) for c in range(clients)))
            wall = time.perf_counter() - started
            # Baseline: the same clients, the same number of calls, to the service's gRPC
            # health Check (transport, auth-free, no database): the floor of any call.
            health = health_pb2_grpc.HealthStub(channel)
            floor: list[float] = []

            async def checker(n: int) -> None:
                for _ in range(n):
                    started = time.perf_counter()
                    await health.Check(health_pb2.HealthCheckRequest())
                    floor.append(time.perf_counter() - started)

            await asyncio.gather(*(checker(per_client) for _ in range(clients)))
        cuts, base = statistics.quantiles(latencies, n=100), statistics.quantiles(floor, n=100)
        return ReserveFigures(
            cuts[49] * 1000,
            cuts[98] * 1000,
            len(latencies) / wall,
            base[49] * 1000,
            base[98] * 1000,
        )
    finally:
        await host.stop(grace=1)
        await drop_database(endpoints.database_url, settings.database_name)


async def run(
    endpoints: Endpoints, scale: float, log_dir: Path, coldchain_only: bool = False
) -> list[Row]:
    """The storage figures as rows of the report (`coldchain_only`: the cold-chain rows)."""
    readings = max(10_000, int(200_000 * scale))
    rows = cold_chain_rows(
        [
            await cold_chain_throughput(endpoints, readings * 10, BATCH, log_dir),
            await cold_chain_throughput(endpoints, readings, 1, log_dir),
        ]
    )
    if coldchain_only:
        return rows
    clients = 8
    r = await reserve_latency(endpoints, clients=clients, per_client=max(10, int(100 * scale)))
    floor = f"gRPC health Check, {clients} clients"
    return [
        *rows,
        Row(f"ReserveUnit p50, {clients} concurrent clients", "ms", r.p50, r.health_p50, floor,
            higher_is_better=False),
        Row(f"ReserveUnit p99, {clients} concurrent clients ({r.calls_per_s:,.0f} calls/s)", "ms",
            r.p99, r.health_p99, floor, higher_is_better=False),
    ]  # fmt: skip
