"""Faults under load (`make test-chaos`): a three-site network of real processes on a private
three-broker Kafka cluster (KRaft, topics RF 3, min.insync.replicas=2) and PostgreSQL server, the
simulator and hospitals ordering all along, while each kind of process is SIGKILLed and
restarted (a service with its relay and consumers — storage, matching, delivery, donor intake),
one broker is SIGKILLed, then another after the first returned, then the active controller
(writes go on with two of three), two brokers are down for 10 s at once (writes wait, none is
lost), and PostgreSQL is stopped for 10 s. Afterwards every site's live state equals its replay
from the log, every committed event is on Kafka exactly once in the site's hash chain, and
nothing was promised twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.hospital.v1 import hospital_pb2_grpc as hpb_grpc
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.operator.v1 import operator_service_pb2_grpc as opb_grpc

from deploy.identities import Caller
from deploy.infra import Endpoints, Infrastructure
from deploy.kafka_principals import ADMIN
from deploy.kafka_provision import principal_env, provision_network
from deploy.local_kafka import kafka_libs
from deploy.local_kafka_cluster import LocalKafkaCluster
from deploy.network import NetworkProcess, ServiceProcess, plan, simulator_process
from deploy.processes import REPO_ROOT, claim, free_port_block, reap_abandoned
from deploy.replay import replay_site
from deploy.run import endpoints_document, provision, write_endpoints_file
from shared.db import database_name, drop_database
from shared.kafka_admin import end_offsets
from shared.replay import differences, site_digests, site_events_from_log
from shared.topics import SERVICE_TOPICS, TOPICS
from shared.waits import eventually
from tests.support.trust import session_trust, trust_list

pytestmark = pytest.mark.chaos
SITES = ["LON", "MAN", "EDI"]
OP = Caller("op-alice")
PATIENT = hpb.PatientProfile(
    patient_ref="PT-CHAOS", weight_kg=70, abo="O", cmv=hpb.CMV_STATUS_POSITIVE,
    hla_alleles=["A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*07:01"],
)  # fmt: skip
TIMINGS: dict[str, float] = {}  # seconds per phase, printed at the end (the closing notes)
PASSED: list[bool] = []


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[LocalKafkaCluster]:
    """Three brokers of this test alone, authenticated with every principal provisioned, in a
    claimed folder: a run that dies without cleaning up (SIGKILL) has its brokers and servers
    reaped by the next one. This process's own clients act as the admin."""
    reap_abandoned(REPO_ROOT / ".cellbank", "chaos-*")
    root = REPO_ROOT / ".cellbank" / f"chaos-{uuid.uuid4().hex[:8]}"
    claim(root)
    cluster = LocalKafkaCluster(
        root / "kafka",
        provision=lambda c: TIMINGS.update(
            {
                "principals provisioned": provision_network(
                    kafka_libs(), c.bootstrap, c.admin_security, c.credentials, SITES
                )
            }
        ),
    )
    started = time.monotonic()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in principal_env(cluster.credentials, ADMIN).items():
                patch.setenv(name, value)
            cluster.start()
            TIMINGS["cluster start"] = time.monotonic() - started
            yield cluster
    finally:
        cluster.stop()
        print(json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))
        if PASSED:
            shutil.rmtree(
                root, ignore_errors=True
            )  # else the brokers' logs stay for a look (the next run reaps them)


@pytest.fixture(scope="module")
def private_infra(kafka_cluster: LocalKafkaCluster) -> Iterator[Infrastructure]:
    """PostgreSQL (and Keycloak) of this test alone (it stops and restarts them), on the
    cluster above with the production topology's topics (RF 3, min.insync.replicas=2); the
    services run as their own principals (passwords from the cluster's credentials)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CELLBANK_KAFKA_BOOTSTRAP", "CELLBANK_DATABASE_URL")
    }
    env["CELLBANK_KAFKA_BOOTSTRAP"] = kafka_cluster.bootstrap
    env["CELLBANK_KAFKA_CREDENTIALS_DIR"] = str(kafka_cluster.credentials)
    env["CELLBANK_TOPIC_REPLICATION_FACTOR"] = "3"
    infra = Infrastructure(kafka_cluster.data_dir.parent / "infra", env=env, sites=SITES)
    infra.start()
    try:
        yield infra
    finally:
        infra.stop()


EVENT_TOPICS = sorted(SERVICE_TOPICS.values())
REPLICATED = [t.name for t in TOPICS] + ["__consumer_offsets"]  # at least these


async def written(bootstrap: str) -> int:
    """Records acknowledged on the services' event topics (-1 while metadata is unavailable)."""
    from aiokafka.errors import KafkaError

    try:
        return sum((await asyncio.wait_for(end_offsets(bootstrap, EVENT_TOPICS), 15)).values())
    except (KafkaError, OSError, TimeoutError):
        return -1


