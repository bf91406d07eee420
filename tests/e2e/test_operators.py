"""What operators see: the network's events live (OperatorService.WatchEvents and
`cellbank watch`, filtered, readable or JSON) and each site's status (GetNetworkStatus)."""

from __future__ import annotations

import asyncio
import io
import json

import grpc
import pytest_asyncio
from cellbank.operator.v1 import operator_service_pb2 as opb

from deploy import cli
from deploy.infra import Endpoints
from shared.waits import eventually
from tests.e2e.bank_site import refused
from tests.e2e.network import network
from tests.e2e.test_delivery import OP, allocated, lookback_caught_up, shipment_for
from tests.e2e.test_matching import H1


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sites(endpoints: Endpoints):
    async with network(endpoints, sites=2) as running:
        yield running


async def test_watch_events_streams_new_events_filtered_by_site_and_type(sites):
    a, _b = sites
    stream = a.delivery_ops.WatchEvents(
        opb.WatchEventsRequest(site_id=a.site_id, event_type="UnitStored"), metadata=OP
    )
    stocking = asyncio.create_task(a.stock(2, 9.6e8))
    first = await asyncio.wait_for(stream.read(), 60)
    second = await asyncio.wait_for(stream.read(), 60)
    stream.cancel()
    units = await stocking
    for seen in (first, second):
        assert seen.site_id == a.site_id and seen.event_type == "cellbank.storage.v1.UnitStored"
        assert seen.topic == "cellbank.storage.events.v1" and seen.offset >= 0
        assert seen.aggregate_id in units and seen.summary.startswith("UnitStored ")
        assert json.loads(seen.payload_json)["address"].startswith(f"{a.site_id}-T")
    await refused(
        _first(a.delivery_ops.WatchEvents(opb.WatchEventsRequest(topic="nope"), metadata=OP)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await refused(
        _first(a.delivery_ops.WatchEvents(opb.WatchEventsRequest(), metadata=H1)),
        grpc.StatusCode.PERMISSION_DENIED,
    )  # hospitals do not read the network's streams


async def _first(stream):
    return await stream.read()


async def test_cellbank_watch_prints_readable_lines_and_json_from_the_beginning(
    sites, endpoints, tmp_path
):
    a, _ = sites
    units = await a.stock(1, 9.7e8)
    endpoints_file = tmp_path / "endpoints.json"
    endpoints_file.write_text(
        json.dumps({"sites": {a.site_id: {}}, "kafka": endpoints.kafka_bootstrap})
    )
    base = ["watch", "--endpoints", str(endpoints_file), "--from-beginning", "--for-seconds", "30"]
    text, as_json = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, [*base, "--aggregate", units[0], "--limit", "1"], text)
    assert code == 0
    (line,) = text.getvalue().splitlines()
    assert f" {a.site_id} " in line and f"UnitStored {units[0]} v1 by operator:alice" in line
    code = await asyncio.to_thread(
        cli.main,
        [*base, "--site", a.site_id, "--type", "UnitStored", "--json", "--limit", "1"],
        as_json,
    )
    record = json.loads(as_json.getvalue().splitlines()[0])
    assert code == 0
    for key in (
        "topic",
        "partition",
        "offset",
        "site_id",
        "event_type",
        "aggregate_id",
        "occurred_at",
        "payload",
    ):
        assert key in record
    assert record["site_id"] == a.site_id and record["event_type"].endswith("UnitStored")


async def test_network_status_shows_each_sites_inventory_orders_and_shipments(sites):
    a, b = sites
    _, _, _, placed = await allocated(a, b, 9.2e8)  # a dose no other test stocks
    await shipment_for(a, placed.order_id)
    await lookback_caught_up(a)
    status = await eventually(
        lambda: a.delivery_ops.GetNetworkStatus(opb.GetNetworkStatusRequest(), metadata=OP),
        until=lambda s: any(
            x.site_id == b.site_id and x.open_orders >= 1 and x.hla_reference.release
            for x in s.sites
        ),
        what="the order and the HLA reference in the network status",
        timeout=60,
    )
    by_site = {s.site_id: s for s in status.sites}
    assert by_site[a.site_id].inventory_by_status["RESERVED"] >= 1
    assert by_site[a.site_id].inventory_by_status["STORED"] >= 1
    assert by_site[a.site_id].inventory_by_product["NK-ALLO"] >= 1
    assert by_site[b.site_id].open_orders >= 1
    assert by_site[a.site_id].consumer_lag >= 0
    # Which IPD-IMGT/HLA release classifies KIR ligands at the site, recorded by its matching.
    reference = by_site[b.site_id].hla_reference
    assert reference.release == "3.58.0"
    assert reference.classification_version == "ipd-imgt-hla-3.58.0+kir-ligand-2+rank-2"
    assert set(reference.checksums) >= {"C_prot.fasta", "Allelelist.txt", "Deleted_alleles.txt"}
    assert all(len(h) == 64 for h in reference.checksums.values())
    assert reference.recorded_by.startswith(b.site_id) and reference.recorded_at.seconds > 0
    # Any other service says where to ask.
    await refused(
        b.matching_ops.GetNetworkStatus(opb.GetNetworkStatusRequest(), metadata=OP),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
