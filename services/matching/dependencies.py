"""What matching's service layer is built from: its settings and its ports, in one value."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from services.matching.domain.dose_plan import MAX_UNITS_PER_DOSE
from services.matching.ports import ReadModel, StorageSites
from shared.eventstore import Clock, EventStore


@dataclass(frozen=True, slots=True)
class MatchingConfig:
    hold: timedelta = timedelta(hours=24)  # a live order's reservation, renewed at half-life

    @property
    def renew_below(self) -> timedelta:
        return self.hold / 2

    candidates_per_round: int = 20
    # Rounds until no untried candidate is left (each refreshes the index); the cap only
    # bounds a pathological loop — the network's suitable units are tried, every one.
    max_rounds: int = 1000
    # Several units for one dose (orders that allow it): at most this many, chosen among the
    # best this many available units of the category.
    max_units_per_dose: int = MAX_UNITS_PER_DOSE
    dose_plan_pool: int = 50
    place_wait: float = 10.0  # PlaceOrder waits this long for the outcome, then answers PLACED
    reconcile_every: float = 10.0
    index_max_age: float = 0.25  # seconds a search may use the index without refreshing it


@dataclass(frozen=True, slots=True)
class Dependencies:
    store: EventStore  # this site's orders and notifications
    read_model: ReadModel
    sites: StorageSites  # every unit's owning site
    site_id: str
    clock: Clock
    config: MatchingConfig = field(default_factory=MatchingConfig)

    @property
    def actor(self) -> str:
        """Who the service's own decisions are recorded as."""
        return f"service:matching-{self.site_id}"
