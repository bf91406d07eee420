"""Tank watch: readings in, excursion / silent-sensor facts out. Pure; time is the readings'."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class ColdChainRules:
    """Configuration: vapour-phase LN2 keeps units at or below -150 °C."""

    max_celsius: float = -150.0
    excursion_minutes: float = 10.0  # above the limit for longer than this → excursion
    silence_minutes: float = 15.0  # no reading for this long → sensor silent


@dataclass(frozen=True, slots=True)
class Reading:
    site_id: str
    tank_id: str
    celsius: float
    measured_at: datetime


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def at_unix_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def unix_ms(at: datetime) -> int:
    """Milliseconds since the Unix epoch (floored): a batch's measurement times."""
    return (at - EPOCH) // MILLISECOND


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """One sensor's readings of an interval, in measurement order: celsius[i] was measured at
    measured_at_ms[i] (Unix milliseconds). Arrays, not Readings: the usual batch is judged
    without building an object per reading."""

    site_id: str
    tank_id: str
    celsius: Sequence[float]
    measured_at_ms: Sequence[int]

    def __post_init__(self) -> None:
        if len(self.celsius) != len(self.measured_at_ms):
            raise ValueError("a batch needs one measurement time per temperature")

    def __len__(self) -> int:
        return len(self.celsius)

    def part(self, start: int, end: int) -> ReadingBatch:
        return ReadingBatch(
            self.site_id,
            self.tank_id,
            self.celsius[start:end],
            self.measured_at_ms[start:end],
        )

    def readings(self) -> list[Reading]:
        return [
            Reading(self.site_id, self.tank_id, celsius, at_unix_ms(ms))
            for celsius, ms in zip(self.celsius, self.measured_at_ms, strict=True)
        ]


FUTURE_TOLERANCE = timedelta(minutes=5)


def validate_reading(reading: Reading, now: datetime) -> Reading:
    """A sensor reading worth watching: a physical temperature, taken no later than now.

    A sensor clock far ahead would advance its partition's event time and make the other
    tanks look silent, so such readings are refused at ingest.
    """
    if not _physical(reading.celsius):
        raise InvalidArgument("celsius", "must be a temperature between -273.15 and 100 °C")
    if reading.measured_at > now + FUTURE_TOLERANCE:
        raise InvalidArgument("measured_at", "is in the future (check the sensor's clock)")
    return reading


def validate_batch(batch: ReadingBatch, now: datetime) -> ReadingBatch:
    """A batch every reading of which validate_reading accepts (times before 1970 are refused
    too: a batch's times are Unix milliseconds)."""
    if not all(map(_physical, batch.celsius)):
        raise InvalidArgument("celsius", "must be a temperature between -273.15 and 100 °C")
    if batch and max(batch.measured_at_ms) > unix_ms(now + FUTURE_TOLERANCE):
        raise InvalidArgument("measured_at", "is in the future (check the sensor's clock)")
    if batch and min(batch.measured_at_ms) < 0:
        raise InvalidArgument("measured_at", "is before 1970 (check the sensor's clock)")
    return batch


def _physical(celsius: float) -> bool:
    return math.isfinite(celsius) and -273.15 <= celsius <= 100


@dataclass(frozen=True, slots=True)
class ExcursionDetected:
    site_id: str
    tank_id: str
    since: datetime  # first reading above the limit
    detected_at: datetime
    max_celsius: float

    @property
    def cause(self) -> str:
        return f"excursion:{self.tank_id}:{self.since.isoformat()}"


@dataclass(frozen=True, slots=True)
class SensorSilent:
    site_id: str
    tank_id: str
    last_reading_at: datetime
    detected_at: datetime

    @property
    def cause(self) -> str:
        return f"sensor-silent:{self.tank_id}:{self.last_reading_at.isoformat()}"


Fact = ExcursionDetected | SensorSilent


@dataclass(frozen=True, slots=True)
class TankWatch:
    site_id: str = ""
    last_reading_at: datetime | None = None
    above_since: datetime | None = None
    max_celsius: float = -273.15
    excursion_reported: bool = False
    silence_reported: bool = False


def observe(
    watch: TankWatch, reading: Reading, rules: ColdChainRules
) -> tuple[TankWatch, list[Fact]]:
    """Fold one reading into the tank's watch; facts are reported once per episode."""
    if watch.last_reading_at is not None and reading.measured_at <= watch.last_reading_at:
        return watch, []  # late or duplicate reading: time never runs backwards
    if reading.celsius <= rules.max_celsius:
        # The common case, built directly (this runs for every reading of every tank).
        return TankWatch(reading.site_id, reading.measured_at), []
    since = watch.above_since or reading.measured_at
    hottest = max(watch.max_celsius, reading.celsius)
    too_long = reading.measured_at - since > timedelta(minutes=rules.excursion_minutes)
    report = too_long and not watch.excursion_reported
    updated = TankWatch(
        reading.site_id,
        reading.measured_at,
        since,
        hottest,
        watch.excursion_reported or report,
        False,
    )
    if report:
        return updated, [
            ExcursionDetected(reading.site_id, reading.tank_id, since, reading.measured_at, hottest)
        ]
    return updated, []


def observe_batch(
    watch: TankWatch, batch: ReadingBatch, rules: ColdChainRules
) -> tuple[TankWatch, list[Fact]]:
    """Fold a sensor's batch into its watch: the watch and facts of observing its readings one
    by one. The usual batch (every reading at or below the limit) is judged at once by scans
    of its arrays; a batch with a warm reading is folded reading by reading."""
    if not batch.celsius:
        return watch, []
    # sum() is NaN if any reading is, and max() over NaNs depends on their place: such a batch
    # takes the one-by-one path, which judges every reading as observe() does.
    if max(batch.celsius) <= rules.max_celsius and math.isfinite(sum(batch.celsius)):
        # Only the newest reading survives a run of cold ones (a late one changes nothing).
        newest = at_unix_ms(max(batch.measured_at_ms))
        if watch.last_reading_at is not None and newest <= watch.last_reading_at:
            return watch, []
        return TankWatch(batch.site_id, newest), []
    facts: list[Fact] = []
    for reading in batch.readings():
        watch, new = observe(watch, reading, rules)
        facts.extend(new)
    return watch, facts


def silent_tanks(
    watches: Iterable[tuple[str, TankWatch]], now: datetime, rules: ColdChainRules
) -> list[SensorSilent]:
    """Tanks whose last reading is older than the silence limit at event time `now` (the
    latest reading seen from any tank): the same readings always give the same facts."""
    limit = timedelta(minutes=rules.silence_minutes)
    return [
        SensorSilent(w.site_id, tank_id, w.last_reading_at, now)
        for tank_id, w in watches
        if w.last_reading_at is not None
        and not w.silence_reported
        and now - w.last_reading_at > limit
    ]


def mark_silent(watch: TankWatch) -> TankWatch:
    return dataclasses.replace(watch, silence_reported=True)
