"""Forged events on the shared log, as a client the broker let in could publish them: a donor's
positive marker after collection (which would raise a recall), a unit's quarantine and a
phantom unit claiming to be stored — each signed with an unknown key, with another bank's key,
unsigned, or altered after signing. No site applies any of them: no recall, no quarantine, no
phantom in any inventory; each is counted (metric, table, GetNetworkStatus) and the genuine
aggregates they name keep flowing."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date

import pytest_asyncio
from cellbank.delivery.v1 import delivery_service_pb2 as dpb
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy.infra import Endpoints
from services.donor_intake.adapters.codec import CODEC as DONOR_CODEC
from services.donor_intake.domain import model as donor
from services.storage.adapters.codec import CODEC as STORAGE_CODEC
from services.storage.domain import model as storage
from shared.events import StoredEvent
from shared.postgres_eventstore import EVENT_COLUMNS, row_to_event
from shared.projections import wait_caught_up
from shared.service_host import ServiceHost
from shared.testing.trust import signer
from shared.testing.waits import eventually
from shared.topics import (
    DELIVERY_EVENTS,
    DONOR_EVENTS,
    MANUFACTURING_EVENTS,
    MATCHING_EVENTS,
    STORAGE_EVENTS,
)
from tests.e2e.network import OP, NetworkSite, network
from tests.forgeries import forgeries, send_raw


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
