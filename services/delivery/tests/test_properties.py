"""Delivery properties: custody invariants under any command sequence, replay, codec round trip."""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.delivery.adapters.codec import CODEC
from services.delivery.domain import recall, shipment
from services.delivery.domain.custody import Person, stands_for
from services.delivery.domain.model import (
    AcceptCustody,
    Compromise,
    CreateShipment,
    CustodyAccepted,
    CustodyOffered,
    Decision,
    DeliveryRules,
    Dispatch,
    DispositionShipment,
    ESignature,
    FlagAtRisk,
    HandOver,
    RaiseRecall,
    Recall,
    RecallEvent,
    RecordDelivery,
    RecordReturn,
    RecordUnitHeld,
    ReturnOutcome,
    Shipment,
    ShipmentCommand,
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentDispositioned,
    ShipmentEvent,
    ShipmentStatus,
)
from services.delivery.tests.test_recall import RAISED
from services.delivery.tests.test_shipment import BANK, COURIER, CREATED, NOW, SHIPPER, WARD
from shared.errors import CellBankError
from tests.support.strategies import dataclass_strategy

S = ShipmentStatus

# ---- shipments ------------------------------------------------------------------------------

PARTIES = [BANK, COURIER, "courier:eve", "hospital:H1", WARD]
RECEIVERS = [
    Person("bob", frozenset({"courier"})),
    Person("eve", frozenset({"courier"})),
    Person("h1-kim", frozenset({"clinician"}), hospital="H1"),
    Person("alice", frozenset({"operator"}), site="LON"),
]
# a few instants around the promise (NOW + 6 h), so deliveries are early, on time and late
instants = st.sampled_from([-1, 0, 1, 4, 6, 8]).map(lambda h: NOW + timedelta(hours=h))
places = st.sampled_from(["LON dock", "H1 door", "H1 ward", " "])
meanings = st.sampled_from(["received", "reviewed", "  "])
signatures = st.builds(ESignature, st.sampled_from(["Bob", "Kim"]), meanings, instants)
createds = st.sampled_from(
    [
        CREATED,
        CREATED,
        dataclasses.replace(CREATED, logger_id=""),
        dataclasses.replace(CREATED, shipper=dataclasses.replace(SHIPPER, qualified_hold_hours=2)),
        dataclasses.replace(CREATED, shipper=dataclasses.replace(SHIPPER, shipper_id="")),
        dataclasses.replace(CREATED, courier="OtherCourier"),
        dataclasses.replace(CREATED, order_placed_at=None),
    ]
)
rules = st.sampled_from(
    [
        DeliveryRules(),
        DeliveryRules(),
        DeliveryRules(safety_factor=3),
        DeliveryRules(max_shipper_uses=3),
    ]
)
WEIGHTED_SHIPMENT_COMMANDS: list[tuple[int, st.SearchStrategy[ShipmentCommand]]] = [
    (1, st.builds(CreateShipment, createds, instants)),
    (2, st.builds(Dispatch, instants, st.sampled_from(PARTIES[:2]), rules)),
    (6, st.builds(HandOver, st.sampled_from([*PARTIES, "", " "]), places, instants)),
    (5, st.builds(AcceptCustody, places, signatures, st.sampled_from(RECEIVERS))),
    (2, st.builds(RecordDelivery, instants, places)),
    (2, st.builds(Compromise, st.sampled_from(["excursion:a", "silence:b"]), st.just("d"))),
    (
        2,
        st.builds(
            DispositionShipment,
            st.sampled_from(Decision),
            st.sampled_from(["qa", "qa", "courier"]),
            signatures,
        ),
    ),
    (1, st.builds(FlagAtRisk, instants, st.just("flight delayed"))),
    (1, st.builds(RecordReturn, st.sampled_from(ReturnOutcome), st.sampled_from(["why", " "]))),
]
shipment_commands = st.sampled_from(
    [strategy for weight, strategy in WEIGHTED_SHIPMENT_COMMANDS for _ in range(weight)]
).flatmap(lambda strategy: strategy)
CREATE: list[ShipmentCommand] = [CreateShipment(CREATED, NOW)]
CREATE_AND_DISPATCH: list[ShipmentCommand] = [*CREATE, Dispatch(NOW, BANK, DeliveryRules())]
# most histories start from a dispatched shipment, so custody moves often
shipment_histories = st.tuples(
    st.sampled_from([[], *[CREATE] * 2, *[CREATE_AND_DISPATCH] * 3]),
    st.lists(shipment_commands, min_size=8, max_size=30),
).map(lambda h: [*h[0], *h[1]])


