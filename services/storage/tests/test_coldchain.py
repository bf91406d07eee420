"""Cold-chain monitor: readings in, excursion and silent-sensor facts out, on event time."""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.storage.coldchain.monitor import TankMonitor
from services.storage.coldchain.watch import (
    ColdChainRules,
    ExcursionDetected,
    Fact,
    Reading,
    SensorSilent,
    TankWatch,
    observe,
)

RULES = ColdChainRules(max_celsius=-150.0, excursion_minutes=10.0, silence_minutes=15.0)
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
COLD = -190.0
WARM = -140.0


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def reading(tank_id: str, minute: float, celsius: float, site_id: str = "LON") -> Reading:
    return Reading(site_id, tank_id, celsius, at(minute))


def feed(monitor: TankMonitor, readings: list[Reading], partition: int = 0) -> list[Fact]:
    return [fact for r in readings for fact in monitor.observe(r, partition)]


def series(tank_id: str, minutes: range, celsius: float) -> list[Reading]:
    return [reading(tank_id, m, celsius) for m in minutes]


def fold(readings: list[Reading]) -> tuple[TankWatch, list[Fact]]:
    watch, facts = TankWatch(), []
    for r in readings:
        watch, new = observe(watch, r, RULES)
        facts.extend(new)
    return watch, facts


# ---- excursions -----------------------------------------------------------------------------


@settings(deadline=None, max_examples=100)
@given(
    st.lists(
        st.tuples(
            st.integers(-5, 600),  # minutes from T0, in any order
            st.floats(min_value=-273.15, max_value=-150.0),
        ),
        max_size=40,
    )
)
def test_readings_at_or_below_the_limit_never_report(steps):
    monitor = TankMonitor(RULES)
    assert feed(monitor, [reading("LON-T1", m, c) for m, c in steps]) == []


def test_warm_for_longer_than_n_minutes_reports_exactly_one_excursion():
    facts = feed(TankMonitor(RULES), series("LON-T1", range(0, 40), WARM))
    assert facts == [ExcursionDetected("LON", "LON-T1", at(0), at(11), WARM)]
    assert facts[0].cause == "excursion:LON-T1:2026-06-01T08:00:00+00:00"


def test_excursion_records_the_hottest_reading_of_the_episode():
    readings = [reading("LON-T1", 0, -149.0), reading("LON-T1", 5, -120.0)]
    facts = feed(TankMonitor(RULES), [*readings, reading("LON-T1", 11, -145.0)])
    assert [(f.since, f.max_celsius) for f in facts] == [(at(0), -120.0)]


def test_warm_for_exactly_n_minutes_is_not_yet_an_excursion():
    assert fold([reading("LON-T1", 0, WARM), reading("LON-T1", 10, WARM)])[1] == []


def test_a_short_spike_under_n_minutes_reports_nothing():
    spike = [*series("LON-T1", range(0, 10), WARM), *series("LON-T1", range(10, 60), COLD)]
    assert feed(TankMonitor(RULES), spike) == []


def test_back_below_the_limit_then_above_again_is_a_new_episode():
    readings = [
        *series("LON-T1", range(0, 12), WARM),
        reading("LON-T1", 12, COLD),
        *series("LON-T1", range(13, 30), WARM),
    ]
    facts = feed(TankMonitor(RULES), readings)
    assert [(f.since, f.detected_at) for f in facts] == [(at(0), at(11)), (at(13), at(24))]
    assert len({f.cause for f in facts}) == 2


def test_excursion_cause_is_the_same_when_readings_are_replayed():
    readings = series("LON-T1", range(0, 30), WARM)
    first, again = feed(TankMonitor(RULES), readings), feed(TankMonitor(RULES), readings)
    assert [f.cause for f in first] == [f.cause for f in again]


def test_late_readings_are_ignored():
    watch, _ = fold(series("LON-T1", range(0, 21), COLD))
    late = [reading("LON-T1", 5, WARM), reading("LON-T1", 0, WARM), reading("LON-T1", 19, WARM)]
    assert fold_from(watch, late) == (watch, [])


