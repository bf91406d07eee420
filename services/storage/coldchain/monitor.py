"""The tank monitor: per-tank watches plus the event-time watermark for silent sensors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from services.storage.coldchain.watch import (
    EPOCH,
    MILLISECOND,
    ColdChainRules,
    ExcursionDetected,
    Fact,
    Reading,
    ReadingBatch,
    SensorSilent,
    TankWatch,
    at_unix_ms,
    mark_silent,
    observe,
    observe_batch,
    silent_tanks,
    unix_ms,
)

LIVE_HORIZON = timedelta(days=1)
SILENCE_CHECK_STEP = timedelta(seconds=30)


class TankMonitor:
    """Pure state over readings (no clock): replaying the same readings gives the same facts.

    Silence is judged against the event-time watermark of the tank's own partition (its
    readings arrive in a fixed order, so replay gives the same facts even when partitions are
    consumed at different speeds); `check_silence_live` adds a wall-clock check for a tank that
    is alone in its partition (only data from the last day counts as live).

    `persist` is called when a watch changed in a way worth keeping across restarts (the Faust
    table); last-reading times are kept coarsely to spare the changelog.
    """

    def __init__(
        self,
        rules: ColdChainRules,
        persist: Callable[[str, TankWatch], None] | None = None,
        restore: Callable[[str], TankWatch | None] | None = None,
        persist_every_s: float = 300.0,
    ) -> None:
        self.rules = rules
        self.watches: dict[str, TankWatch] = {}
        self.partition_of: dict[str, int] = {}
        # The tanks of each partition, in order of arrival: a silence check looks at its own.
        self._tanks_in: dict[int, dict[str, None]] = {}
        self.watermarks: dict[int, datetime] = {}
        self._checked_at: dict[int, datetime] = {}
        self._pending: set[tuple[str, type]] = set()  # facts emitted, not yet acknowledged
        self._persist = persist
        self._restore = restore
        self._persist_every_s = persist_every_s
        self._persisted: dict[str, TankWatch] = {}

    def observe(self, reading: Reading, partition: int = 0) -> list[Fact]:
        watch, facts = observe(self._watch_of(reading.tank_id), reading, self.rules)
        self.watches[reading.tank_id] = watch
        self._pending.update((f.tank_id, type(f)) for f in facts)
        self._maybe_persist(reading.tank_id, watch)
        self._place(reading.tank_id, partition)
        watermark = self.watermarks.get(partition)
        if watermark is None or reading.measured_at > watermark:
            self.watermarks[partition] = watermark = reading.measured_at
        # Scanning the partition's tanks on every reading would cost more than the reading:
        # judge silence each time event time has moved on by SILENCE_CHECK_STEP (still a
        # function of the partition's readings alone, so replay gives the same facts).
        checked = self._checked_at.get(partition)
        if checked is not None and watermark - checked < SILENCE_CHECK_STEP:
            return facts
        self._checked_at[partition] = watermark
        return [*facts, *self.check_silence(partition)]

    def observe_batch(self, batch: ReadingBatch, partition: int = 0) -> list[Fact]:
        """The facts of observing the batch's readings one by one, in the same order with the
        same times: the batch is judged in parts, split where the partition's silence check
        would fall between its readings."""
        if not batch:
            return []
        facts: list[Fact] = []
        start = 0
        for end in self._silence_checks(batch.measured_at_ms, partition):
            facts += self._fold(batch.part(start, end), partition)
            # A check falls only on a reading that moved the partition's event time.
            self.watermarks[partition] = self._checked_at[partition] = at_unix_ms(
                batch.measured_at_ms[end - 1]
            )
            facts += self.check_silence(partition)
            start = end
        if start < len(batch):
            rest = batch.part(start, len(batch))
            facts += self._fold(rest, partition)
            newest = max(rest.measured_at_ms)
            watermark = self.watermarks.get(partition)
            if watermark is None or newest > unix_ms(watermark):
                self.watermarks[partition] = at_unix_ms(newest)
        return facts

    def _silence_checks(self, times_ms: Sequence[int], partition: int) -> list[int]:
        """Where observe() would check the partition for silent sensors: after reading i - 1
        for each i returned (integer milliseconds: a scan, not a datetime per reading)."""
        step = SILENCE_CHECK_STEP // MILLISECOND
        checked = self._checked_at.get(partition)
        if checked is None:  # the partition's first reading is checked at once
            ends, due, first = [1], times_ms[0] + step, 1
        else:  # due once event time has moved SILENCE_CHECK_STEP past the last check
            ends, due, first = [], -((EPOCH - checked - SILENCE_CHECK_STEP) // MILLISECOND), 0
        if max(times_ms) < due:
            return ends
        for i in range(first, len(times_ms)):
            if times_ms[i] >= due:
                ends.append(i + 1)
                due = times_ms[i] + step
        return ends

    def _fold(self, batch: ReadingBatch, partition: int) -> list[Fact]:
        # Kept once per part: what a restart needs is the watch after the part.
        watch, facts = observe_batch(self._watch_of(batch.tank_id), batch, self.rules)
        self.watches[batch.tank_id] = watch
        self._pending.update((f.tank_id, type(f)) for f in facts)
        self._maybe_persist(batch.tank_id, watch)
        # Placed once watched: a partition's silence check finds a watch for each of its tanks.
        self._place(batch.tank_id, partition)
        return facts

    def _place(self, tank_id: str, partition: int) -> None:
        before = self.partition_of.get(tank_id)
        if before != partition:
            if before is not None:
                del self._tanks_in[before][tank_id]
            self._tanks_in.setdefault(partition, {})[tank_id] = None
            self.partition_of[tank_id] = partition

    def _watch_of(self, tank_id: str) -> TankWatch:
        watch = self.watches.get(tank_id)
        if watch is None:
            watch = (self._restore(tank_id) if self._restore else None) or TankWatch()
        return watch

    def adopt(self, tank_id: str, watch: TankWatch) -> None:
        """A watch restored after a restart: the live check covers the tank even if it never
        reports again (its partition is unknown until it does)."""
        self.watches.setdefault(tank_id, watch)
        self._persisted.setdefault(tank_id, watch)

    def check_silence(self, partition: int) -> list[Fact]:
        watermark = self.watermarks.get(partition)
        if watermark is None:
            return []
        tanks = ((t, self.watches[t]) for t in self._tanks_in.get(partition, ()))
        return self._report(silent_tanks(tanks, watermark, self.rules))

    def check_silence_live(self, now: datetime) -> list[Fact]:
        """Wall-clock check (a timer calls it): live tanks with no reading for too long."""
        live = (
            (t, w)
            for t, w in self.watches.items()
            if w.last_reading_at and now - w.last_reading_at < LIVE_HORIZON
        )
        # Not persisted here: a timer runs outside the stream, where the Faust table is
        # read-only; the flag is persisted with the tank's next reading (causes are idempotent).
        return self._report(silent_tanks(live, now, self.rules), persist=False)

    def acknowledge(self, fact: Fact) -> None:
        """The fact reached the storage service: only now is "reported" kept across restarts
        (a crash before this reports the episode again rather than losing it)."""
        self._pending.discard((fact.tank_id, type(fact)))
        if fact.tank_id in self.watches:
            self._persisted.pop(fact.tank_id, None)  # force the write
            self._maybe_persist(fact.tank_id, self.watches[fact.tank_id])

    def _report(self, silent: list[SensorSilent], *, persist: bool = True) -> list[Fact]:
        for fact in silent:
            self._pending.add((fact.tank_id, SensorSilent))
            self.watches[fact.tank_id] = mark_silent(self.watches[fact.tank_id])
            if persist:
                self._maybe_persist(fact.tank_id, self.watches[fact.tank_id])
        return list(silent)

    def _maybe_persist(self, tank_id: str, watch: TankWatch) -> None:
        if self._persist is None:
            return
        # What is kept across restarts: a "reported" flag only once its fact was acknowledged.
        watch = dataclasses.replace(
            watch,
            excursion_reported=watch.excursion_reported
            and (tank_id, ExcursionDetected) not in self._pending,
            silence_reported=watch.silence_reported
            and (tank_id, SensorSilent) not in self._pending,
        )
        before = self._persisted.get(tank_id)
        flags_changed = before is None or (
            before.above_since,
            before.excursion_reported,
            before.silence_reported,
        ) != (watch.above_since, watch.excursion_reported, watch.silence_reported)
        stale = (
            before is not None
            and before.last_reading_at is not None
            and watch.last_reading_at is not None
            and (watch.last_reading_at - before.last_reading_at).total_seconds()
            >= self._persist_every_s
        )
        if flags_changed or stale:
            self._persist(tank_id, watch)
            self._persisted[tank_id] = watch
