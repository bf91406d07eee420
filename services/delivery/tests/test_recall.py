"""Recall aggregate: given events → when command → then events or refusal."""

from __future__ import annotations

import dataclasses
import functools
import typing

import pytest

from services.delivery.domain.model import (
    RaiseRecall,
    Recall,
    RecallCommand,
    RecallEvent,
    RecallNotice,
    RecallRaised,
    RecallUnitHeld,
    RecordUnitHeld,
    Trigger,
)
from services.delivery.domain.recall import decide, evolve
from shared.errors import InvalidArgument, NotFound

NOTICE = RecallNotice("order-1", "LON", "H1", ("unit-2",), "pt-0001")
RAISED = RecallRaised(
    trigger=Trigger.DONOR_POSITIVE,
    subject="donor-17",
    reason="donor HBV NAT positive at follow-up",
    dins=("G123426000001", "G123426000002"),
    unit_ids=("unit-1", "unit-2", "unit-3"),
    source_event_id="evt-42",
    notices=(NOTICE,),
)
HELD_1 = RecallUnitHeld("unit-1", "LON", "RECALLED")

OPEN: tuple[RecallEvent, ...] = (RAISED,)
PARTLY_HELD = (*OPEN, HELD_1)
ALL_HELD = (
    *PARTLY_HELD,
    RecallUnitHeld("unit-2", "LON", "NOT_IN_STOCK"),
    RecallUnitHeld("unit-3", "MAN", "RECALLED"),
)


def given(*events: RecallEvent) -> Recall:
    return functools.reduce(evolve, events, Recall())


def when(events: tuple[RecallEvent, ...], command: RecallCommand) -> list[RecallEvent]:
    return list(decide(given(*events), command))


def raise_recall(**changes: typing.Any) -> RaiseRecall:
    return RaiseRecall(dataclasses.replace(RAISED, **changes))


# ---- raise ----------------------------------------------------------------------------------


def test_raise_records_the_recall_with_every_unit_pending():
    assert when((), raise_recall()) == [RAISED]
    recall = given(*OPEN)
    assert recall.raised == RAISED
    assert recall.pending_units == ("unit-1", "unit-2", "unit-3")


@pytest.mark.parametrize(
    "changes",
    [{}, {"reason": "another reason"}, {"trigger": Trigger.PRODUCT_DEFECT}, {"unit_ids": ()}],
    ids=["same", "other reason", "other trigger", "no units"],
)
def test_raise_again_records_nothing(changes):
    assert when(OPEN, raise_recall(**changes)) == []
    assert when(ALL_HELD, raise_recall(**changes)) == []


@pytest.mark.parametrize("reason", ["", "   "])
def test_raise_needs_a_reason(reason):
    with pytest.raises(InvalidArgument) as refused:
        when((), raise_recall(reason=reason))
    assert refused.value.field == "reason"


def test_raise_needs_the_dins_or_units_it_covers():
    with pytest.raises(InvalidArgument) as refused:
        when((), raise_recall(dins=(), unit_ids=()))
    assert refused.value.field == "subject"


@pytest.mark.parametrize(
    "changes", [{"unit_ids": ()}, {"dins": ()}], ids=["dins only", "units only"]
)  # fmt: skip
def test_raise_with_dins_or_units_alone(changes):
    assert when((), raise_recall(**changes)) == [dataclasses.replace(RAISED, **changes)]


def test_a_recall_of_dins_only_has_no_pending_unit():
    assert given(dataclasses.replace(RAISED, unit_ids=())).pending_units == ()


# ---- units held -----------------------------------------------------------------------------


def test_holding_a_pending_unit_records_where_and_how():
    assert when(OPEN, RecordUnitHeld("unit-1", "LON", "RECALLED")) == [HELD_1]
    recall = given(*PARTLY_HELD)
    assert recall.held == (HELD_1,)
    assert recall.pending_units == ("unit-2", "unit-3")


def test_once_every_unit_is_held_none_is_pending():
    assert given(*ALL_HELD).pending_units == ()


def test_holding_a_unit_already_held_records_nothing():
    assert when(PARTLY_HELD, RecordUnitHeld("unit-1", "LON", "NOT_IN_STOCK")) == []


def test_holding_a_unit_the_recall_does_not_cover_records_nothing():
    assert when(OPEN, RecordUnitHeld("unit-9", "LON", "RECALLED")) == []


def test_holding_a_unit_of_a_recall_never_raised_is_not_found():
    with pytest.raises(NotFound):
        when((), RecordUnitHeld("unit-1", "LON", "RECALLED"))


def test_a_new_recall_has_no_pending_unit():
    assert given().pending_units == ()


# ---- evolve is total ------------------------------------------------------------------------

SAMPLES: dict[type, RecallEvent] = {RecallRaised: RAISED, RecallUnitHeld: HELD_1}
HISTORIES = {"new": (), "open": OPEN, "partly held": PARTLY_HELD, "all held": ALL_HELD}


def test_the_samples_cover_every_event_type():
    assert set(SAMPLES) == set(typing.get_args(RecallEvent))


@pytest.mark.parametrize("event", SAMPLES.values(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("history", HISTORIES.values(), ids=HISTORIES.keys())
def test_evolve_applies_every_event_type_in_any_state(history, event):
    assert isinstance(evolve(given(*history), event), Recall)


def test_evolve_refuses_what_is_not_a_recall_event():
    with pytest.raises(TypeError, match="unknown event"):
        evolve(Recall(), typing.cast(typing.Any, NOTICE))


def test_decide_refuses_what_is_not_a_recall_command():
    with pytest.raises(TypeError, match="unknown command"):
        decide(given(*OPEN), typing.cast(typing.Any, NOTICE))
