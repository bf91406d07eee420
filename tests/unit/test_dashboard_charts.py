"""The dashboard's chart series (deploy/dashboard_charts.py): events counted per second of their
occurrence per site, status samples one a second, everything older than the window forgotten."""

from __future__ import annotations

from deploy.dashboard_charts import Timeline


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def status(site: str, lag: int, **products: int) -> dict[str, object]:
    return {"site_id": site, "consumer_lag": lag, "inventory_by_product": products}


def test_events_are_counted_per_site_in_the_second_they_happened() -> None:
    clock = Clock(1_000.5)
    timeline = Timeline(window_s=60, clock=clock)
    for at in (990.1, 990.9, 995.0):
        timeline.count_event("LON", at)
    timeline.count_event("MAN", 990.2)
    timeline.count_event("LON", 5_000.0)  # a clock ahead: counted now, not in the future
    timeline.count_event("LON", 900.0)  # before the window: not at all
    sites = timeline.series()["sites"]
    seconds, counts = sites["LON"]["events"]
    assert seconds == list(range(941, 1_000))  # every whole second; the current one still counts
    by_second = dict(zip(seconds, counts, strict=True))
    assert by_second[990] == 2 and by_second[995] == 1 and sum(counts) == 3
    assert sum(sites["MAN"]["events"][1]) == 1
    clock.now = 1_001.0
    assert timeline.series()["sites"]["LON"]["events"][1][-1] == 1  # the clamped one, now whole


def test_status_samples_keep_one_a_second_and_every_product_seen() -> None:
    clock = Clock(100.0)
    timeline = Timeline(window_s=60, clock=clock)
    timeline.sample_status([status("LON", 5, **{"NK-ALLO": 3})])
    timeline.sample_status([status("LON", 7, **{"NK-ALLO": 2})])  # same second: replaces
    clock.now = 101.2
    timeline.sample_status([status("LON", 0, **{"NK-ALLO": 2, "CAR-NK": 1})])
    lon = timeline.series()["sites"]["LON"]
    assert lon["lag"] == [[100, 101], [7, 0]]
    assert lon["inventory"] == {
        "products": ["CAR-NK", "NK-ALLO"],
        "data": [[100, 101], [0, 1], [2, 2]],  # none of a product yet: 0
    }


def test_history_older_than_the_window_is_forgotten() -> None:
    clock = Clock(100.0)
    timeline = Timeline(window_s=60, clock=clock)
    timeline.count_event("LON", 99.0)
    timeline.sample_status([status("LON", 4, **{"NK-ALLO": 1})])
    clock.now = 200.0
    lon = timeline.series()["sites"]["LON"]
    assert sum(lon["events"][1]) == 0 and len(lon["events"][0]) == 59
    assert lon["lag"] == [[], []]
    assert lon["inventory"] == {"products": [], "data": [[]]}


def test_counting_forgets_seconds_before_the_window_with_no_page_open() -> None:
    clock = Clock(100.0)
    timeline = Timeline(window_s=60, clock=clock)
    for second in range(100, 1_000):  # hours of events; nobody asks for the series
        clock.now = second + 0.5
        timeline.count_event("LON", second)
        timeline.count_event("MAN", second)
    assert {site: sorted(s.events) for site, s in timeline._sites.items()} == {
        "LON": list(range(940, 1_000)), "MAN": list(range(940, 1_000)),
    }  # fmt: skip
