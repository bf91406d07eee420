"""Matching benchmarks (part of `make bench`): SearchInventory over 100,000 available units of
10 sites, and PlaceOrder → ALLOCATED including the reservation at the owning site. Figures
only; nothing here fails on timing.

SearchInventory: the inventory rows are loaded with COPY straight into matching's projection
tables (what the projections would have written), so the figure is the search path (gRPC,
validation, in-memory index, explanations), not projection speed. Its baseline, in the same
run, is the same filter and a score ORDER BY ... LIMIT done by PostgreSQL in one query.

PlaceOrder: the units are really stored at site A (StoreUnit over gRPC, events through Kafka
to site B's matching); orders are placed at site B, so each allocation calls A's storage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import grpc
from aiokafka import TopicPartition
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.hospital.v1 import hospital_pb2_grpc as hpb_grpc
from cellbank.storage.v1 import storage_service_pb2 as spb
from cellbank.storage.v1 import storage_service_pb2_grpc as spb_grpc

from deploy.demo import auth
from deploy.identities import service_oidc
from deploy.infra import Endpoints
from deploy.processes import hla_reference_dir
from services.matching.entrypoints.main import SPEC as MATCHING_SPEC
from services.storage.entrypoints.main import SPEC as STORAGE_SPEC
from shared import kafka_clients
from shared.chain_key import ChainKey
from shared.db import drop_database
from shared.kafka_admin import ensure_topics
from shared.service_host import ServiceHost
from shared.settings import Settings
from shared.topics import TopicSpec
from shared.waits import eventually
from tests.bench_report import Row, render
from tests.support.trust import site_trust_settings

H1 = auth("hosp-h1")
PATIENT = hpb.PatientProfile(
    patient_ref="BENCH-1", weight_kg=70, abo="A", cmv=hpb.CMV_STATUS_NEGATIVE,
    hla_alleles=["A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*07:01"],
)  # fmt: skip
HLA_POOL = {
    "A": ["A*01:01", "A*02:01", "A*03:01", "A*11:01", "A*24:02", "A*32:01"],
    "B": ["B*07:02", "B*08:01", "B*44:02", "B*51:01", "B*57:01", "B*35:01"],
    "C": ["C*01:02", "C*03:04", "C*04:01", "C*05:01", "C*06:02", "C*07:02"],
}
KIR_POOL = ["KIR2DL1", "KIR2DL2", "KIR2DL3", "KIR3DL1", "KIR3DL2", "KIR2DS1", "KIR2DS2", "KIR3DS1"]


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def settings(endpoints: Endpoints, site: str, service: str, **extra: object) -> Settings:
    base = Settings(
        site_id=site, service=service, kafka_bootstrap=endpoints.kafka_bootstrap,
        database_url=endpoints.database_url,
        database_name=f"cellbank_bench_{service}_{uuid.uuid4().hex[:6]}",
        **service_oidc(endpoints.identity, site, service),
        hla_reference=hla_reference_dir(),  # KIR ligands classified as in production
        **site_trust_settings(site),
        chain_key=ChainKey.generate(),
    )  # fmt: skip
    return dataclasses.replace(base, **extra)  # type: ignore[arg-type]


def percentiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def _inventory(units: int, sites: int, rng: random.Random) -> tuple[list, list, list]:
    donors = []
    for d in range(max(1, units // 50)):
        hla = [a for locus in HLA_POOL.values() for a in rng.sample(locus, 2)]
        kir = sorted(set(rng.sample(KIR_POOL, rng.randint(3, 7))))
        donors.append((f"D{d:06d}", hla, kir, rng.choice(["NEGATIVE", "POSITIVE", "UNKNOWN"]),
                       rng.choice(["A", "B", "AB", "O"])))  # fmt: skip
    site_ids = [f"S{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(sites)]
    inventory, origins = [], []
    today = date.today()
    for u in range(units):
        unit_id, site = f"BENCH-{u:07d}", site_ids[u % sites]
        product = rng.choices(["NK-ALLO", "CAR-NK-19", "VST-CMV"], weights=[8, 1, 1])[0]
        viable, cd3 = rng.uniform(1e8, 3e9), rng.uniform(0, 2e7)
        expires = today + timedelta(days=rng.randint(30, 1800))
        donor = donors[u % len(donors)][0]
        inventory.append((unit_id, site, f"G{u:012d}", product, "STORED", expires, viable, cd3, 1))
        origins.append((unit_id, donor))
    return donors, inventory, origins


BASELINE_SQL = """
SELECT i.unit_id,
  (CASE WHEN d.cmv = 'NEGATIVE' THEN 15 WHEN d.cmv = 'POSITIVE' THEN -15 ELSE -5 END
   + CASE WHEN d.abo = 'A' THEN 10 WHEN d.abo = 'O' THEN 5 ELSE -10 END
   - 2 * 6.0 + 5 * greatest(0, 1 - (i.expires_on - current_date) / 1826.0)) AS score
