"""Batched telemetry: a sensor's batch is judged at once, with the verdicts of one by one."""

from __future__ import annotations

import collections
import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.storage.coldchain.monitor import TankMonitor
from services.storage.coldchain.watch import (
    ColdChainRules,
    ExcursionDetected,
    Fact,
    Reading,
    ReadingBatch,
    SensorSilent,
    TankWatch,
    at_unix_ms,
    observe,
    observe_batch,
    unix_ms,
)

RULES = ColdChainRules(max_celsius=-150.0, excursion_minutes=10.0, silence_minutes=15.0)
T0_MS = 1_780_000_000_000  # 2026-05-28
COLD, WARM = -190.0, -140.0
TEMPERATURES = st.sampled_from([COLD, -150.0, -149.9, WARM, float("nan")])
PARTITION_OF = {"LON-T1": 0, "LON-T2": 0, "LON-T3": 1, "MAN-T1": 1, "MAN-T2": 2}
# Gaps (ms) on whole minutes and seconds too, so readings land exactly on the rules' limits
# (10 minutes warm, 15 silent, a silence check every 30 s of event time); negative = late.
GAPS = st.one_of(
    st.sampled_from([0, 1, -1, 29_999, 30_000, 30_001, 60_000, 600_000, 600_001, 900_001]),
    st.integers(-1, 8).map(lambda m: m * 60_000),
    st.integers(-20, 200).map(lambda s: s * 1000),
    st.integers(-20_000, 200_000),
)


def batch(tank_id: str, readings: list[tuple[int, float]], site_id: str = "LON") -> ReadingBatch:
    return ReadingBatch(site_id, tank_id, [c for _, c in readings], [ms for ms, _ in readings])


def one_by_one(watch: TankWatch, readings: list[Reading]) -> tuple[TankWatch, list[Fact]]:
    facts: list[Fact] = []
    for r in readings:
        watch, new = observe(watch, r, RULES)
        facts.extend(new)
    return watch, facts


def split(items: list, cuts: list[int]) -> list[list]:
    bounds = sorted({0, len(items), *(c % (len(items) + 1) for c in cuts)})
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


# ---- one tank: the pure fold ----------------------------------------------------------------

tank_steps = st.lists(
    st.tuples(GAPS, TEMPERATURES),  # ms after the previous reading
    max_size=60,
)


@settings(deadline=None, max_examples=300)
@given(tank_steps, st.lists(st.integers(0, 60), max_size=8))
def test_a_tanks_readings_folded_in_any_batches_give_the_watch_and_facts_of_one_by_one(steps, cuts):
    clock, readings = T0_MS, []
    for gap, celsius in steps:
        clock += gap
        readings.append((clock, celsius))
    expected = one_by_one(TankWatch(), batch("LON-T1", readings).readings())
    watch, facts = TankWatch(), []
    for part in split(readings, cuts):
        watch, new = observe_batch(watch, batch("LON-T1", part), RULES)
        facts.extend(new)
    assert (watch, facts) == expected


def test_a_batch_of_cold_readings_keeps_only_the_newest_time():
    cold = batch("LON-T1", [(T0_MS + 2000, COLD), (T0_MS + 1000, COLD), (T0_MS + 3000, -150.0)])
    assert observe_batch(TankWatch(), cold, RULES) == (
        TankWatch("LON", at_unix_ms(T0_MS + 3000)),
        [],
    )


def test_an_excursion_inside_a_batch_is_reported_at_the_reading_that_makes_it_one():
    warm = batch("LON-T1", [(T0_MS + minute * 60_000, WARM) for minute in range(13)])
    _, facts = observe_batch(TankWatch(), warm, RULES)
    assert facts == [
        ExcursionDetected("LON", "LON-T1", at_unix_ms(T0_MS), at_unix_ms(T0_MS + 660_000), WARM)
    ]


# ---- many tanks and partitions: the monitor -------------------------------------------------

network_steps = st.lists(
    st.tuples(
        # Some tanks report far less often than others: silent sensors are common.
        st.sampled_from(["LON-T1", *["LON-T2"] * 5, "LON-T3", *["MAN-T1"] * 3, "MAN-T2"]),
        GAPS,  # ms after the partition's previous reading
        TEMPERATURES,
    ),
    min_size=10,
    max_size=80,
)


@dataclass(frozen=True)
class Record:
    partition: int
    body: Reading | ReadingBatch