async def fenced(cluster: LocalKafkaCluster, node_ids: list[int]) -> None:
    """The controller has dropped the killed brokers from the metadata."""
    await eventually(
        cluster.registered_brokers,
        until=lambda live: bool(live) and not live & set(node_ids),
        what=f"brokers {node_ids} fenced", timeout=60, interval=0.5,
    )  # fmt: skip


async def fully_replicated(cluster: LocalKafkaCluster) -> None:
    await eventually(
        lambda: cluster.under_replicated(REPLICATED), until=lambda lagging: not lagging,
        what="every partition back to 3 in-sync replicas", timeout=180, interval=0.5,
    )  # fmt: skip


async def writes_go_on(cluster: LocalKafkaCluster, down: int) -> None:
    """Once the controller has fenced the killed broker, the services' relays still get
    writes acknowledged (acks=all with the two remaining in-sync replicas)."""
    await fenced(cluster, [down])
    before = await eventually(lambda: written(cluster.bootstrap), until=lambda n: n >= 0,
                              what="end offsets", timeout=60)  # fmt: skip
    await eventually(lambda: written(cluster.bootstrap), until=lambda n: n > before,
                     what=f"writes with broker {down} down", timeout=90, interval=0.5)  # fmt: skip


async def one_broker_down(cluster: LocalKafkaCluster, node_id: int, fault: str) -> None:
    """SIGKILL one broker; producers (acks=all, 2 of 3 in sync) keep writing; it returns and
    catches up before the next fault."""
    started = time.monotonic()
    await asyncio.to_thread(cluster.kill, node_id)
    await writes_go_on(cluster, node_id)
    await asyncio.to_thread(cluster.start_node, node_id)
    await fully_replicated(cluster)
    TIMINGS[fault] = time.monotonic() - started


async def active_controller(cluster: LocalKafkaCluster) -> int:
    leader = await eventually(
        lambda: asyncio.to_thread(cluster.controller_leader), until=lambda n: n is not None,
        what="an active controller", timeout=60, interval=0.2,
    )  # fmt: skip
    assert leader is not None
    return leader


async def controller_failover(cluster: LocalKafkaCluster) -> None:
    """SIGKILL the active controller: another voter takes over and the cluster goes on."""
    started = time.monotonic()
    old = await active_controller(cluster)
    await asyncio.to_thread(cluster.kill, old)
    new = await eventually(
        lambda: asyncio.to_thread(cluster.controller_leader),
        until=lambda leader: leader is not None and leader != old,
        what=f"a new active controller after node {old}", timeout=60, interval=0.2,
    )  # fmt: skip
    TIMINGS[f"controller election ({old} -> {new})"] = time.monotonic() - started
    await writes_go_on(cluster, old)
    await asyncio.to_thread(cluster.start_node, old)
    await fully_replicated(cluster)
    TIMINGS["controller failover"] = time.monotonic() - started


async def two_brokers_down(cluster: LocalKafkaCluster, node_ids: list[int]) -> None:
    """Two of three down: no partition has 2 in-sync replicas and the quorum is lost, so
    producers wait and retry (nothing acknowledged is lost); both return together."""
    started = time.monotonic()
    for node_id in node_ids:
        await asyncio.to_thread(cluster.kill, node_id)
    await asyncio.sleep(10)  # the outage itself (the fault being tested), not a wait
    await asyncio.to_thread(cluster.start_nodes, node_ids)
    await fully_replicated(cluster)
    TIMINGS["two brokers down 10 s"] = time.monotonic() - started


async def serving(processes: list[ServiceProcess]) -> None:
    await asyncio.gather(*(p.wait_serving(timeout=90) for p in processes))