FROM candidate_units i JOIN candidate_origins r USING (unit_id)
LEFT JOIN candidate_donors d USING (donor_id)
WHERE i.status = 'STORED' AND i.product_type LIKE 'NK-%' AND i.reserved_for = ''
  AND i.viable_nk_cells / 70 BETWEEN 5e6 AND 3e7 AND i.cd3_cells / 70 <= 2e5
  AND i.expires_on > current_date
ORDER BY score DESC, i.expires_on, i.unit_id LIMIT 10
"""


async def search_latency(
    endpoints: Endpoints, units: int, sites: int, calls: int
) -> dict[str, float]:
    host = ServiceHost(MATCHING_SPEC, settings(endpoints, "BEN", "matching"))
    await host.start()
    try:
        assert host.pool is not None
        donors, inventory, origins = _inventory(units, sites, random.Random(7))
        progress(f"search: loading {units:,} units of {sites} sites into matching's read model")
        async with host.pool.acquire() as conn:
            await conn.copy_records_to_table(
                "candidate_donors",
                records=donors,
                columns=["donor_id", "hla", "kir_genes", "cmv", "abo"],
            )
            await conn.copy_records_to_table(
                "candidate_origins", records=origins, columns=["unit_id", "donor_id"]
            )
            await conn.copy_records_to_table("candidate_units", records=inventory, columns=[
                "unit_id", "site_id", "din", "product_type", "status", "expires_on",
                "viable_nk_cells", "cd3_cells", "version"])  # fmt: skip
            await conn.execute("ANALYZE")
        request = hpb.SearchInventoryRequest(
            patient=PATIENT, product_type=hpb.PRODUCT_TYPE_NK, dose_cells_per_kg_min=5e6,
            dose_cells_per_kg_max=3e7, limit=10,
        )  # fmt: skip
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = hpb_grpc.HospitalServiceStub(channel)
            loaded = time.perf_counter()
            first = await eventually(
                lambda: stub.SearchInventory(request, metadata=H1),
                until=lambda r: len(r.candidates) == 10, what="the index to load", timeout=120,
            )  # fmt: skip
            index_load = time.perf_counter() - loaded
            assert first.candidates[0].score >= first.candidates[-1].score
            for _ in range(20):  # warm-up
                await stub.SearchInventory(request, metadata=H1)
            latencies = []
            for _ in range(calls):
                started = time.perf_counter()
                await stub.SearchInventory(request, metadata=H1)
                latencies.append(time.perf_counter() - started)
        baseline = []
        async with host.pool.acquire() as conn:
            for _ in range(max(20, calls // 5)):
                started = time.perf_counter()
                await conn.fetch(BASELINE_SQL)
                baseline.append(time.perf_counter() - started)
        p50, p99 = percentiles(latencies)
        b50, b99 = percentiles(baseline)
        return {"p50": p50, "p99": p99, "base_p50": b50, "base_p99": b99, "load_s": index_load}
    finally:
        await host.stop(grace=1)
        await drop_database(endpoints.database_url, host.settings.database_name)


async def order_latency(endpoints: Endpoints, orders: int) -> tuple[float, float, float, float]:
    """PlaceOrder → ALLOCATED p50/p99 (ms), then the ReserveUnit-alone baseline's."""
    storage = ServiceHost(STORAGE_SPEC, settings(endpoints, "BNA", "storage"))
    await storage.start()
    matching: ServiceHost | None = None
    try:
        assert storage.pool is not None
        units = [f"BNA-UNIT-{uuid.uuid4().hex[:8]}-{i:04d}" for i in range(orders)]
        expires = date.today() + timedelta(days=365)
        await storage.pool.executemany(
            "INSERT INTO released_units VALUES ($1, 'BNA', 'b', 'd', 'G100126000001', 'S1001-01',"
            " 'NK-ALLO', 7e8, 2e5, 20, $2, false)",
            [(u, expires) for u in units],
        )
        matching = ServiceHost(
            MATCHING_SPEC,
            settings(endpoints, "BNB", "matching",
                     storage_endpoints={"BNA": f"127.0.0.1:{storage.port}"}),
        )  # fmt: skip
        await matching.start()
        op = auth("op-alice")
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{storage.port}") as s_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{matching.port}") as m_channel,
        ):
            st = spb_grpc.StorageServiceStub(s_channel)
            hospital = hpb_grpc.HospitalServiceStub(m_channel)
            per_box = 100
            await st.RegisterTank(
                spb.RegisterTankRequest(tank_id="BNA-T1", racks=1, reason="bench",
                                        boxes_per_rack=(orders + per_box - 1) // per_box,
                                        positions_per_box=per_box), metadata=op,
            )  # fmt: skip
            progress(f"orders: storing {orders} units at site A")
            for i, unit in enumerate(units):
                address = f"BNA-T1/R1/B{i // per_box + 1}/P{i % per_box + 1:02d}"
                await st.StoreUnit(
                    spb.StoreUnitRequest(unit_id=unit, address=address, reason="bench"), metadata=op
                )
            request = hpb.SearchInventoryRequest(
                patient=PATIENT, product_type=hpb.PRODUCT_TYPE_NK,
                dose_cells_per_kg_min=9.99e6, dose_cells_per_kg_max=1.001e7, limit=100,
            )  # fmt: skip
            await eventually(
                lambda: hospital.SearchInventory(request, metadata=H1),
                until=lambda r: len(r.candidates) == min(orders, 100),
                what="site B's matching to see site A's units", timeout=120,
            )  # fmt: skip
            latencies = []
            progress(f"orders: {orders} orders at site B, one at a time")
            for n in range(orders):
                order = hpb.PlaceOrderRequest(
                    request_id=f"bench-{n}", patient=PATIENT, product_type=hpb.PRODUCT_TYPE_NK,
                    dose_cells_per_kg_min=9.99e6, dose_cells_per_kg_max=1.001e7,
                )  # fmt: skip
                started = time.perf_counter()
                placed = await hospital.PlaceOrder(order, metadata=H1)
                latencies.append(time.perf_counter() - started)
                if placed.status != hpb.ORDER_STATUS_ALLOCATED:
                    raise RuntimeError(f"order {n} not allocated: {placed.status_reason}")
            # Baseline: the saga's one remote call alone — ReserveUnit at A from the client,
            # as many calls, one at a time, on units stored after the orders.
            spare = [f"{u}-spare" for u in units]
            await storage.pool.executemany(
                "INSERT INTO released_units VALUES ($1, 'BNA', 'b', 'd', 'G100126000001',"
                " 'S1001-01', 'NK-ALLO', 7e8, 2e5, 20, $2, false)",
                [(u, expires) for u in spare],
            )
            await st.RegisterTank(
                spb.RegisterTankRequest(tank_id="BNA-T2", racks=1, reason="bench",
                                        boxes_per_rack=(orders + per_box - 1) // per_box,
                                        positions_per_box=per_box), metadata=op,
            )  # fmt: skip
            reserve_only = []
            service = auth("svc-matching")
            hold = datetime.now(UTC) + timedelta(hours=1)
            for i, unit in enumerate(spare):
                address = f"BNA-T2/R1/B{i // per_box + 1}/P{i % per_box + 1:02d}"
                await st.StoreUnit(
                    spb.StoreUnitRequest(unit_id=unit, address=address, reason="bench"), metadata=op
                )
                reserve = spb.ReserveUnitRequest(unit_id=unit, order_id=f"ORD-{i}", reason="bench")
                reserve.hold_until.FromDatetime(hold)
                started = time.perf_counter()
                await st.ReserveUnit(reserve, metadata=service)
                reserve_only.append(time.perf_counter() - started)
        return (*percentiles(latencies), *percentiles(reserve_only))
    finally:
        if matching is not None:
            await matching.stop(grace=1)
            await drop_database(endpoints.database_url, matching.settings.database_name)
        await storage.stop(grace=1)
        await drop_database(endpoints.database_url, storage.settings.database_name)