def partition_logs(drawn: list[tuple[str, int, float]]) -> dict[int, list[Reading]]:
    logs: dict[int, list[Reading]] = collections.defaultdict(list)
    clock: dict[int, int] = collections.defaultdict(lambda: T0_MS)
    for tank_id, gap, celsius in drawn:
        partition = PARTITION_OF[tank_id]
        clock[partition] += gap
        logs[partition].append(Reading(tank_id[:3], tank_id, celsius, at_unix_ms(clock[partition])))
    return logs


def as_records(partition: int, log: list[Reading], rnd: random.Random) -> list[Record]:
    """The log as a sensor gateway might send it: each run of one tank's readings cut into
    batches anywhere; a lone reading sent as a batch or as a single record."""
    records: list[Record] = []
    run: list[Reading] = []
    for i, r in enumerate(log):
        run.append(r)
        if i + 1 == len(log) or log[i + 1].tank_id != r.tank_id or rnd.random() < 0.3:
            ms = [unix_ms(x.measured_at) for x in run]
            body = run[0] if len(run) == 1 and rnd.random() < 0.5 else _batch_of(run, ms)
            records.append(Record(partition, body))
            run = []
    return records


def _batch_of(run: list[Reading], ms: list[int]) -> ReadingBatch:
    return ReadingBatch(run[0].site_id, run[0].tank_id, [r.celsius for r in run], ms)


def consume(monitor: TankMonitor, records: list[Record]) -> dict[int, list[Fact]]:
    facts: dict[int, list[Fact]] = collections.defaultdict(list)
    for record in records:
        if isinstance(record.body, Reading):
            new = monitor.observe(record.body, record.partition)
        else:
            new = monitor.observe_batch(record.body, record.partition)
        for fact in new:
            facts[PARTITION_OF[fact.tank_id]].append(fact)
    return dict(facts)


def interleave(streams: list[list[Record]], rnd: random.Random) -> list[Record]:
    """Any interleaving of the partitions that keeps each partition's (so each tank's) order."""
    cursors, out = [0] * len(streams), []
    while live := [i for i, s in enumerate(streams) if cursors[i] < len(s)]:
        i = rnd.choice(live)
        out.append(streams[i][cursors[i]])
        cursors[i] += 1
    return out


@settings(deadline=None, max_examples=300)
@given(network_steps, st.randoms(use_true_random=False))
def test_any_batching_and_partition_interleaving_gives_the_verdicts_of_one_by_one(drawn, rnd):
    logs = partition_logs(drawn)
    reference = TankMonitor(RULES)
    expected = consume(
        reference, [Record(p, r) for p in sorted(logs) for r in logs[p]]
    )  # one reading at a time, one partition after another
    batched = TankMonitor(RULES)
    streams = [as_records(p, logs[p], rnd) for p in sorted(logs)]
    assert consume(batched, interleave(streams, rnd)) == expected
    assert batched.watches == reference.watches
    assert batched.watermarks == reference.watermarks
    assert batched._checked_at == reference._checked_at  # the same silence-check schedule


def test_silence_is_judged_between_a_batchs_readings_as_one_by_one_would():
    quiet, busy = Reading("LON", "LON-T1", COLD, at_unix_ms(T0_MS)), "LON-T2"
    minutes = [(T0_MS + m * 60_000, COLD) for m in range(0, 40)]
    monitor = TankMonitor(RULES)
    monitor.observe(quiet)
    (fact,) = monitor.observe_batch(batch(busy, minutes))
    assert (fact.tank_id, fact.detected_at) == ("LON-T1", at_unix_ms(T0_MS + 16 * 60_000))


def test_an_empty_batch_changes_nothing():
    monitor = TankMonitor(RULES)
    assert monitor.observe_batch(batch("LON-T1", [])) == []
    assert monitor.watches == {} and monitor.watermarks == {}


def test_a_batch_the_monitor_fails_on_leaves_the_partitions_silence_checks_working():
    # decode_telemetry refuses such a batch; should one still fail, the worker skips it and
    # the monitor goes on judging the partition.
    monitor = TankMonitor(RULES)
    monitor.observe(Reading("LON", "LON-T1", COLD, at_unix_ms(T0_MS)))
    with pytest.raises(OverflowError):
        monitor.observe_batch(batch("LON-T2", [(T0_MS, COLD), (10**15, COLD)]))
    assert "LON-T2" not in monitor.partition_of
    late = T0_MS + 16 * 60_000
    assert monitor.observe_batch(batch("LON-T3", [(late, COLD)])) == [
        SensorSilent("LON", "LON-T1", at_unix_ms(T0_MS), at_unix_ms(late))
    ]
    assert monitor.check_silence(0) == []
