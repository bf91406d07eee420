"""Forged events on the shared log, as a client the broker let in could publish them: a donor's
positive marker after collection (which would raise a recall), a unit's quarantine and a
phantom unit claiming to be stored — each signed with an unknown key, with another bank's key,
unsigned, or altered after signing. No site applies any of them: no recall, no quarantine, no
phantom in any inventory; each is counted (metric, table, GetNetworkStatus) and the genuine
aggregates they name keep flowing."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest_asyncio
from cellbank.delivery.v1 import delivery_service_pb2 as dpb
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy.identities import demo_realm
from deploy.infra import Endpoints
from deploy.network import SLA_MODULE, NetworkProcess
from deploy.replay import replay_site
from services.donor_intake.adapters.codec import CODEC as DONOR_CODEC
from services.donor_intake.domain import model as donor
from services.storage.adapters.codec import CODEC as STORAGE_CODEC
from services.storage.domain import model as storage
from shared.db import drop_database
from shared.events import StoredEvent
from shared.postgres_eventstore import EVENT_COLUMNS, row_to_event
from shared.projections import wait_caught_up
from shared.replay import differences, site_digests
from shared.service_host import ServiceHost
from shared.topics import (
    DELIVERY_EVENTS,
    DONOR_EVENTS,
    MANUFACTURING_EVENTS,
    MATCHING_EVENTS,
    STORAGE_EVENTS,
)
from shared.waits import eventually
from tests.e2e.network import OP, NetworkSite, network
from tests.e2e.test_replay import hosts, quiesced
from tests.forgeries import forgeries, send_raw
from tests.integration.test_projection_runner import read_deadletters
from tests.support.plugin import make_topic
from tests.support.trust import signer


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sites(endpoints: Endpoints):
    async with network(endpoints, sites=2) as running:
        yield running


async def own_events(host: ServiceHost, aggregate_id: str) -> list[StoredEvent]:
    assert host.pool is not None
    rows = await host.pool.fetch(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = $1 ORDER BY position",
        aggregate_id,
    )
    return [row_to_event(r) for r in rows]


def next_event(
    last: StoredEvent, codec: object, domain_event: object, **changes: object
) -> StoredEvent:
    event_type, payload = codec.encode(domain_event)  # type: ignore[attr-defined]
    fields: dict[str, object] = {
        "event_id": str(uuid.uuid4()), "event_type": event_type, "payload": payload,
        "aggregate_version": last.aggregate_version + 1, "position": last.position + 1000,
        "reason": "forged", "actor": "operator:mallory", **changes,
    }  # fmt: skip
    return dataclasses.replace(last, **fields)  # type: ignore[arg-type]


async def caught_up(site: NetworkSite) -> None:
    storage_host = site.bank.hosts[2]
    assert storage_host.pool is not None and site.delivery_host.pool is not None
    every = [DONOR_EVENTS, MANUFACTURING_EVENTS, STORAGE_EVENTS, MATCHING_EVENTS, DELIVERY_EVENTS]
    for pool, name, topics in (
        (storage_host.pool, "inventory", [STORAGE_EVENTS]),
        (storage_host.pool, "network_facts", [MANUFACTURING_EVENTS, DONOR_EVENTS]),
        (site.delivery_host.pool, "lookback", every),
        (site.delivery_host.pool, "recall_triggers", [DONOR_EVENTS, MANUFACTURING_EVENTS]),
    ):
        await wait_caught_up(
            pool, name, bootstrap=storage_host.settings.kafka_bootstrap, topics=topics, timeout=90
        )


async def test_forged_events_change_no_recall_quarantine_or_inventory_anywhere(
    sites: list[NetworkSite], endpoints: Endpoints
):
    a, b = sites
    donor_id, din, units = await a.stock_donor(2, 9.8e8)
    await caught_up(a)
    await caught_up(b)
    donor_host, storage_host = a.bank.hosts[0], a.bank.hosts[2]
    stored = (await own_events(storage_host, units[0]))[-1]
    positive = next_event(
        (await own_events(donor_host, donor_id))[-1], DONOR_CODEC,
        donor.PositiveResultAfterCollection("HIV", date.today(), (din,)),
    )  # fmt: skip
    quarantine = next_event(
        stored, STORAGE_CODEC, storage.UnitQuarantined("excursion:forged", "forged")
    )
    phantom_id = f"PHANTOM-{uuid.uuid4().hex[:8]}"
    phantom = dataclasses.replace(
        stored, aggregate_id=phantom_id, event_id=str(uuid.uuid4()), aggregate_version=1
    )
    forged = {
        DONOR_EVENTS: forgeries(positive, genuine=signer(a.site_id), other_site=signer(b.site_id)),
        STORAGE_EVENTS: [
            *forgeries(quarantine, genuine=signer(a.site_id), other_site=signer(b.site_id)),
            *forgeries(phantom, genuine=signer(a.site_id), other_site=signer(b.site_id)),
        ],
    }
    for topic, records in forged.items():
        await send_raw(endpoints.kafka_bootstrap, topic, [(f.key, f.value) for f in records])
    # The genuine unit the quarantine forgeries name moves on, behind them on its partition.
    assert a.bank.storage is not None
    moved = await a.bank.storage.MoveUnit(
        spb.MoveUnitRequest(unit_id=units[0], to_address=f"{a.site_id}-T{a.tanks}/R2/B1/P01",
                            reason="rack maintenance"),
        metadata=OP,
    )  # fmt: skip
    for site in sites:
        await caught_up(site)

    for site in sites:
        pool = site.bank.hosts[2].pool
        assert pool is not None
        rows = await pool.fetch(
            "SELECT unit_id, status, address FROM inventory WHERE unit_id = ANY($1::text[])",
            [*units, phantom_id],
        )
        by_unit = {r["unit_id"]: r for r in rows}
        assert phantom_id not in by_unit, f"{site.site_id} holds the phantom unit"
        assert {by_unit[u]["status"] for u in units} == {"STORED"}, site.site_id
        assert by_unit[units[0]]["address"] == moved.address  # not parked
        for host in (*site.bank.hosts, site.matching, site.delivery_host):
            assert not any(r.parked_aggregates() for r in host.runners), host.settings.service
    recalls = await a.delivery.ListRecalls(dpb.ListRecallsRequest(), metadata=OP)
    assert not [r for r in recalls.recalls if r.subject == donor_id]
    assert a.delivery_host.pool is not None
    raised = await a.delivery_host.pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type LIKE '%Recall%'"
    )
    assert raised == 0

    # Counted where operators look: per claimed site and reason, each record once.
    status = await eventually(
        lambda: a.delivery_ops.GetNetworkStatus(opb.GetNetworkStatusRequest(), metadata=OP),
        until=lambda s: sum(u.count for u in s.untrusted if u.claimed_site == a.site_id) >= 12,
        what="the forgeries in the network status",
    )
    counts = {u.reason: u.count for u in status.untrusted if u.claimed_site == a.site_id}
    assert counts == {"unknown_key": 3, "wrong_site": 3, "unsigned": 3, "bad_signature": 3}
    assert storage_host.pool is not None
    kept = await storage_host.pool.fetch(
        "SELECT projection, reason, aggregate_id FROM untrusted_records WHERE claimed_site = $1",
        a.site_id,
    )
    assert {(r["projection"], r["aggregate_id"]) for r in kept} >= {
        ("inventory", units[0]), ("inventory", phantom_id), ("network_facts", donor_id),
    }  # fmt: skip

    # A rebuild of the site from the log skips them too (and says so): same state as live.
    await quiesced(a)
    live_dbs = {name: host.settings.database_name for name, host in hosts(a).items()}
    scratch = {name: f"cellbank_t_forged_{uuid.uuid4().hex[:6]}_{name}" for name in live_dbs}
    try:
        result = await replay_site(
            a.site_id, bootstrap=endpoints.kafka_bootstrap, server_url=endpoints.database_url,
            targets=scratch, restore_events_from_log=False,
        )  # fmt: skip
        skipped = result.untrusted["storage"]  # the session's log: this test's forgeries at least
        assert all(skipped.get(r, 0) >= 3 for r in ("unknown_key", "wrong_site", "unsigned"))
        assert skipped.get("bad_signature", 0) >= 3
        live = await site_digests(endpoints.database_url, live_dbs, with_events=False)
        replayed = await site_digests(endpoints.database_url, scratch, with_events=False)
        assert differences(live, replayed) == []
    finally:
        for dbname in scratch.values():
            await drop_database(endpoints.database_url, dbname)


async def test_the_sla_monitor_dead_letters_forged_shipments_and_follows_none(
    endpoints: Endpoints, tmp_path: Path
):
    topic = await make_topic(endpoints.kafka_bootstrap)
    shipment = f"S-FORGED-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    created = StoredEvent(
        position=1, event_id=str(uuid.uuid4()), event_type="cellbank.delivery.v1.ShipmentCreated",
        schema_version=1, aggregate_type="shipment", aggregate_id=shipment, aggregate_version=1,
        site_id="LON", occurred_at=now, recorded_at=now, actor="operator:mallory", reason="",
        correlation_id="", causation_id="", payload=b"", prev_hash=b"\0" * 32, hash=b"\1" * 32,
    )  # fmt: skip
    forged = forgeries(created, genuine=signer("LON"), other_site=signer("MAN"))
    monitor = NetworkProcess(
        "sla",
        [SLA_MODULE, "worker", "-l", "info", "--without-web"],
        {
            "CELLBANK_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
            "CELLBANK_DELIVERY_TOPIC": topic,
            "CELLBANK_DELIVERY_ENDPOINTS": "LON=127.0.0.1:9",  # it must never get to call
            **endpoints.identity.service_env(),
            "CELLBANK_OIDC_CLIENT_ID": "monitor-sla",
            "CELLBANK_OIDC_CLIENT_SECRET": demo_realm().clients["monitor-sla"].secret,
            "CELLBANK_SLA_CHECK_S": "1",
            "CELLBANK_SLA_APP_ID": f"sla-forged-{uuid.uuid4().hex[:8]}",
            "CELLBANK_SLA_DATADIR": str(tmp_path / "faust-data"),
        },  # CELLBANK_TRUST_LIST_FILE: the session's, from the environment
    )
    monitor.start(tmp_path)
    try:
        await send_raw(endpoints.kafka_bootstrap, topic, [(f.key, f.value) for f in forged])
        letters = await read_deadletters(
            endpoints.kafka_bootstrap, {shipment: len(forged)}, timeout=120
        )
        assert sorted(x["untrusted_reason"] for x in letters[shipment]) == sorted(
            f.reason for f in forged
        )
        assert {x["projection"] for x in letters[shipment]} == {"sla"}
        assert all(x["error"].startswith("untrusted: ") for x in letters[shipment])
        assert "shipment at risk" not in (tmp_path / "sla.log").read_text()
    except BaseException:
        print((tmp_path / "sla.log").read_text()[-6000:])
        raise
    finally:
        monitor.stop()