async def published(process: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(process.address) as channel:
        ops = opb_grpc.OperatorServiceStub(channel)
        await eventually(
            lambda: ops.GetStoreStatus(opb.GetStoreStatusRequest(), metadata=OP, timeout=5),
            until=lambda s: s.published_position == s.head_position,
            what=f"{process.site} {process.service}'s relay to publish everything", timeout=120,
        )  # fmt: skip


async def hospitals_ordering(document: dict, stop: asyncio.Event, placed: list[hpb.Order]) -> None:
    """Each demo hospital orders from its home site every couple of seconds (some will be
    rejected when stock runs out); transient failures during the faults are retried later."""
    n = 0
    while not stop.is_set():
        for hospital in document["hospitals"]:
            auth = Caller(hospital["client_id"])  # the hospital system's client credentials
            n += 1
            request = hpb.PlaceOrderRequest(
                request_id=f"chaos-{n}-{uuid.uuid4().hex[:6]}", patient=PATIENT,
                product_type=hpb.PRODUCT_TYPE_NK, dose_cells_per_kg_min=5e6,
                dose_cells_per_kg_max=3e7,
            )  # fmt: skip
            with contextlib.suppress(grpc.aio.AioRpcError):
                async with grpc.aio.insecure_channel(hospital["hospital_api"]) as channel:
                    placed.append(
                        await hpb_grpc.HospitalServiceStub(channel).PlaceOrder(
                            request, metadata=auth, timeout=20
                        )
                    )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)


async def crash_and_restart(process: ServiceProcess, endpoints: Endpoints, logs: Path) -> None:
    assert process.proc is not None
    process.proc.kill()  # SIGKILL: no cleanup, in-flight work lost
    process.proc.wait()
    process.start(endpoints, logs)
    await process.wait_serving(timeout=90)


async def test_nothing_is_lost_or_promised_twice_through_crashes_and_restarts(
    kafka_cluster: LocalKafkaCluster, private_infra: Infrastructure, tmp_path: Path
):
    endpoints = private_infra.endpoints
    logs = tmp_path / "logs"
    await provision(endpoints, SITES)
    ports = 10 * len(SITES)  # plan(): base + 10 x site + service
    processes = plan(
        SITES, free_port_block(ports), free_port_block(ports, start=25000), session_trust()
    )
    extras: list[NetworkProcess] = []
    stop = asyncio.Event()
    placed: list[hpb.Order] = []
    started = time.monotonic()
    try:
        await _faults_and_checks(
            kafka_cluster, private_infra, endpoints, processes, extras, stop, placed, tmp_path, logs
        )
        TIMINGS["test (network start, faults, checks)"] = time.monotonic() - started
        PASSED.append(True)
    finally:
        stop.set()
        for extra in extras:
            extra.stop()
        for p in reversed(processes):  # whatever failed, nothing is left running
            p.stop()