def test_a_redelivered_reading_changes_nothing():
    watch, _ = fold([reading("LON-T1", 0, COLD), reading("LON-T1", 3, WARM)])
    assert fold_from(watch, [reading("LON-T1", 3, WARM)]) == (watch, [])


def test_out_of_order_warm_readings_do_not_shorten_or_stretch_an_episode():
    readings = [
        reading("LON-T1", 5, WARM),
        reading("LON-T1", 2, WARM),  # late: the episode began at minute 5, as first seen
        reading("LON-T1", 14, WARM),
        reading("LON-T1", 16, WARM),
    ]
    assert [f.since for f in fold(readings)[1]] == [at(5)]


def fold_from(watch: TankWatch, readings: list[Reading]) -> tuple[TankWatch, list[Fact]]:
    facts: list[Fact] = []
    for r in readings:
        watch, new = observe(watch, r, RULES)
        facts.extend(new)
    return watch, facts


# ---- silent sensors (event time, per partition) ---------------------------------------------


def test_a_tank_silent_while_its_partition_reports_is_reported_once():
    monitor = TankMonitor(RULES)
    feed(monitor, [reading("LON-T1", 0, COLD)])
    facts = feed(monitor, series("LON-T2", range(0, 40), COLD))
    assert facts == [SensorSilent("LON", "LON-T1", at(0), at(16))]
    assert facts[0].cause == "sensor-silent:LON-T1:2026-06-01T08:00:00+00:00"


def test_silence_for_exactly_m_minutes_is_not_yet_reported():
    monitor = TankMonitor(RULES)
    feed(monitor, [reading("LON-T1", 0, COLD)])
    assert feed(monitor, series("LON-T2", range(0, 16), COLD)) == []


def test_a_tank_that_reports_again_and_falls_silent_again_is_a_new_silence():
    monitor = TankMonitor(RULES)
    readings = [reading("LON-T1", 0, COLD), reading("LON-T1", 20, COLD)]
    facts = feed(monitor, sorted([*readings, *series("LON-T2", range(0, 50), COLD)], key=_time))
    assert [(f.last_reading_at, f.detected_at) for f in facts] == [
        (at(0), at(16)),
        (at(20), at(36)),
    ]


def test_a_redelivered_reading_does_not_report_the_silence_again():
    monitor = TankMonitor(RULES)
    feed(monitor, [reading("LON-T1", 0, COLD), *series("LON-T2", range(0, 17), COLD)])
    redelivered = reading("LON-T1", 0, COLD)
    assert feed(monitor, [redelivered, *series("LON-T2", range(17, 30), COLD)]) == []


def test_a_tank_in_another_partition_is_not_judged_by_this_partitions_time():
    monitor = TankMonitor(RULES)
    feed(monitor, [reading("LON-T1", 0, COLD)], partition=1)
    assert feed(monitor, series("LON-T2", range(0, 60), COLD), partition=0) == []
    assert feed(monitor, [reading("LON-T3", 16, COLD)], partition=1) == [
        SensorSilent("LON", "LON-T1", at(0), at(16))
    ]


def test_a_late_reading_does_not_hold_back_the_partitions_time():
    monitor = TankMonitor(RULES)
    feed(monitor, [reading("LON-T1", 0, COLD), *series("LON-T2", range(0, 10), COLD)])
    late = [reading("LON-T3", 1, COLD), reading("LON-T2", 16, COLD)]
    assert feed(monitor, late) == [SensorSilent("LON", "LON-T1", at(0), at(16))]


def _time(r: Reading) -> datetime:
    return r.measured_at


# ---- replay determinism ---------------------------------------------------------------------

PARTITION_OF = {"LON-T1": 0, "LON-T2": 0, "LON-T3": 1, "MAN-T1": 1, "MAN-T2": 2}
steps = st.lists(
    st.tuples(
        st.sampled_from(sorted(PARTITION_OF)),
        st.integers(-2, 12),  # minutes after the partition's previous reading (late: negative)
        st.sampled_from([COLD, -150.0, -149.9, WARM]),
    ),
    max_size=60,
)


