"""One contract, every EventStore adapter: in-memory and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from itertools import pairwise

import asyncpg
import pytest

from shared.bounds import MAX_ENVELOPE_BYTES
from shared.chain_key import ChainKey
from shared.envelope_codec import encode
from shared.errors import ConcurrencyConflict, InvalidArgument
from shared.eventstore import AggregateAppend, AppendResult, EventStore, InMemoryEventStore
from shared.hashchain import GENESIS
from shared.postgres_eventstore import PostgresEventStore
from tests.factories import aggregate_id, new_event


@pytest.fixture(params=["in_memory", "postgres", "postgres_runtime_role"])
def store(request: pytest.FixtureRequest) -> EventStore:
    if request.param == "in_memory":
        return InMemoryEventStore("LON")
    # The runtime role too: everything the store does needs no more than it is granted.
    fixture = "runtime_pool" if request.param == "postgres_runtime_role" else "pool"
    pool: asyncpg.Pool = request.getfixturevalue(fixture)
    return PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())


async def test_append_assigns_contiguous_versions_and_increasing_positions(store: EventStore):
    agg = aggregate_id()
    first = await store.append(agg, 0, [new_event(1), new_event(2)])
    second = await store.append(agg, 2, [new_event(3)])
    events = await store.load(agg)
    assert [e.aggregate_version for e in events] == [1, 2, 3]
    positions = [e.position for e in (*first.events, *second.events)]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert all(e.site_id == "LON" and e.actor == "operator:alice" for e in events)


async def test_stale_expected_version_raises_conflict_and_writes_nothing(store: EventStore):
    agg = aggregate_id()
    await store.append(agg, 0, [new_event(1)])
    head = await store.head_position()
    with pytest.raises(ConcurrencyConflict) as err:
        await store.append(agg, 0, [new_event(2), new_event(3)])
    assert (err.value.expected, err.value.actual) == (0, 1)
    assert await store.head_position() == head
    assert [e.aggregate_version for e in await store.load(agg)] == [1]


async def test_expected_version_ahead_of_stream_is_a_conflict(store: EventStore):
    with pytest.raises(ConcurrencyConflict):
        await store.append(aggregate_id(), 3, [new_event(1)])


async def test_reappending_same_event_ids_is_a_noop(store: EventStore):
    agg = aggregate_id()
    batch = [new_event(1), new_event(2)]
    first = await store.append(agg, 0, batch)
    again = await store.append(agg, 0, batch)
    assert again.duplicate and not first.duplicate
    assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
    assert len(await store.load(agg)) == 2


async def test_event_id_reused_for_another_aggregate_is_refused(store: EventStore):
    event = new_event(1)
    await store.append(aggregate_id(), 0, [event])
    with pytest.raises(InvalidArgument, match="event_id"):
        await store.append(aggregate_id(), 0, [event])


@pytest.mark.parametrize(
    ("agg", "version", "events", "field"),
    [
        ("", 0, [new_event()], "aggregate_id"),
        ("a", -1, [new_event()], "expected_version"),
        ("a", 0, [], "events"),
        ("a", 0, [replace(new_event(), actor="")], "actor"),
        ("a", 0, [replace(new_event(), event_id="not-a-uuid")], "event_id"),
        ("a", 0, [replace(new_event(), reason="bad\x00reason")], "reason"),
    ],
)
async def test_bad_append_names_the_field_and_writes_nothing(
    store: EventStore, agg, version, events, field
):
    with pytest.raises(InvalidArgument) as err:
        await store.append(agg, version, events)
    assert err.value.field.startswith(field)
    assert await store.head_position() == 0


async def test_an_event_too_big_for_the_topic_is_refused_naming_it_and_writes_nothing(
    store: EventStore,
):
    agg = aggregate_id()
    await store.append(agg, 0, [new_event(1)])
    head = await store.head_position()
    fits = new_event(2, payload=b"x" * (MAX_ENVELOPE_BYTES - 1_000))
    too_big = new_event(3, payload=b"x" * MAX_ENVELOPE_BYTES)
    with pytest.raises(InvalidArgument) as err:
        await store.append(agg, 1, [fits, too_big])
    assert err.value.field == "events"
    assert too_big.event_id in err.value.rule and too_big.event_type in err.value.rule
    assert f"at most {MAX_ENVELOPE_BYTES}" in err.value.rule
    size = int(err.value.rule.split("would be ")[1].split(" bytes")[0])
    assert MAX_ENVELOPE_BYTES < size < MAX_ENVELOPE_BYTES + 1_000
    assert await store.head_position() == head
    stored = await store.append(agg, 1, [fits])
    assert len(encode(stored.events[0])) <= MAX_ENVELOPE_BYTES


async def test_load_up_to_version(store: EventStore):
    agg = aggregate_id()
    await store.append(agg, 0, [new_event(i) for i in range(5)])
    assert [e.aggregate_version for e in await store.load(agg, up_to_version=3)] == [1, 2, 3]
    assert await store.load(aggregate_id()) == []


async def test_read_all_pages_in_position_order(store: EventStore):
    aggs = [aggregate_id() for _ in range(3)]
    for round_ in range(3):
        for agg in aggs:
            await store.append(agg, round_, [new_event(round_)])
    page1 = await store.read_all(0, limit=4)
    page2 = await store.read_all(page1[-1].position, limit=100)
    positions = [e.position for e in page1 + page2]
    assert positions == sorted(positions) and len(positions) == 9


async def test_stored_events_survive_a_round_trip_exactly(store: EventStore):
    agg = aggregate_id()
    appended = (await store.append(agg, 0, [new_event(1, payload=b"\x00\xffbinary")])).events
    assert tuple(await store.load(agg)) == appended


async def test_hash_chain_links_every_event_and_verifies(store: EventStore):
    for _ in range(3):
        await store.append(aggregate_id(), 0, [new_event(1), new_event(2)])
    events = await store.read_all(0)
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in pairwise(events))
    report = await store.verify_chain()
    assert report.intact and report.events_checked == 6
    partial = await store.verify_chain(from_position=events[2].position)
    assert partial.intact and partial.events_checked == 3


async def test_concurrent_appends_are_decided_as_if_one_by_one(store: EventStore):
    """Many appends in flight at once (grouped into one commit where the adapter can)."""
    aggs = [aggregate_id() for _ in range(5)]
    replay = [new_event(0)]
    calls = [store.append(agg, 0, [new_event(1), new_event(2)]) for agg in aggs]
    calls += [store.append(aggs[0], 0, [new_event(3)])]  # stale by the time it is decided
    calls += [store.append(aggs[1], 2, replay), store.append(aggs[1], 2, replay)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results[:5])
    assert isinstance(results[5], ConcurrencyConflict)
    first, again = results[6], results[7]
    assert isinstance(first, AppendResult) and isinstance(again, AppendResult)
    assert not first.duplicate and again.duplicate and first.events == again.events
    assert [e.aggregate_version for e in await store.load(aggs[1])] == [1, 2, 3]
    assert (await store.verify_chain()).intact
    assert await store.head_position() >= 11


async def test_append_all_writes_every_aggregate_in_one_contiguous_run(store: EventStore):
    tank, unit = aggregate_id("tank"), aggregate_id("unit")
    await store.append(tank, 0, [new_event(0)])
    results = await store.append_all(
        [
            AggregateAppend(tank, 1, [new_event(1), new_event(2)]),
            AggregateAppend(unit, 0, [new_event(3)]),
        ]
    )
    assert [[e.aggregate_version for e in r.events] for r in results] == [[2, 3], [1]]
    assert not any(r.duplicate for r in results)
    positions = [e.position for r in results for e in r.events]
    assert positions == list(range(positions[0], positions[0] + 3))
    assert [e.event_id for e in await store.read_all(1)] == [
        e.event_id for r in results for e in r.events
    ]
    assert (await store.verify_chain()).intact


async def test_append_all_with_one_stale_aggregate_writes_nothing_and_names_it(store: EventStore):
    tank, unit = aggregate_id("tank"), aggregate_id("unit")
    await store.append(unit, 0, [new_event(0)])
    head = await store.head_position()
    with pytest.raises(ConcurrencyConflict) as err:
        await store.append_all(
            [AggregateAppend(tank, 0, [new_event(1)]), AggregateAppend(unit, 0, [new_event(2)])]
        )
    assert (err.value.aggregate_id, err.value.expected, err.value.actual) == (unit, 0, 1)
    assert await store.head_position() == head
    assert await store.load(tank) == []
    assert (await store.verify_chain()).intact
    again = await store.append_all(
        [AggregateAppend(tank, 0, [new_event(1)]), AggregateAppend(unit, 1, [new_event(2)])]
    )
    assert [e.position for r in again for e in r.events] == [head + 1, head + 2]


async def test_reappending_the_same_multi_aggregate_append_is_a_noop(store: EventStore):
    parts = [
        AggregateAppend(aggregate_id(), 0, [new_event(1)]),
        AggregateAppend(aggregate_id(), 0, [new_event(2), new_event(3)]),
    ]
    first = await store.append_all(parts)
    again = await store.append_all(parts)
    assert all(r.duplicate for r in again) and not any(r.duplicate for r in first)
    assert [r.events for r in again] == [r.events for r in first]
    assert await store.head_position() == 3


@pytest.mark.parametrize(
    ("parts", "field"),
    [
        ([], "appends"),
        ([AggregateAppend("a", 0, [new_event()]), AggregateAppend("a", 1, [new_event()])],
         "appends.aggregate_id"),
        ([AggregateAppend("a", 0, [new_event()]), AggregateAppend("b", -1, [new_event()])],
         "expected_version"),
        ([AggregateAppend("a", 0, [new_event()]), AggregateAppend("b", 0, [])], "events"),
    ],
)  # fmt: skip
async def test_bad_multi_aggregate_append_names_the_field_and_writes_nothing(
    store: EventStore, parts, field
):
    with pytest.raises(InvalidArgument) as err:
        await store.append_all(parts)
    assert err.value.field == field
    assert await store.head_position() == 0


async def test_one_event_id_in_two_parts_is_refused(store: EventStore):
    event = new_event()
    with pytest.raises(InvalidArgument, match="event_id"):
        await store.append_all(
            [
                AggregateAppend(aggregate_id(), 0, [event]),
                AggregateAppend(aggregate_id(), 0, [event]),
            ]
        )
    assert await store.head_position() == 0


async def test_racing_multi_aggregate_appends_on_a_shared_aggregate_let_exactly_one_win(
    store: EventStore,
):
    tank = aggregate_id("tank")
    units = [aggregate_id("unit") for _ in range(4)]
    results = await asyncio.gather(
        *(
            store.append_all(
                [AggregateAppend(tank, 0, [new_event(1)]), AggregateAppend(u, 0, [new_event(2)])]
            )
            for u in units
        ),
        return_exceptions=True,
    )
    winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    assert len(winners) == 1
    losers = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, ConcurrencyConflict) and r.aggregate_id == tank for r in losers)
    assert [len(await store.load(u)) for u in units] == [int(i in winners) for i in range(4)]
    assert await store.head_position() == 2
    assert (await store.verify_chain()).intact
