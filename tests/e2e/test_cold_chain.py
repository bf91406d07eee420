"""The Faust cold-chain monitor against the real broker: excursions and silent sensors
quarantine a tank's units; a short spike does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from cellbank.storage.v1 import events_pb2 as epb
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy.demo import auth, now
from deploy.identities import demo_realm
from deploy.infra import Endpoints
from deploy.processes import REPO_ROOT, stop_process
from services.storage.adapters.telemetry_codec import BATCH_HEADERS, encode_batch
from services.storage.coldchain.watch import unix_ms
from shared import kafka_clients
from shared.waits import eventually
from tests.e2e.bank_site import BankSite, bank_site, projected
from tests.e2e.test_storage import register_tank, released_units, store
from tests.support.plugin import make_topic
from tests.support.topic_reader import records_so_far

OP = auth("op-alice")


@pytest.fixture
async def site(endpoints: Endpoints):
    async with bank_site(endpoints, with_storage=True) as running:
        yield running


def start_monitor(
    site: BankSite,
    endpoints: Endpoints,
    topic: str,
    app_id: str,
    log: Path,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CELLBANK_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "CELLBANK_STORAGE_ENDPOINTS": f"{site.site_id}=127.0.0.1:{site.storage_port}",
        **endpoints.identity.service_env(),
        "CELLBANK_OIDC_CLIENT_ID": "monitor-coldchain",
        "CELLBANK_OIDC_CLIENT_SECRET": demo_realm().clients["monitor-coldchain"].secret,
        "CELLBANK_TELEMETRY_TOPIC": topic,
        "CELLBANK_COLDCHAIN_APP_ID": app_id,
        "CELLBANK_COLDCHAIN_EXCURSION_MINUTES": "10",
        "CELLBANK_COLDCHAIN_SILENCE_MINUTES": "15",
        # The timeline is in the past: judged by event time alone, not by the wall clock.
        "CELLBANK_COLDCHAIN_LIVE_CHECK_S": "3600",
        "CELLBANK_COLDCHAIN_DATADIR": str(log.parent / "faust-data"),
        **(extra_env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "services.storage.entrypoints.coldchain_worker",
        "worker",
        "-l",
        "info",
        "--without-web",  # no fixed web port (6066) to collide with another run on the machine
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped with deploy.processes.stop_process
        )  # fmt: skip


def reading(site_id: str, tank_id: str, celsius: float, at: datetime, device: str = "") -> bytes:
    message = epb.TemperatureReading(
        site_id=site_id, tank_id=tank_id, celsius=celsius, device=device
    )
    message.measured_at.FromDatetime(at)
    return message.SerializeToString()


async def publish_timeline(bootstrap: str, topic: str, site_id: str, tanks: dict[str, str]) -> None:
    """40 minutes of one-a-minute readings, ending now: A warms up for good at minute 20, B
    spikes for 5 minutes, C falls silent after minute 10. A's sensor sends batches (one record
    per 5-minute interval), B's and C's single readings: the monitor takes both."""
    start = now() - timedelta(minutes=40)
    producer = kafka_clients.producer(bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    batched: list[tuple[float, datetime]] = []
    try:
        for minute in range(41):
            at = start + timedelta(minutes=minute)
            temps = {
                "A": -140.0 if minute >= 20 else -190.0,
                "B": -140.0 if 25 <= minute < 30 else -190.0,
                "C": -190.0 if minute <= 10 else None,
            }
            for name, celsius in temps.items():
                tank = tanks[name]
                if name == "A" and celsius is not None:
                    batched.append((celsius, at))
                    if minute % 5 == 4 or minute == 40:
                        value = encode_batch(
                            site_id, tank, [c for c, _ in batched],
                            [unix_ms(t) for _, t in batched],
                        )  # fmt: skip
                        await producer.send(topic, value, key=tank.encode(), headers=BATCH_HEADERS)
                        batched = []
                elif celsius is not None:
                    await producer.send(
                        topic, reading(site_id, tank, celsius, at), key=tank.encode()
                    )
        await producer.flush()
    finally:
        await producer.stop()


async def spike_seen_and_cleared(bootstrap: str, changelog: str, tank_id: str) -> None:
    """The monitor persists a tank's watch when its excursion flags change: a record with the
    spike open followed by one with it closed proves the whole spike was processed."""

    async def history() -> list[dict[str, object]]:
        key = tank_id.encode()
        records = await records_so_far(bootstrap, changelog)
        return [json.loads(r.value) for r in records if r.key == key and r.value]

    def opened_then_closed(watches: list[dict[str, object]]) -> bool:
        opened = [i for i, w in enumerate(watches) if w["above_since"]]
        return bool(opened) and any(not w["above_since"] for w in watches[opened[0] :])

    await eventually(
        history, until=opened_then_closed, what=f"{tank_id}'s spike to be processed", timeout=60
    )


def sharing_a_partition(site_id: str, partitions: int = 3) -> dict[str, str]:
    """Tank names where C's readings share a partition with A's: C's silence is then judged by
    that partition's event time alone (deterministic; no wall clock)."""
    partition_of = DefaultPartitioner()
    everything = list(range(partitions))

    def partition(name: str) -> int:
        return int(partition_of(f"{site_id}-{name}".encode(), everything, everything))

    c = next(f"TC{n}" for n in range(1000) if partition(f"TC{n}") == partition("TA"))
    return {"A": "TA", "B": "TB", "C": c}


async def status(site: BankSite, unit_id: str) -> spb.InventoryUnit:
    assert site.storage is not None
    return await site.storage.GetUnit(spb.GetUnitRequest(unit_id=unit_id), metadata=OP)


async def test_excursion_and_silent_sensor_quarantine_their_tanks_but_a_short_spike_does_not(
    site: BankSite, endpoints: Endpoints, tmp_path: Path
):
    units = await released_units(site, count=3)
    names = sharing_a_partition(site.site_id)
    tanks = {name: await register_tank(site, names[name]) for name in "ABC"}
    for (name, tank_id), unit in zip(tanks.items(), units, strict=True):
        await store(site, unit.unit_id, f"{tank_id}/R1/B1/P01")
        await projected(
            lambda u=unit: status(site, u.unit_id),
            until=lambda s: s.status == "STORED",
            what=f"{name}",
        )
    topic = await make_topic(endpoints.kafka_bootstrap)
    app_id = f"coldchain-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "coldchain.log"
    monitor = start_monitor(site, endpoints, topic, app_id, log)
    try:
        await publish_timeline(endpoints.kafka_bootstrap, topic, site.site_id, tanks)
        warm = await projected(
            lambda: status(site, units[0].unit_id),
            until=lambda s: s.status == "QUARANTINED",
            what="excursion",
        )
        assert any(c.startswith(f"excursion:{tanks['A']}:") for c in warm.quarantine_causes)
        silent = await projected(
            lambda: status(site, units[2].unit_id),
            until=lambda s: s.status == "QUARANTINED",
            what="silent sensor",
        )
        assert any(c.startswith(f"sensor-silent:{tanks['C']}:") for c in silent.quarantine_causes)
        await spike_seen_and_cleared(
            endpoints.kafka_bootstrap, f"{app_id}-tank_watch-changelog", tanks["B"]
        )
        await site.storage_caught_up()
        spiked = await status(site, units[1].unit_id)
        assert spiked.status == "STORED" and not spiked.quarantine_causes
    except BaseException:
        print(log.read_text()[-6000:])  # the monitor's own account, in the test report
        raise
    finally:
        stop_process(monitor, timeout=30, name="the cold-chain monitor")