def partition_streams(drawn: list[tuple[str, int, float]]) -> dict[int, list[Reading]]:
    streams: dict[int, list[Reading]] = collections.defaultdict(list)
    clock: dict[int, int] = collections.defaultdict(int)
    for tank_id, gap, celsius in drawn:
        partition = PARTITION_OF[tank_id]
        clock[partition] += gap
        streams[partition].append(reading(tank_id, clock[partition], celsius, site_id=tank_id[:3]))
    return streams


def consume(streams: dict[int, list[Reading]], order: list[int]) -> dict[int, list[Fact]]:
    """Feed the partitions interleaved as `order` says; the facts each partition raised."""
    monitor = TankMonitor(RULES)
    cursor = dict.fromkeys(streams, 0)
    facts: dict[int, list[Fact]] = collections.defaultdict(list)
    pending = [p for p in order if p in streams]
    pending += [p for p, rs in streams.items() for _ in rs]  # whatever the order left over
    for partition in pending:
        if cursor[partition] < len(streams[partition]):
            r = streams[partition][cursor[partition]]
            cursor[partition] += 1
            for fact in monitor.observe(r, partition):
                facts[PARTITION_OF[fact.tank_id]].append(fact)
    return dict(facts)


@settings(deadline=None, max_examples=150)
@given(steps, st.lists(st.sampled_from([0, 1, 2]), max_size=80), st.randoms())
def test_replaying_partitions_interleaved_differently_gives_the_same_facts(drawn, order, rnd):
    streams = partition_streams(drawn)
    one_by_one = [p for p in sorted(streams) for _ in streams[p]]
    shuffled = one_by_one.copy()
    rnd.shuffle(shuffled)
    expected = consume(streams, one_by_one)
    assert consume(streams, order) == expected
    assert consume(streams, shuffled) == expected


# ---- wall clock, for tanks alone in their partition -----------------------------------------


def test_live_check_reports_a_silent_tank_by_the_wall_clock():
    monitor = TankMonitor(RULES)
    feed(monitor, [reading("LON-T1", 0, COLD)])
    assert monitor.check_silence_live(at(15)) == []
    assert monitor.check_silence_live(at(16)) == [SensorSilent("LON", "LON-T1", at(0), at(16))]
    assert monitor.check_silence_live(at(17)) == []


def test_live_check_ignores_data_older_than_a_day():
    monitor = TankMonitor(RULES)
    feed(monitor, [reading("LON-T1", 0, COLD)])  # a replay of last year's readings
    assert monitor.check_silence_live(T0 + timedelta(days=1)) == []
    assert monitor.check_silence_live(T0 + timedelta(days=365)) == []
    assert monitor.check_silence_live(T0 + timedelta(hours=23)) != []


def test_live_check_and_partition_time_report_a_silence_only_once():
    monitor = TankMonitor(RULES)
    feed(monitor, [reading("LON-T1", 0, COLD)])
    assert len(monitor.check_silence_live(at(20))) == 1
    assert feed(monitor, series("LON-T2", range(0, 30), COLD)) == []


# ---- persisted watches ----------------------------------------------------------------------


def recording_monitor(persist_every_s: float) -> tuple[TankMonitor, list[tuple[str, TankWatch]]]:
    saved: list[tuple[str, TankWatch]] = []
    monitor = TankMonitor(RULES, lambda t, w: saved.append((t, w)), persist_every_s=persist_every_s)
    return monitor, saved


def test_steady_cold_readings_are_persisted_coarsely_not_on_every_reading():
    monitor, saved = recording_monitor(persist_every_s=60.0)
    every_10s = [
        Reading("LON", "LON-T1", COLD, T0 + timedelta(seconds=s)) for s in range(0, 300, 10)
    ]
    feed(monitor, every_10s)
    assert [w.last_reading_at for _, w in saved] == [
        T0 + timedelta(seconds=s) for s in range(0, 300, 60)
    ]