def check_shipment_step(
    before: Shipment, command: ShipmentCommand, events: list[ShipmentEvent]
) -> None:
    """What any accepted command may emit, judged on the state it was decided on."""
    if before.status in (S.RETURNED, S.DISCARDED):
        assert all(isinstance(e, ShipmentDispositioned) for e in events), "it ended"
    state = before
    for event in events:
        after = shipment.evolve(state, event)
        if isinstance(event, ShipmentDispatched):
            assert isinstance(command, Dispatch) and state.status is S.CREATED
            assert state.created is not None and state.created.logger_id
            transit = state.created.planned_transit_minutes
            assert state.created.shipper.qualified_hold_hours * 60 >= transit * event.safety_factor
            assert state.created.shipper.uses_since_requalification < command.rules.max_shipper_uses
            assert (state.custodian, after.custodian) == ("", event.custodian)
        elif isinstance(event, CustodyAccepted):
            # custody changes only by accepting the one pending offer, to the offered party
            assert isinstance(command, AcceptCustody)
            assert state.pending is not None, "accepted without an offer"
            assert event.party == state.pending.to_party == after.custodian
            assert stands_for(command.receiver, event.party), "accepted by another party"
            assert event.signature.meaning.strip()
        else:
            assert after.custodian == state.custodian, f"custody moved by {event}"
        if isinstance(event, CustodyOffered):
            assert state.status is S.IN_TRANSIT
            assert state.pending is None, "a second offer while one is pending"
            assert event.from_party == state.custodian != event.to_party
            assert event.to_party.strip() and event.place.strip()
        if isinstance(event, ShipmentDelivered):
            assert state.pending is None, "delivered while custody was not settled"
        state = after


def check_shipment_state(state: Shipment) -> None:
    """One custodian: every offer but the last accepted, each from whoever held it then."""
    if state.status in (S.NONE, S.CREATED):
        assert (state.custodian, state.handoffs) == ("", ())
        return
    pending = [h for h in state.handoffs if h.accepted_at is None]
    assert pending in ([], list(state.handoffs[-1:])), "more than one offer pending"
    holder = state.custodian if not state.handoffs else state.handoffs[0].from_party
    for handoff in state.handoffs:
        assert handoff.from_party == holder, "an offer from someone who did not hold it"
        if handoff.accepted_at is not None:
            assert handoff.signature is not None
            holder = handoff.to_party
    assert holder == state.custodian
    assert state.cleared_for_infusion is (
        not state.compromise_causes or state.disposition is Decision.ACCEPT
    )


def run_shipment(history: list[ShipmentCommand]) -> tuple[Shipment, list[ShipmentEvent]]:
    state, emitted = Shipment(), list[ShipmentEvent]()
    for command in history:
        snapshot = copy.deepcopy(state)
        try:
            events = list(shipment.decide(state, command))
        except CellBankError:
            assert state == snapshot  # a refusal changes nothing
            continue
        check_shipment_step(state, command, events)
        state = functools.reduce(shipment.evolve, events, state)
        check_shipment_state(state)
        emitted.extend(events)
    return state, emitted


@settings(deadline=None, max_examples=200)
@given(shipment_histories)
def test_any_shipment_command_sequence_keeps_one_custodian_moved_only_by_an_accepted_offer(
    history,
):
    run_shipment(history)


@settings(deadline=None, max_examples=100)
@given(shipment_histories)
def test_replaying_the_shipments_events_rebuilds_the_same_shipment(history):
    state, emitted = run_shipment(history)
    assert functools.reduce(shipment.evolve, emitted, Shipment()) == state
    decoded = (CODEC.decode(*CODEC.encode(e)) for e in emitted)
    assert functools.reduce(shipment.evolve, decoded, Shipment()) == state


# ---- recalls --------------------------------------------------------------------------------

recall_commands = st.one_of(
    st.builds(
        lambda reason, units: RaiseRecall(dataclasses.replace(RAISED, reason=reason, dins=units)),
        st.sampled_from(["donor positive", " "]),
        st.sampled_from([(), ("G123426000001",)]),
    ),
    *[
        st.builds(
            RecordUnitHeld,
            st.sampled_from(["unit-1", "unit-2", "unit-3", "unit-9"]),
            st.sampled_from(["LON", "MAN"]),
            st.sampled_from(["RECALLED", "NOT_IN_STOCK"]),
        )
    ]
    * 3,
)


@settings(deadline=None, max_examples=100)
@given(st.lists(recall_commands, max_size=20))
def test_each_recalled_unit_is_held_once_and_replay_rebuilds_the_recall(history):
    state, emitted = Recall(), list[RecallEvent]()
    for command in history:
        try:
            events = list(recall.decide(state, command))
        except CellBankError:
            continue
        state = functools.reduce(recall.evolve, events, state)
        emitted.extend(events)
    held = [h.unit_id for h in state.held]
    assert len(held) == len(set(held)), "a unit held twice"
    if state.raised is not None:
        assert set(held) | set(state.pending_units) == set(state.raised.unit_ids)
    decoded = (CODEC.decode(*CODEC.encode(e)) for e in emitted)
    assert functools.reduce(recall.evolve, decoded, Recall()) == state


# ---- codec ----------------------------------------------------------------------------------

EVENT_TYPES = [*typing.get_args(ShipmentEvent), *typing.get_args(RecallEvent)]


def test_codec_maps_every_delivery_event_type():
    assert len(CODEC.event_types()) == len(EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
@settings(deadline=None, max_examples=50)
@given(data=st.data())
def test_every_delivery_event_round_trips_through_the_codec(event_type, data):
    event = data.draw(dataclass_strategy(event_type))
    assert CODEC.decode(*CODEC.encode(event)) == event
