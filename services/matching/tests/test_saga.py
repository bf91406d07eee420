"""The allocation saga and the reconciler against fakes: the owners (FakeStorageSites) decide,
the order is recorded in an in-memory event store."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from services.matching.adapters.codec import ORDER
from services.matching.dependencies import MatchingConfig
from services.matching.domain.model import OrderPlaced, OrderStatus, PlaceOrder, ProductCategory
from services.matching.domain.order import decide
from services.matching.tests.builders import DOSE_MAX, DOSE_MIN, WEIGHT_KG, patient, unit
from services.matching.tests.fakes import World, matching_at
from shared.commands import Meta, execute

# Donor CMV ranks them for a CMV-negative patient: a negative donor first, then unknown.
BEST = unit("LON-BEST", donor_cmv="NEGATIVE")
NEXT = unit("MAN-NEXT", site_id="MAN", donor_cmv="UNKNOWN")


def placed(request_id: str = "r1", **changes: object) -> OrderPlaced:
    base = OrderPlaced(
        "H1", request_id, patient(), ProductCategory.NK, DOSE_MIN, DOSE_MAX, needed_by=None
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def hospital(world: World) -> Meta:
    return Meta(actor="hospital:H1", reason="order for pt-0001", at=world.clock())


async def test_an_order_reserves_the_best_candidate_and_records_it() -> None:
    world = matching_at()
    world.sites.stock(NEXT, BEST)
    view = await world.app.handlers.place_order(placed(), hospital(world))
    assert view.state.status is OrderStatus.ALLOCATED
    assert [u.unit_id for u in view.state.units] == [BEST.unit_id]
    assert world.sites.asked("reserve") == [BEST.unit_id]
    assert world.sites.calls[0].expected_version == BEST.version  # as the index saw it
    assert world.sites.held_for(BEST.unit_id) == view.order_id
    assert view.state.units[0].unit_version == world.sites.units[BEST.unit_id].version


async def test_a_refused_candidate_falls_through_to_the_next() -> None:
    world = matching_at()
    world.sites.stock(NEXT, BEST)
    world.sites.refusing.add(BEST.unit_id)
    view = await world.app.handlers.place_order(placed(), hospital(world))
    assert view.state.status is OrderStatus.ALLOCATED
    assert [u.unit_id for u in view.state.units] == [NEXT.unit_id]
    assert world.sites.asked("reserve") == [BEST.unit_id, NEXT.unit_id]
    assert world.sites.held_for(BEST.unit_id) == ""


async def test_a_site_that_cannot_be_asked_is_passed_over_like_a_refusal() -> None:
    world = matching_at()
    world.sites.stock(dataclasses.replace(BEST, site_id="EDI"), NEXT)
    world.sites.unavailable.add("EDI")
    view = await world.app.handlers.place_order(placed(), hospital(world))
    assert [u.unit_id for u in view.state.units] == [NEXT.unit_id]
    assert world.sites.asked("reserve") == [BEST.unit_id, NEXT.unit_id]


async def test_an_order_no_owner_reserves_for_is_rejected_saying_so() -> None:
    world = matching_at()
    world.sites.stock(NEXT, BEST)
    world.sites.refusing.update({BEST.unit_id, NEXT.unit_id})
    view = await world.app.handlers.place_order(placed(), hospital(world))
    assert view.state.status is OrderStatus.REJECTED
    assert "could be reserved: the 2 suitable unit(s)" in view.state.status_reason
    assert world.sites.asked("reserve") == [BEST.unit_id, NEXT.unit_id]


# Half a dose each (3e6 cells/kg against a 5e6 minimum): only two together make it.
HALF = 3e6 * WEIGHT_KG


async def test_a_refusal_within_a_dose_of_several_units_releases_the_units_already_held() -> None:
    world = matching_at()
    a, b, c = (unit(f"LON-HALF-{n}", viable_nk_cells=HALF) for n in "ABC")
    world.sites.stock(a, b, c)
    world.sites.refusing.add(b.unit_id)
    view = await world.app.handlers.place_order(placed(allow_multiple_units=True), hospital(world))
    assert view.state.status is OrderStatus.ALLOCATED
    assert sorted(u.unit_id for u in view.state.units) == [a.unit_id, c.unit_id]
    # A (reserved first, in unit order) was given back when B was refused, then taken again.
    assert world.sites.asked("reserve") == [a.unit_id, b.unit_id, a.unit_id, c.unit_id]
    assert world.sites.asked("release") == [a.unit_id]
    assert {world.sites.held_for(u.unit_id) for u in (a, c)} == {view.order_id}
    assert world.sites.held_for(b.unit_id) == ""


async def test_an_order_cancelled_while_its_unit_is_reserved_gives_the_unit_back() -> None:
    world = matching_at()
    world.sites.stock(BEST)
    order_id = world.app.handlers.order_id_for("H1", "r1")
    reserve = world.sites.reserve

    async def reserve_then_cancel(*args: object, **kwargs: object) -> int:
        version = await reserve(*args, **kwargs)  # type: ignore[arg-type]
        await world.app.handlers.cancel_order(order_id, "H1", "patient unwell", hospital(world))
        return version

    world.sites.reserve = reserve_then_cancel  # type: ignore[method-assign]
    view = await world.app.handlers.place_order(placed(), hospital(world))
    assert view.state.status is OrderStatus.CANCELLED
    assert world.sites.asked("release") == [BEST.unit_id]
    assert world.sites.held_for(BEST.unit_id) == ""


async def test_the_reconciler_gives_back_a_hold_no_order_owns_after_a_grace_period() -> None:
    world = matching_at(config=MatchingConfig(reconcile_every=1.0))
    world.sites.stock(BEST)
    # What a crash between reserving and recording the allocation leaves behind.
    await world.sites.reserve("LON", BEST.unit_id, "ORD-LON-LEFTOVER", world.clock(), None, "")
    await world.app.reconciler.reconcile()
    assert world.sites.asked("release") == []  # a saga elsewhere may be about to record it
    world.clock.advance(timedelta(seconds=6))
    await world.app.reconciler.reconcile()
    assert world.sites.asked("release") == [BEST.unit_id]
    assert world.sites.held_for(BEST.unit_id) == ""


async def test_the_reconciler_keeps_trying_to_give_back_while_the_owner_cannot_be_asked() -> None:
    world = matching_at(config=MatchingConfig(reconcile_every=1.0))
    world.sites.stock(BEST)
    await world.sites.reserve("LON", BEST.unit_id, "ORD-LON-LEFTOVER", world.clock(), None, "")
    world.sites.unavailable.add("LON")
    await world.app.reconciler.reconcile()
    world.clock.advance(timedelta(seconds=6))
    await world.app.reconciler.reconcile()
    world.sites.unavailable.clear()
    await world.app.reconciler.reconcile()
    assert world.sites.asked("release") == [BEST.unit_id, BEST.unit_id]
    assert world.sites.held_for(BEST.unit_id) == ""


async def test_the_reconciler_resumes_an_order_left_awaiting_allocation() -> None:
    world = matching_at()
    world.sites.stock(BEST)
    order_id = world.app.handlers.order_id_for("H1", "r1")
    command = PlaceOrder(placed(), world.clock())
    # Recorded by a process that stopped before its saga ran.
    await execute(world.store, ORDER, order_id, lambda s: decide(s, command), hospital(world))
    await world.app.reconciler.reconcile()
    await world.app.allocation.start(order_id)  # the reconciler's saga, awaited
    view = await world.app.views.view(order_id)
    assert view.state.status is OrderStatus.ALLOCATED
    assert world.sites.held_for(BEST.unit_id) == order_id


async def test_the_reconciler_notices_a_unit_its_owner_took_back_and_allocates_again() -> None:
    world = matching_at()
    world.sites.stock(NEXT, BEST)
    view = await world.app.handlers.place_order(placed(), hospital(world))
    world.sites.units[BEST.unit_id].status = "QUARANTINED"
    world.sites.units[BEST.unit_id].version += 1
    await world.app.reconciler.reconcile()
    await world.app.allocation.start(view.order_id)
    again = await world.app.views.view(view.order_id)
    assert again.state.status is OrderStatus.ALLOCATED
    assert [u.unit_id for u in again.state.units] == [NEXT.unit_id]


async def test_a_release_the_owner_cannot_take_leaves_the_cancelled_orders_hold_for_later() -> None:
    world = matching_at()
    world.sites.stock(BEST)
    view = await world.app.handlers.place_order(placed(), hospital(world))
    world.sites.unavailable.add("LON")
    cancelled = await world.app.handlers.cancel_order(
        view.order_id, "H1", "patient unwell", hospital(world)
    )
    assert cancelled.state.status is OrderStatus.CANCELLED
    assert world.sites.held_for(BEST.unit_id) == view.order_id  # the reconciler's, later