def test_flag_changes_are_persisted_at_once():
    monitor, saved = recording_monitor(persist_every_s=3600.0)
    feed(monitor, [reading("LON-T1", 0, COLD)])
    feed(monitor, [reading("LON-T1", 1, WARM)])  # an episode begins
    feed(monitor, [reading("LON-T1", 2, WARM)])  # nothing new to keep
    (fact,) = feed(monitor, [reading("LON-T1", 12, WARM)])  # excursion detected…
    monitor.acknowledge(fact)  # …and delivered to storage: only now kept as reported
    feed(monitor, [reading("LON-T1", 13, COLD)])  # episode over
    kept = [(w.above_since, w.excursion_reported) for _, w in saved]
    assert kept == [(None, False), (at(1), False), (at(1), True), (None, False)]


def test_a_reported_flag_is_not_kept_before_its_fact_is_acknowledged():
    """A crash between detection and delivery must report the episode again, not lose it."""
    monitor, saved = recording_monitor(persist_every_s=3600.0)
    feed(monitor, series("LON-T1", range(0, 13), WARM))
    assert saved and not any(w.excursion_reported for _, w in saved)
    restored = saved[-1][1]
    again = TankMonitor(RULES, restore=lambda t: restored)
    facts = feed(again, [reading("LON-T1", 14, WARM)])
    assert [type(f).__name__ for f in facts] == ["ExcursionDetected"]


def test_reported_silence_is_persisted():
    monitor, saved = recording_monitor(persist_every_s=3600.0)
    feed(monitor, [reading("LON-T1", 0, COLD), reading("LON-T2", 0, COLD)])
    saved.clear()
    facts = feed(monitor, series("LON-T2", range(1, 17), COLD))
    assert saved == []  # detected, not yet delivered
    for fact in facts:
        monitor.acknowledge(fact)
    assert [(t, w.silence_reported) for t, w in saved] == [("LON-T1", True)]


def test_a_restored_watch_does_not_report_its_excursion_again():
    restored = TankWatch("LON", at(12), at(0), WARM, excursion_reported=True)
    monitor = TankMonitor(RULES, restore=lambda t: restored if t == "LON-T1" else None)
    assert feed(monitor, series("LON-T1", range(13, 30), WARM)) == []


def test_a_watch_restored_after_restart_is_judged_by_the_live_check():
    from datetime import UTC, datetime, timedelta

    from services.storage.coldchain.monitor import TankMonitor
    from services.storage.coldchain.watch import ColdChainRules, SensorSilent, TankWatch

    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    monitor = TankMonitor(ColdChainRules(silence_minutes=15))
    monitor.adopt("LON-T9", TankWatch("LON", now - timedelta(minutes=20)))
    (fact,) = monitor.check_silence_live(now)
    assert isinstance(fact, SensorSilent) and fact.tank_id == "LON-T9"
    assert monitor.check_silence_live(now + timedelta(minutes=1)) == []  # reported once


@pytest.mark.parametrize(
    ("celsius", "minutes_ahead", "field"),
    [
        (float("nan"), 0, "celsius"),
        (-300.0, 0, "celsius"),
        (150.0, 0, "celsius"),
        (-190.0, 10, "measured_at"),
    ],
)
def test_readings_that_cannot_be_physical_or_are_from_the_future_are_refused(
    celsius, minutes_ahead, field
):
    from services.storage.coldchain.watch import validate_reading
    from shared.errors import InvalidArgument

    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    with pytest.raises(InvalidArgument) as err:
        validate_reading(
            Reading("LON", "LON-T1", celsius, now + timedelta(minutes=minutes_ahead)), now
        )
    assert err.value.field == field


def test_a_reading_a_little_ahead_of_the_server_clock_is_accepted():
    from services.storage.coldchain.watch import validate_reading

    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    reading = Reading("LON", "LON-T1", -190.0, now + timedelta(minutes=2))
    assert validate_reading(reading, now) is reading
