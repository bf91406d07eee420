"""Reservations for live orders, against a network whose holds are short (3 s): matching
renews them so they never lapse while the order lives, notices a unit its owner took back
(quarantine) and allocates another, and returns holds no order owns (a crash's leftovers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest_asyncio
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy.demo import auth
from deploy.infra import Endpoints
from shared.waits import eventually
from tests.e2e.bank_site import projected
from tests.e2e.network import NetworkSite, network
from tests.e2e.test_matching import H1, order, unit_at_owner, visible

HOLD = 3.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sites(endpoints: Endpoints):
    async with network(endpoints, sites=2, hold_seconds=HOLD, reconcile_seconds=0.2) as running:
        yield running


async def held(owner: NetworkSite, unit_id: str) -> spb.InventoryUnit:
    assert owner.bank.storage is not None
    return await owner.bank.storage.GetUnit(
        spb.GetUnitRequest(unit_id=unit_id), metadata=auth("op-alice")
    )


async def test_a_live_orders_hold_is_renewed_and_never_lapses(sites):
    a, b = sites
    viable = 7.1e8
    (unit_id,) = await a.stock(1, viable)
    await visible(b, viable, 1)
    placed = await b.hospital.PlaceOrder(order(viable), metadata=H1)
    assert placed.status == hpb.ORDER_STATUS_ALLOCATED
    first = (await unit_at_owner(a, unit_id)).hold_until.ToDatetime(tzinfo=UTC)
    # Outlive the first hold twice over: the unit stays held for the order all along.
    later = await eventually(
        lambda: held(a, unit_id),
        until=lambda u: (
            u.hold_until.ToDatetime(tzinfo=UTC) > first + timedelta(seconds=2 * HOLD)
            or u.reserved_for != placed.order_id
        ),
        what="the hold to be renewed twice",
        timeout=60,
    )
    assert later.reserved_for == placed.order_id and later.status == "STORED"
    assert datetime.now(UTC) > first  # the first hold's deadline has passed meanwhile
    got = await b.hospital.GetOrder(hpb.GetOrderRequest(order_id=placed.order_id), metadata=H1)
    assert got.status == hpb.ORDER_STATUS_ALLOCATED and got.units[0].unit_id == unit_id


async def test_a_unit_its_owner_quarantines_is_replaced_by_another(sites):
    a, b = sites
    viable = 7.2e8
    units = await a.stock(2, viable)
    await visible(b, viable, 2)
    placed = await b.hospital.PlaceOrder(order(viable), metadata=H1)
    (first,) = [u.unit_id for u in placed.units]
    stream = b.hospital.WatchOrder(hpb.WatchOrderRequest(order_id=placed.order_id), metadata=H1)
    assert (await stream.read()).status == hpb.ORDER_STATUS_ALLOCATED
    assert a.bank.storage is not None
    await a.bank.storage.QuarantineUnit(
        spb.QuarantineUnitRequest(unit_id=first, reason="tank alarm", cause="excursion:test"),
        metadata=auth("op-alice"),
    )
    seen = []
    while True:
        update = await stream.read()
        seen.append(update.status)
        if update.status == hpb.ORDER_STATUS_ALLOCATED:
            break
    assert seen == [hpb.ORDER_STATUS_PLACED, hpb.ORDER_STATUS_ALLOCATED]
    (second,) = [u.unit_id for u in update.units]
    assert {first, second} == set(units)
    assert (await unit_at_owner(a, second)).reserved_for == placed.order_id
    stream.cancel()


async def test_a_hold_no_order_owns_is_given_back(sites):
    a, b = sites
    viable = 7.3e8
    (unit_id,) = await a.stock(1, viable)
    assert a.bank.storage is not None
    # What a crash between reserving and recording the allocation leaves behind.
    request = spb.ReserveUnitRequest(
        unit_id=unit_id, order_id=f"ORD-{b.site_id}-LEFTOVER", reason="allocation (crashed)"
    )
    request.hold_until.FromDatetime(datetime.now(UTC) + timedelta(hours=1))  # outlives the test
    await a.bank.storage.ReserveUnit(request, metadata=auth("svc-matching"))
    await projected(
        lambda: held(a, unit_id),
        until=lambda u: u.reserved_for.endswith("LEFTOVER"),
        what="the leftover hold in the inventory",
    )
    released = await projected(
        lambda: held(a, unit_id),
        until=lambda u: u.reserved_for == "",
        what="matching to give the orphaned hold back",
    )
    assert released.status == "STORED"
    await visible(b, viable, 1)  # offered again