async def run(endpoints: Endpoints, scale: float) -> list[Row]:
    units = max(10_000, int(100_000 * min(scale, 1.0)))
    s = await search_latency(endpoints, units, sites=10, calls=max(100, int(1000 * scale)))
    orders = max(50, int(200 * scale))
    o50, o99, r50, r99 = await order_latency(endpoints, orders)
    samples = max(50, int(200 * scale))
    p50, p99 = await propagation_latency(endpoints, samples)
    progress(f"propagation baseline: {samples} records through a bare producer and consumer")
    k50, k99 = await kafka_latency(endpoints.kafka_bootstrap, samples)
    search = f"SearchInventory, {units:,} units of 10 sites"
    sql = "one SQL filter + ORDER BY"
    order = f"PlaceOrder -> ALLOCATED at B, unit of A, {orders} orders"
    reserve = "ReserveUnit alone at A"
    hop = "append at A -> in B's projection"
    bare = "bare producer -> consumer"
    return [
        Row(f"{search} p50", "ms", s["p50"], s["base_p50"], sql, higher_is_better=False),
        Row(f"{search} p99", "ms", s["p99"], s["base_p99"], sql, target=25, higher_is_better=False),
        Row(f"{order} p50", "ms", o50, r50, reserve, higher_is_better=False),
        Row(f"{order} p99", "ms", o99, r99, reserve, target=100, higher_is_better=False),
        Row(f"cross-site propagation ({hop}) p50", "ms", p50, k50, bare, higher_is_better=False),
        Row(f"cross-site propagation ({hop}) p99", "ms", p99, k99, bare, target=250,
            higher_is_better=False),
    ]  # fmt: skip


