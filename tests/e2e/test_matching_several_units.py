"""Several units for one dose, through HospitalService on two bank sites: allocated only when
the order allows it, cancelled all together, a lost unit replaced while the others stay held,
and reserved all or none — a unit taken meanwhile sends the saga to the next combination, or
to a rejection that leaves nothing reserved."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy.demo import auth
from deploy.infra import Endpoints
from tests.e2e.network import NetworkSite, network
from tests.e2e.test_matching import H1, PATIENT, WEIGHT, unit_at_owner, visible

ELSEWHERE = "ORD-ELSEWHERE-"  # an order of no site here: no reconciler gives its holds back


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sites(endpoints: Endpoints):
    async with network(endpoints, sites=2, reconcile_seconds=0.5) as running:
        yield running


def several(viable_each: float, units: int, *, allow: bool) -> hpb.PlaceOrderRequest:
    """An order whose dose only `units` units of `viable_each` viable cells make together."""
    total = viable_each * units
    return hpb.PlaceOrderRequest(
        request_id=uuid.uuid4().hex,
        patient=PATIENT,
        product_type=hpb.PRODUCT_TYPE_NK,
        dose_cells_per_kg_min=total * 0.999 / WEIGHT,
        dose_cells_per_kg_max=total * 1.001 / WEIGHT,
        allow_multiple_units=allow,
    )


async def reserved_elsewhere(owner: NetworkSite, unit_id: str) -> str:
    """Another order takes the unit at its owner (as a rival saga would)."""
    assert owner.bank.storage is not None
    order_id = ELSEWHERE + uuid.uuid4().hex[:8].upper()
    request = spb.ReserveUnitRequest(unit_id=unit_id, order_id=order_id, reason="rival order")
    request.hold_until.FromDatetime(datetime.now(UTC) + timedelta(hours=1))  # outlives the test
    await owner.bank.storage.ReserveUnit(request, metadata=auth("svc-matching"))
    return order_id


def freeze_inventory(site: NetworkSite) -> None:
    """Stop the site's matching from learning inventory changes, so that a unit another order
    takes still looks available to it — deterministically the race a rival saga wins between
    a search and its reservations. The owner still decides. Tests using it run last."""
    name = f"{site.site_id}.matching.candidate_units"
    for task in site.matching._tasks:
        if task.get_name() == name:
            task.cancel()
            return
    raise AssertionError(f"no {name} runner")


async def test_a_dose_of_two_units_is_allocated_only_when_the_order_allows_several(sites):
    a, _ = sites
    viable = 4.1e8
    units = await a.stock(2, viable)
    await visible(a, viable, 2)
    single = await a.hospital.PlaceOrder(several(viable, 2, allow=False), metadata=H1)
    assert single.status == hpb.ORDER_STATUS_REJECTED and not single.allow_multiple_units
    assert single.status_reason.startswith("no suitable NK unit in the network for a dose of")
    assert "dose below" in single.status_reason and "several units" not in single.status_reason
    for unit_id in units:
        assert (await unit_at_owner(a, unit_id)).reserved_for == ""

    placed = await a.hospital.PlaceOrder(several(viable, 2, allow=True), metadata=H1)
    assert placed.status == hpb.ORDER_STATUS_ALLOCATED, placed.status_reason
    assert placed.allow_multiple_units
    assert sorted(u.unit_id for u in placed.units) == sorted(units)
    for u in placed.units:
        assert abs(u.dose_cells_per_kg - viable / WEIGHT) < 1
        assert u.reasons[0].startswith("one of 2 units making one dose"), u.reasons
        assert "one donor" in u.reasons[0]
        assert (await unit_at_owner(a, u.unit_id)).reserved_for == placed.order_id

    cancelled = await a.hospital.CancelOrder(
        hpb.CancelOrderRequest(order_id=placed.order_id, reason="dose changed"), metadata=H1
    )
    assert cancelled.status == hpb.ORDER_STATUS_CANCELLED
    for unit_id in units:
        assert (await unit_at_owner(a, unit_id)).reserved_for == ""


async def test_losing_one_of_several_units_keeps_the_others_and_finds_a_replacement(sites):
    a, _ = sites
    viable = 4.3e8
    units = sorted(await a.stock(3, viable))
    await visible(a, viable, 3)
    placed = await a.hospital.PlaceOrder(several(viable, 2, allow=True), metadata=H1)
    assert sorted(u.unit_id for u in placed.units) == units[:2], placed.status_reason
    stream = a.hospital.WatchOrder(hpb.WatchOrderRequest(order_id=placed.order_id), metadata=H1)
    assert (await stream.read()).status == hpb.ORDER_STATUS_ALLOCATED
    assert a.bank.storage is not None
    await a.bank.storage.QuarantineUnit(
        spb.QuarantineUnitRequest(unit_id=units[0], reason="tank alarm", cause="excursion:test"),
        metadata=auth("op-alice"),
    )
    seen = []
    while (update := await stream.read()).status != hpb.ORDER_STATUS_ALLOCATED:
        seen.append(update.status)
    stream.cancel()
    assert seen == [hpb.ORDER_STATUS_PLACED]
    assert sorted(u.unit_id for u in update.units) == units[1:]
    for unit_id in units[1:]:
        assert (await unit_at_owner(a, unit_id)).reserved_for == placed.order_id
    assert (await unit_at_owner(a, units[0])).status == "QUARANTINED"


async def test_a_taken_unit_sends_the_saga_to_the_next_combination(sites):
    a, b = sites
    viable = 4.6e8
    units = sorted(await a.stock(3, viable))
    await visible(b, viable, 3)
    freeze_inventory(b)
    # The first plan is the two best ranked (equal scores and expiry: the lowest ids); the
    # saga reserves them in id order, so it takes units[0] before units[1] is refused.
    rival = await reserved_elsewhere(a, units[1])
    placed = await b.hospital.PlaceOrder(several(viable, 2, allow=True), metadata=H1)
    assert placed.status == hpb.ORDER_STATUS_ALLOCATED, placed.status_reason
    assert sorted(u.unit_id for u in placed.units) == [units[0], units[2]]
    assert all(u.site_id == a.site_id for u in placed.units)
    held = {u: (await unit_at_owner(a, u)).reserved_for for u in units}
    assert held == {units[0]: placed.order_id, units[1]: rival, units[2]: placed.order_id}


async def test_when_no_combination_can_be_reserved_nothing_stays_reserved(sites):
    a, _ = sites
    viable = 5.1e8
    units = sorted(await a.stock(2, viable))
    await visible(a, viable, 2)
    freeze_inventory(a)  # B's was frozen by the test before; A's orders see these units
    rival = await reserved_elsewhere(a, units[1])
    placed = await a.hospital.PlaceOrder(several(viable, 2, allow=True), metadata=H1)
    assert placed.status == hpb.ORDER_STATUS_REJECTED, placed.status_reason
    assert "taken by other orders" in placed.status_reason, placed.status_reason
    assert "several units were allowed" in placed.status_reason
    assert not placed.units
    # The unit the failed attempt took was given back; the rival keeps its own.
    assert (await unit_at_owner(a, units[0])).reserved_for == ""
    assert (await unit_at_owner(a, units[1])).reserved_for == rival
