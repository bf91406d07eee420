"""State as of a moment without a network: the fold equals the domain's own fold per aggregate,
the bounds are checked naming the field and rule, the CLI refuses a bad TIME before asking
anyone, and the answer is chunked with the position reached on every message."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from deploy.cli import CliError, main
from deploy.cli.as_of import parse_time, state_request
from services.storage.adapters.as_of import FOLDS, unit_record
from services.storage.adapters.codec import CODEC, TANK, UNIT
from services.storage.domain import model
from shared.errors import InvalidArgument, PreconditionFailed
from shared.events import StoredEvent
from shared.operator_servicer import STATES_PER_MESSAGE, state_messages
from shared.state_as_of import AsOfState, Bound, Folding, StatesAsOf
from shared.topics import STORAGE_EVENTS
from tests.site_log import site_log

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def storage_events(donors: int) -> list[StoredEvent]:
    return [e for topic, e in site_log(donors) if topic == STORAGE_EVENTS]


def rows(events: list[StoredEvent]) -> list[tuple[object, ...]]:
    """As the fold's query selects them."""
    return [
        (e.aggregate_type, e.aggregate_id, e.event_type, e.payload, e.recorded_at) for e in events
    ]


def test_folding_a_prefix_of_the_log_equals_each_aggregates_own_fold_up_to_there():
    events = storage_events(5)
    cut = len(events) // 2 + 3  # mid-way through a unit's life
    folding = Folding({f.aggregate.aggregate_type: f for f in FOLDS})
    for start in range(0, cut, 7):  # in batches, as the cursor delivers them
        folding.fold(rows(events[start : min(start + 7, cut)]))
    states = {s.aggregate_id: s for s in folding.states()}
    taken = events[:cut]
    for unit_id in {e.aggregate_id for e in taken}:
        own = [e for e in taken if e.aggregate_id == unit_id]
        assert states[unit_id].record == unit_record(unit_id, UNIT.fold(own))
        assert states[unit_id].version == len(own)
        assert states[unit_id].updated_at == own[-1].recorded_at
    assert len(states) == len({e.aggregate_id for e in taken})
    assert {s.record["status"] for s in states.values()} >= {"PICKED", "STORED"}


def test_tanks_and_units_fold_side_by_side_by_type():
    address = "RPL-T1/R1/B1/P01"
    tank = [
        model.TankRegistered("RPL-T1", (model.PositionDef(address, False),)),
        model.PositionOccupied(address, "U1"),
    ]
    encoded = [("tank", "RPL-T1", *CODEC.encode(e), NOW) for e in tank]
    folding = Folding({f.aggregate.aggregate_type: f for f in FOLDS})
    folding.fold(encoded)
    (state,) = folding.states()
    assert (state.aggregate_type, state.version) == ("tank", 2)
    assert state.record == {"tank_id": "RPL-T1", "positions": 1, "occupied": 1}
    assert TANK.aggregate_type == "tank"


@pytest.mark.parametrize(
    ("bound", "field", "rule"),
    [
        (Bound(at_position=3, as_of=NOW), "at_position", "not both"),
        (Bound(as_of=NOW + timedelta(seconds=1)), "as_of", "in the future"),
        (Bound(aggregate_type="donor"), "aggregate_type", "one of tank, unit"),
    ],
)
def test_a_bad_bound_is_refused_naming_the_field_and_the_rule(bound, field, rule):
    with pytest.raises(InvalidArgument) as refused:
        bound.checked(FOLDS, NOW)
    assert refused.value.field == field and rule in refused.value.rule


def test_a_service_that_folds_nothing_says_so():
    with pytest.raises(PreconditionFailed, match="declares no aggregate"):
        Bound().checked((), NOW)


def test_a_bound_picks_its_aggregate_type_or_every_one():
    assert [
        f.aggregate.aggregate_type for f in Bound(aggregate_type="unit").checked(FOLDS, NOW)
    ] == ["unit"]
    assert len(Bound(as_of=NOW).checked(FOLDS, NOW)) == 2


