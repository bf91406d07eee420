"""Never promised twice, at scale: 7 callers of 3 hospitals (their systems and clinicians,
each with their own token) place 200 orders at once, at three sites, for
50 suitable units spread over those sites → exactly 50 allocated, every other order rejected
with a reason, no unit in two live orders, and the owners' reservations equal the allocations."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest_asyncio
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy.demo import auth
from deploy.infra import Endpoints
from shared.waits import eventually
from tests.e2e.network import network
from tests.e2e.test_matching import order, visible

OP = auth("op-alice")
CALLERS = [auth(who) for who in
           ("hosp-h1", "h1-clara", "h1-david", "hosp-h2", "h2-erin", "hosp-h3", "h3-farid")]  # fmt: skip
BY_HOSPITAL = {"H1": CALLERS[0], "H2": CALLERS[3], "H3": CALLERS[5]}


async def settled(sites, placed: hpb.Order) -> hpb.Order:
    if placed.status != hpb.ORDER_STATUS_PLACED:
        return placed
    site = next(s for s in sites if placed.order_id.startswith(f"ORD-{s.site_id}-"))
    hospital = BY_HOSPITAL[placed.hospital_id]
    order: hpb.Order = await eventually(
        lambda: site.hospital.GetOrder(hpb.GetOrderRequest(order_id=placed.order_id), metadata=hospital),
        until=lambda o: o.status != hpb.ORDER_STATUS_PLACED,
        what=f"order {placed.order_id} allocated or rejected", timeout=120,
    )  # fmt: skip
    return order


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sites(endpoints: Endpoints):
    async with network(endpoints, sites=3) as running:
        yield running


async def test_200_orders_from_7_callers_of_3_hospitals_for_50_units_allocate_exactly_50(sites):
    viable = 7.7e8
    stocked = await asyncio.gather(
        sites[0].stock(17, viable), sites[1].stock(17, viable), sites[2].stock(16, viable)
    )
    units = {u for batch in stocked for u in batch}
    assert len(units) == 50
    for site in sites:
        await visible(site, viable, 50)
    requests = [
        (
            sites[i % 3],
            CALLERS[i % len(CALLERS)],
            order(viable, request_id=f"race-{i}-{uuid.uuid4().hex}"),
        )
        for i in range(200)
    ]
    results = await asyncio.gather(
        *(s.hospital.PlaceOrder(r, metadata=h, timeout=120) for s, h, r in requests)
    )
    # PlaceOrder answers once allocated or rejected — or, when 200 sagas queue for the same
    # units, after its wait with the order still PLACED: the saga goes on; follow it.
    results = [await settled(sites, r) for r in results]
    statuses = Counter(r.status for r in results)
    assert statuses == {hpb.ORDER_STATUS_ALLOCATED: 50, hpb.ORDER_STATUS_REJECTED: 150}, statuses
    allocated = [r for r in results if r.status == hpb.ORDER_STATUS_ALLOCATED]
    taken = [u.unit_id for r in allocated for u in r.units]
    assert sorted(taken) == sorted(units)  # each unit in exactly one live order
    assert all(r.status_reason for r in results if r.status == hpb.ORDER_STATUS_REJECTED)
    # The owners agree: every unit is reserved, for the order that holds it.
    by_site = {s.site_id: s for s in sites}
    holder = {u.unit_id: r.order_id for r in allocated for u in r.units}
    reserved = 0
    for r in allocated:
        (u,) = r.units
        owner = by_site[u.site_id].bank
        assert owner.storage is not None
        await owner.storage_caught_up()
        unit = await owner.storage.GetUnit(spb.GetUnitRequest(unit_id=u.unit_id), metadata=OP)
        assert unit.reserved_for == holder[u.unit_id]
        reserved += 1
    assert reserved == 50
