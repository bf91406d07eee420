"""Replay equals live: a site rebuilt from the Kafka log has the same state digest as the live
site — its projections into fresh databases, and, after its databases are dropped entirely,
its own events too. A site started later catches up from the log."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import uuid

import grpc
import pytest_asyncio
from cellbank.delivery.v1 import delivery_service_pb2 as dpb
from cellbank.hospital.v1 import hospital_pb2_grpc as hpb_grpc
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.operator.v1 import operator_service_pb2_grpc as opb_grpc

from deploy import cli
from deploy.infra import Endpoints
from deploy.replay import replay_site
from services.matching.entrypoints.main import SPEC as MATCHING_SPEC
from shared.db import drop_database
from shared.projections import wait_caught_up
from shared.replay import differences, site_digests
from shared.service_host import ServiceHost
from shared.waits import eventually
from tests.e2e.bank_site import site_settings
from tests.e2e.network import NetworkSite, network
from tests.e2e.test_delivery import OP, allocated, shipment_for
from tests.e2e.test_matching import H1, search


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sites(endpoints: Endpoints):
    async with network(endpoints, sites=2) as running:
        yield running


def hosts(site: NetworkSite) -> dict[str, ServiceHost]:
    donor, manufacturing, storage = site.bank.hosts
    return {
        "donor_intake": donor, "manufacturing": manufacturing, "storage": storage,
        "matching": site.matching, "delivery": site.delivery_host,
    }  # fmt: skip


async def quiesced(site: NetworkSite) -> None:
    """Every event of the site is on Kafka and every projection has read the whole log."""
    for host in hosts(site).values():
        assert host.server is not None and host.pool is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            await _published(opb_grpc.OperatorServiceStub(channel), host.spec.name)
    for host in hosts(site).values():
        assert host.pool is not None
        for runner in host.runners:
            await wait_caught_up(
                host.pool, runner.projection.name, bootstrap=host.settings.kafka_bootstrap,
                topics=list(runner.projection.topics), timeout=60,
            )  # fmt: skip


async def _published(ops: opb_grpc.OperatorServiceStub, service: str) -> None:
    await eventually(
        lambda: ops.GetStoreStatus(opb.GetStoreStatusRequest(), metadata=OP),
        until=lambda s: s.published_position == s.head_position,
        what=f"{service}'s relay to publish everything",
        timeout=60,
    )


async def activity(a: NetworkSite, b: NetworkSite, viable: float) -> None:
    """Donors, batches, storage, an order across sites and its shipment: every projection."""
    _, _, _, placed = await allocated(a, b, viable)
    shipment = await shipment_for(a, placed.order_id)
    await a.delivery.DispatchShipment(
        dpb.DispatchShipmentRequest(shipment_id=shipment.shipment_id, reason="go"), metadata=OP
    )
    await b.stock(1, viable * 1.01)


async def test_a_rebuilt_site_has_the_live_sites_digest(sites, endpoints: Endpoints, tmp_path):
    a, b = sites
    await activity(a, b, 9.1e8)
    await quiesced(a)
    await quiesced(b)
    live_dbs = {name: host.settings.database_name for name, host in hosts(a).items()}
    scratch = {name: f"cellbank_t_replay_{uuid.uuid4().hex[:6]}_{name}" for name in live_dbs}
    try:
        result = await replay_site(
            a.site_id, bootstrap=endpoints.kafka_bootstrap, server_url=endpoints.database_url,
            targets=scratch, restore_events_from_log=False,
        )  # fmt: skip
        assert result.records_replayed > 0
        live = await site_digests(endpoints.database_url, live_dbs, with_events=False)
        replayed = await site_digests(endpoints.database_url, scratch, with_events=False)
        assert len(live) > 15  # every read model of the five services
        assert differences(live, replayed) == []
        print(f"replayed {result.records_replayed:,} records at {result.rate:,.0f} events/s")
        # The operator's command: rebuild into scratch databases and verify against live.
        endpoints_file = tmp_path / "endpoints.json"
        endpoints_file.write_text(json.dumps({
            "sites": {a.site_id: {}},
            "kafka": endpoints.kafka_bootstrap, "database_url": endpoints.database_url,
            "databases": {a.site_id: live_dbs},
        }))  # fmt: skip
        out, err = io.StringIO(), io.StringIO()
        args = ["replay", "--site", a.site_id, "--verify", "--endpoints", str(endpoints_file)]
        code = await asyncio.to_thread(cli.main, args, out, err)
        assert code == 0, out.getvalue() + err.getvalue()
        assert f"OK: {a.site_id} replayed equals live" in out.getvalue()
        assert "ev/s" in err.getvalue() and "ETA" in err.getvalue()  # the progress lines
    finally:
        for dbname in scratch.values():
            await drop_database(endpoints.database_url, dbname)


async def test_a_site_that_lost_its_databases_is_rebuilt_from_the_log(sites, endpoints: Endpoints):
    a, b = sites
    await activity(a, b, 9.4e8)
    await quiesced(a)
    live_dbs = {name: host.settings.database_name for name, host in hosts(a).items()}
    before = await site_digests(endpoints.database_url, live_dbs)
    for host in hosts(a).values():
        await host.stop(grace=1)
    for dbname in live_dbs.values():
        await drop_database(endpoints.database_url, dbname)
    keys = {name: host.settings.chain_key for name, host in hosts(a).items()}
    result = await replay_site(
        a.site_id, bootstrap=endpoints.kafka_bootstrap, server_url=endpoints.database_url,
        targets=live_dbs, restore_events_from_log=True,
        chain_keys={name: key for name, key in keys.items() if key is not None},
    )  # fmt: skip
    assert sum(result.events_restored.values()) > 0
    after = await site_digests(endpoints.database_url, live_dbs)
    assert differences(before, after) == []  # events (ids, versions, hashes) and read models


async def test_a_site_started_later_catches_up_and_serves_the_network_inventory(
    sites, endpoints: Endpoints
):
    _, b = sites
    viable = 9.3e8
    (unit_id,) = await b.stock(1, viable)
    settings = dataclasses.replace(
        site_settings(endpoints, "NEW", "matching", b.bank.hosts[0].settings.facility_id),
        database_name=f"cellbank_t_new_matching_{uuid.uuid4().hex[:6]}",
    )
    host = ServiceHost(MATCHING_SPEC, settings)
    await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            fourth = hpb_grpc.HospitalServiceStub(channel)
            found = await eventually(
                lambda: fourth.SearchInventory(search(viable), metadata=H1),
                until=lambda r: [c.unit_id for c in r.candidates] == [unit_id],
                what="the new site to see the network's stock", timeout=60,
            )  # fmt: skip
            assert found.candidates[0].site_id == b.site_id
    finally:
        await host.stop(grace=1)
        await drop_database(endpoints.database_url, settings.database_name)