async def _faults_and_checks(
    cluster: LocalKafkaCluster,
    private_infra: Infrastructure,
    endpoints: Endpoints,
    processes: list[ServiceProcess],
    extras: list[NetworkProcess],
    stop: asyncio.Event,
    placed: list[hpb.Order],
    tmp_path: Path,
    logs: Path,
) -> None:
    load: asyncio.Task[None] | None = None
    try:
        for p in processes:
            p.start(endpoints, logs)
        await serving(processes)
        endpoints_file = tmp_path / "endpoints.json"
        document = endpoints_document(
            processes, SITES, endpoints.kafka_bootstrap, endpoints.database_url,
            identity=endpoints.identity,
        )  # fmt: skip
        write_endpoints_file(endpoints_file, document)
        simulator = simulator_process(endpoints_file, donors=2, interval=3, courier_minutes=0.2)
        simulator.start(logs)
        extras.append(simulator)
        load = asyncio.create_task(hospitals_ordering(document, stop, placed))
        by = {(p.site, p.service): p for p in processes}
        await eventually(lambda: asyncio.sleep(0, len(placed)), until=lambda n: n >= 4,
                         what="the first orders", timeout=120)  # fmt: skip

        for site, service in (("LON", "storage"), ("MAN", "matching"), ("EDI", "delivery"),
                              ("MAN", "donor_intake"), ("EDI", "storage")):  # fmt: skip
            await crash_and_restart(by[(site, service)], endpoints, logs)
            simulator.check_alive()
        assert private_infra.postgres is not None
        # One broker, then another after it returned: the active controller (a failover).
        controller = await active_controller(cluster)
        first = min(n for n in cluster.nodes if n != controller)
        await one_broker_down(cluster, first, f"broker {first} SIGKILLed and back")
        simulator.check_alive()
        await controller_failover(cluster)
        simulator.check_alive()
        controller = await active_controller(cluster)
        await two_brokers_down(cluster, [n for n in cluster.nodes if n != controller])
        simulator.check_alive()
        private_infra.postgres.stop()
        await asyncio.sleep(10)
        private_infra.postgres.start()
        before = len(placed)
        await eventually(lambda: asyncio.sleep(0, len(placed)), until=lambda n: n >= before + 4,
                         what="orders placed again after the outages", timeout=180)  # fmt: skip
        for p in processes:  # every service recovered by itself
            assert p.proc is not None and p.proc.poll() is None, f"{p.site} {p.service} died"
    finally:
        stop.set()
        for extra in extras:
            extra.stop()
        if load is not None:
            with contextlib.suppress(Exception):
                await load

    for p in processes:
        await published(p)
    # Never promised twice: no unit in two live orders of any site.
    live = [o for o in placed if o.status == hpb.ORDER_STATUS_ALLOCATED]
    units = [u.unit_id for o in live for u in o.units]
    assert len(units) == len(set(units))
    for site in SITES:
        dbs = {service: database_name(site, service) for service in SERVICE_TOPICS}
        # Every committed event is on Kafka, once, in the site's hash chain.
        for service, dbname in dbs.items():
            on_log = await site_events_from_log(
                endpoints.kafka_bootstrap, SERVICE_TOPICS[service], site, trust=trust_list()
            )
            digests = await site_digests(endpoints.database_url, {service: dbname})
            stored = await _event_ids(endpoints.database_url, dbname)
            assert [e.event_id for e in on_log] == stored, f"{site} {service}: log ≠ store"
            assert digests[f"{service}/events"]
        await quiet(endpoints, dbs)
        differ: list[str] = []
        for _ in range(3):  # a straggler (a resumed order, a renewal) re-runs the comparison
            scratch = {s: f"cellbank_chaos_{site.lower()}_{s}_{uuid.uuid4().hex[:4]}" for s in dbs}
            try:
                await replay_site(
                    site, bootstrap=endpoints.kafka_bootstrap,
                    server_url=endpoints.database_url, targets=scratch,
                    restore_events_from_log=False,
                )  # fmt: skip
                replayed = await site_digests(endpoints.database_url, scratch, with_events=False)
                live_digests = await site_digests(endpoints.database_url, dbs, with_events=False)
                differ = differences(live_digests, replayed)
            finally:
                for dbname in scratch.values():
                    await drop_database(endpoints.database_url, dbname)
            if not differ:
                break
        assert differ == [], f"{site}: live differs from its replay in {differ}"
    print(json.dumps({"orders": len(placed), "allocated": len(live)}))


async def quiet(endpoints: Endpoints, dbs: dict[str, str]) -> None:
    """No order of the site still awaiting allocation, and every projection of the site
    caught up with the log (its checkpoints at the topics' ends)."""
    from shared.db import create_pool, with_database
    from shared.kafka_admin import end_offsets

    async def settled() -> str:
        for service, dbname in dbs.items():
            pool = await create_pool(
                with_database(endpoints.database_url, dbname), min_size=1, max_size=1
            )
            try:
                if service == "matching" and await pool.fetchval(
                    "SELECT count(*) FROM (SELECT DISTINCT ON (aggregate_id) event_type FROM events"
                    " WHERE aggregate_type = 'order' ORDER BY aggregate_id, aggregate_version DESC) t"
                    " WHERE event_type LIKE '%OrderPlaced' OR event_type LIKE '%AllocationLost'"
                ):
                    return "an order awaits allocation"
                rows = await pool.fetch(
                    'SELECT projection, topic, partition, "offset" FROM projection_checkpoints'
                )
            finally:
                await pool.close()
            topics = sorted({r["topic"] for r in rows})
            ends = await end_offsets(endpoints.kafka_bootstrap, topics) if topics else {}
            for r in rows:
                end = next(
                    (
                        v
                        for tp, v in ends.items()
                        if tp.topic == r["topic"] and tp.partition == r["partition"]
                    ),
                    0,
                )
                if r["offset"] + 1 < end:
                    return f"{service}.{r['projection']} at {r['offset'] + 1}/{end} of {r['topic']}[{r['partition']}]"
        return ""

    await eventually(settled, until=lambda why: not why, what="the site to settle", timeout=180)


async def _event_ids(server_url: str, dbname: str) -> list[str]:
    from shared.db import create_pool, with_database

    pool = await create_pool(with_database(server_url, dbname), min_size=1, max_size=1)
    try:
        rows = await pool.fetch("SELECT event_id::text FROM events ORDER BY position")
        return [r["event_id"] for r in rows]
    finally:
        await pool.close()
