"""Matching's command handlers and views against fakes (in-memory store, owners, inventory)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from services.matching.domain.model import (
    NotificationIssued,
    OrderDispatched,
    OrderStatus,
    RecordShipment,
)
from services.matching.tests.builders import unit
from services.matching.tests.fakes import World, matching_at
from services.matching.tests.test_saga import placed
from shared.commands import Meta
from shared.errors import NotFound, PreconditionFailed

UNIT = unit("LON-UNIT-1")


def meta(world: World, actor: str = "hospital:H1") -> Meta:
    return Meta(actor=actor, reason="test", at=world.clock())


async def test_the_same_request_placed_twice_is_one_order() -> None:
    world = matching_at()
    world.sites.stock(UNIT)
    first = await world.app.handlers.place_order(placed("r1"), meta(world))
    again = await world.app.handlers.place_order(placed("r1"), meta(world))
    assert again.order_id == first.order_id and again.version == first.version
    assert world.sites.asked("reserve") == [UNIT.unit_id]
    assert [v.order_id for v in await world.app.views.orders_of("H1")] == [first.order_id]


async def test_a_request_id_reused_for_a_different_order_is_refused() -> None:
    world = matching_at()
    await world.app.handlers.place_order(placed("r1"), meta(world))
    with pytest.raises(PreconditionFailed):
        await world.app.handlers.place_order(placed("r1", dose_max=2e7), meta(world))


async def test_cancelling_an_allocated_order_gives_its_unit_back_at_the_owner() -> None:
    world = matching_at()
    world.sites.stock(UNIT)
    view = await world.app.handlers.place_order(placed(), meta(world))
    assert world.sites.held_for(UNIT.unit_id) == view.order_id
    cancelled = await world.app.handlers.cancel_order(
        view.order_id, "H1", "patient unwell", meta(world)
    )
    assert cancelled.state.status is OrderStatus.CANCELLED
    assert world.sites.asked("release") == [UNIT.unit_id]
    assert world.sites.held_for(UNIT.unit_id) == ""


async def test_another_hospitals_order_is_not_found() -> None:
    world = matching_at()
    view = await world.app.handlers.place_order(placed(), meta(world))
    with pytest.raises(NotFound):
        await world.app.handlers.cancel_order(view.order_id, "H2", "not mine", meta(world))
    with pytest.raises(NotFound):
        await world.app.views.view(view.order_id, "H2")
    assert await world.app.views.orders_of("H2") == []


async def test_a_shipment_fact_is_recorded_once_and_wakes_the_watch() -> None:
    world = matching_at()
    world.sites.stock(UNIT)
    view = await world.app.handlers.place_order(placed(), meta(world))
    watch = world.app.views.watch(view.order_id, "H1")
    assert (await anext(watch)).version == view.version
    dispatched = RecordShipment(OrderDispatched("SHP-1", world.clock()))
    service = meta(world, "service:matching-LON")
    updated = asyncio.ensure_future(anext(watch))
    await world.app.handlers.record_shipment(view.order_id, dispatched, service)
    await world.app.handlers.record_shipment(view.order_id, dispatched, service)
    seen = await asyncio.wait_for(updated, 5)
    assert seen.state.status is OrderStatus.DISPATCHED
    assert (await world.app.views.view(view.order_id)).version == view.version + 1
    await watch.aclose()


async def test_a_recall_notification_is_issued_once_and_acknowledged_by_its_hospital() -> None:
    world = matching_at()
    issued = NotificationIssued("H1", "RCL-1", "ORD-LON-1", ("U1",), "RECALL RCL-1: …")
    service = meta(world, "service:matching-LON")
    await world.app.handlers.issue_notification(issued, service)
    await world.app.handlers.issue_notification(issued, service)
    (notice,) = await world.app.views.notifications("H1")
    assert notice.acknowledged_at is None and await world.app.views.notifications("H2") == []
    world.clock.advance(timedelta(minutes=5))
    acknowledged = await world.app.handlers.acknowledge_notification(
        notice.notification_id, "H1", meta(world, "clinician:h1-clara@H1")
    )
    assert acknowledged.acknowledged_at == world.clock()