async def _standalone(scale: float) -> None:  # pragma: no cover - manual runs
    import os

    endpoints = Endpoints(
        os.environ["CELLBANK_KAFKA_BOOTSTRAP"], os.environ["CELLBANK_DATABASE_URL"]
    )
    print(render(await run(endpoints, scale), "matching"))


async def kafka_latency(bootstrap: str, samples: int) -> tuple[float, float]:
    """Baseline of propagation: one record produced (acks=all) → received by a bare consumer
    already at the end of the topic, one at a time; p50/p99 in ms."""
    topic = f"bench.latency.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, -1, "bench")], partitions=3)
    producer = kafka_clients.producer(bootstrap, acks="all", enable_idempotence=True)
    consumer = kafka_clients.consumer(
        topic, bootstrap=bootstrap, group_id=f"bench.latency.{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=100,
    )  # fmt: skip
    await producer.start()
    await consumer.start()
    try:

        async def assignment() -> set[TopicPartition]:
            return consumer.assignment()

        await eventually(
            assignment,
            until=lambda assigned: len(assigned) == 3,
            what="the baseline consumer's assignment",
            timeout=60,
        )
        for tp in consumer.assignment():
            await consumer.position(tp)  # pinned at the end before the first record
        latencies = []
        for n in range(samples):
            key = f"k{n}".encode()
            started = time.perf_counter()
            await producer.send_and_wait(topic, b"x" * 300, key=key)
            deadline = time.monotonic() + 30
            while not any(
                r.key == key
                for rs in (await consumer.getmany(timeout_ms=1000)).values()
                for r in rs
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"record {n} not received within 30 s")
            latencies.append(time.perf_counter() - started)
        return percentiles(latencies)
    finally:
        await consumer.stop()
        await producer.stop()


async def propagation_latency(endpoints: Endpoints, samples: int) -> tuple[float, float]:
    """Append at site A (StoreUnit at A's storage) → the unit visible in site B's projection
    (B's matching inventory): p50/p99 in ms, through the relay, Kafka and B's consumer."""
    storage = ServiceHost(STORAGE_SPEC, settings(endpoints, "PRA", "storage"))
    matching = ServiceHost(MATCHING_SPEC, settings(endpoints, "PRB", "matching"))
    await storage.start()
    await matching.start()
    try:
        assert storage.pool is not None and matching.pool is not None
        units = [f"PRA-UNIT-{uuid.uuid4().hex[:8]}-{i:04d}" for i in range(samples)]
        await storage.pool.executemany(
            "INSERT INTO released_units VALUES ($1, 'PRA', 'b', 'd', 'G100126000001', 'S1001-01',"
            " 'NK-ALLO', 7e8, 2e5, 20, $2, false)",
            [(u, date.today() + timedelta(days=365)) for u in units],
        )
        op = auth("op-alice")
        latencies = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{storage.port}") as channel:
            st = spb_grpc.StorageServiceStub(channel)
            await st.RegisterTank(
                spb.RegisterTankRequest(tank_id="PRA-T1", racks=1, boxes_per_rack=(samples + 99) // 100,
                                        positions_per_box=100, reason="bench"), metadata=op,
            )  # fmt: skip
            progress(f"propagation: {samples} appends at site A, each awaited at site B")
            for i, unit in enumerate(units):
                address = f"PRA-T1/R1/B{i // 100 + 1}/P{i % 100 + 1:02d}"
                started = time.perf_counter()
                await st.StoreUnit(
                    spb.StoreUnitRequest(unit_id=unit, address=address, reason="bench"), metadata=op
                )
                # Polling B's database every 2 ms is the measurement (nothing else tells).
                while not await matching.pool.fetchval(  # noqa: ASYNC110
                    "SELECT 1 FROM candidate_units WHERE unit_id = $1", unit
                ):
                    await asyncio.sleep(0.002)
                latencies.append(time.perf_counter() - started)
        return percentiles(latencies)
    finally:
        for host in (matching, storage):
            await host.stop(grace=1)
            await drop_database(endpoints.database_url, host.settings.database_name)


if __name__ == "__main__":
    asyncio.run(_standalone(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0))
