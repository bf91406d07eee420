"""The dashboard's charts: per site, events/s, consumer lag and available stock by product over
the last minutes, kept in memory (rolling) and served as uPlot's columns."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 600


@dataclass(frozen=True, slots=True)
class StatusSample:
    at: int  # unix second
    lag: int
    products: Mapping[str, int]


@dataclass
class _Site:
    events: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # second → count
    samples: deque[StatusSample] = field(default_factory=deque)


class Timeline:
    """Every site's recent history: events counted per second of their occurrence (from the
    dashboard's one event reader) and GetNetworkStatus samples, one a second at most (taken
    whenever an operator's page asks for the status: the dashboard holds no token to ask on its
    own). Anything older than the window is forgotten."""

    def __init__(self, window_s: int = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self._clock = clock
        self._sites: dict[str, _Site] = defaultdict(_Site)
        self._pruned_at = 0  # the second count_event last forgot the seconds before the window

    def count_event(self, site_id: str, occurred_at: float) -> None:
        """One event of `site_id`, counted in the second it happened (a late one in its own
        second, one from the future now, one from before the window not at all)."""
        now = int(self._clock())
        if now != self._pruned_at:  # a new second: forgotten with no page open too
            self._pruned_at = now
            for site in self._sites.values():
                _forget_events_before(site, now - self.window_s + 1)
        second = min(int(occurred_at), now)
        if second > now - self.window_s:
            self._sites[site_id].events[second] += 1

    def sample_status(self, sites: Iterable[Mapping[str, Any]]) -> None:
        """The sites of a GetNetworkStatus answer (as JSON dicts): their lag and available
        stock by product now. A second sample in the same second replaces the first."""
        now = int(self._clock())
        for status in sites:
            products = {
                str(p): int(n) for p, n in (status.get("inventory_by_product") or {}).items()
            }
            sample = StatusSample(now, int(status.get("consumer_lag") or 0), products)
            samples = self._sites[str(status["site_id"])].samples
            if samples and samples[-1].at == now:
                samples.pop()
            samples.append(sample)

    def series(self) -> dict[str, Any]:
        """Per site, uPlot's data: `events` [[seconds…], [count…]] for every whole second of
        the window; `lag` [[seconds…], [lag…]]; `inventory` {"products": […],
        "data": [[seconds…], [units…] per product]} (a product absent from a sample: none)."""
        now = int(self._clock())
        first = now - self.window_s + 1
        seconds = list(range(first, now))  # the current second is still counting
        out: dict[str, Any] = {}
        for site_id, site in sorted(self._sites.items()):
            _forget_events_before(site, first)
            while site.samples and site.samples[0].at < first:
                site.samples.popleft()
            at = [s.at for s in site.samples]
            products = sorted({p for s in site.samples for p in s.products})
            out[site_id] = {
                "events": [seconds, [site.events.get(s, 0) for s in seconds]],
                "lag": [at, [s.lag for s in site.samples]],
                "inventory": {
                    "products": products,
                    "data": [at, *([s.products.get(p, 0) for s in site.samples] for p in products)],
                },
            }
        return {"window_s": self.window_s, "now": now, "sites": out}


def _forget_events_before(site: _Site, first: int) -> None:
    for second in [s for s in site.events if s < first]:
        del site.events[second]
