"""When a shipment in transit will miss its promised delivery time: pure, clock passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class SlaWatch:
    """What the SLA monitor knows of one shipment (from its events)."""

    site_id: str
    promised_at: datetime
    planned_transit_minutes: float
    dispatched_at: datetime | None = None
    done: bool = False  # delivered, returned or discarded
    flagged: bool = False  # at risk already reported

    def expected_at(self, now: datetime) -> datetime | None:
        """When it should arrive: dispatch + planned transit, but never before now."""
        if self.dispatched_at is None:
            return None
        planned = self.dispatched_at + timedelta(minutes=self.planned_transit_minutes)
        return max(planned, now)


def at_risk(watch: SlaWatch, now: datetime, margin: timedelta) -> tuple[datetime, str] | None:
    """(expected arrival, why) if the shipment will miss its promise; None if on time or not
    (or no longer) on its way, or already reported."""
    if watch.done or watch.flagged:
        return None
    expected = watch.expected_at(now)
    if expected is None:
        return None
    if expected > watch.promised_at:
        late = expected - watch.promised_at
        return expected, f"expected {int(late.total_seconds() // 60)} min after the promised time"
    if now >= watch.promised_at - margin:
        left = max(0, int((watch.promised_at - now).total_seconds() // 60))
        return expected, f"not delivered {left} min before the promised time"
    return None