def test_the_answer_is_chunked_and_every_chunk_carries_the_position_reached():
    states = [
        AsOfState("unit", f"U{n:05d}", 1, NOW, {"unit_id": f"U{n:05d}"})
        for n in range(STATES_PER_MESSAGE * 2 + 1)
    ]
    chunks = list(state_messages(StatesAsOf(42, NOW, 50, states), "LON", "storage"))
    assert [len(c.states) for c in chunks] == [STATES_PER_MESSAGE, STATES_PER_MESSAGE, 1]
    assert {(c.position, c.head_position, c.site_id) for c in chunks} == {(42, 50, "LON")}
    last = chunks[-1].states[0]
    assert json.loads(last.state_json) == {"unit_id": states[-1].aggregate_id}
    assert last.updated_at.ToDatetime(tzinfo=UTC) == NOW
    assert chunks[0].recorded_at.ToDatetime(tzinfo=UTC) == NOW
    (empty,) = state_messages(StatesAsOf(0, None, 0, []), "LON", "storage")
    assert not empty.states and not empty.HasField("recorded_at")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T09:00:00Z", datetime(2026, 11, 29, 9, tzinfo=UTC)),
        ("2026-11-29T10:00+01:00", datetime(2026, 11, 29, 9, tzinfo=UTC)),
    ],
)
def test_a_time_with_its_zone_is_read_as_utc(text, expected):
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("yesterday 9am", "is not a time: give an ISO 8601 time with its zone"),
        ("2026-11-29T09:00:00", "has no zone"),
        ("2026-11-30T09:00:00Z", "is in the future"),
    ],
)
def test_a_bad_time_is_refused_naming_the_option_and_the_rule(text, why):
    with pytest.raises(CliError) as refused:
        parse_time(text, now=NOW)
    assert str(refused.value).startswith(f"--as-of {text!r}") and why in str(refused.value)


def test_a_time_and_a_position_together_are_refused():
    with pytest.raises(CliError, match="not both"):
        state_request(NOW, 3)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["inventory", "--site", "LON", "--as-of", "9am"], "--as-of '9am' is not a time"),
        (["audit", "log", "--aggregate", "U1", "--as-of", "9am"], "--as-of '9am' is not a time"),
        (["inventory", "--site", "LON", "--at-position", "0"], "--at-position"),
    ],
)
def test_the_cli_refuses_bad_input_before_reading_the_endpoints_file(argv, why, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--endpoints", str(tmp_path / "none.json")], out, err)
    assert code == 2 and not out.getvalue()
    assert why in err.getvalue() and "no endpoints file" not in err.getvalue()


async def test_get_state_as_of_refuses_at_once_while_the_servicer_is_already_folding(monkeypatch):
    from cellbank.operator.v1 import operator_service_pb2 as opb

    from shared import operator_servicer
    from shared.errors import ResourceExhausted

    started, release = asyncio.Semaphore(0), asyncio.Event()

    async def slow_fold(pool, folds, bound, now):
        started.release()
        await release.wait()
        return StatesAsOf(0, None, 0, [])

    monkeypatch.setattr(operator_servicer, "fold_as_of", slow_fold)
    store = SimpleNamespace(pool=None, site_id="LON")
    servicer = operator_servicer.OperatorServicer(
        store, service="storage", relay_name="r", trust=None, clock=lambda: NOW
    )

    async def call() -> list[object]:
        return [m async for m in servicer.GetStateAsOf(opb.GetStateAsOfRequest(), None)]

    folding = [asyncio.create_task(call()) for _ in range(operator_servicer.STATES_AS_OF_AT_ONCE)]
    for _ in folding:
        await started.acquire()
    with pytest.raises(ResourceExhausted, match="GetStateAsOf"):
        await call()
    release.set()
    await asyncio.gather(*folding)
    assert await call()  # free again once the folds are done
