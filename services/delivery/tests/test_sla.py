"""The SLA rule: a shipment in transit that will miss its promised time is reported once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.delivery.domain.sla import SlaWatch, at_risk

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MARGIN = timedelta(minutes=15)


def watch(
    promised_in: float, transit: float, dispatched_ago: float | None = 0, **kw: bool
) -> SlaWatch:
    dispatched = None if dispatched_ago is None else NOW - timedelta(minutes=dispatched_ago)
    return SlaWatch("LON", NOW + timedelta(minutes=promised_in), transit, dispatched, **kw)


def test_on_time_when_planned_arrival_is_well_before_the_promise():
    assert at_risk(watch(promised_in=120, transit=60), NOW, MARGIN) is None


def test_at_risk_when_planned_arrival_is_after_the_promise():
    risk = at_risk(watch(promised_in=20, transit=30), NOW, MARGIN)
    assert risk is not None
    expected, why = risk
    assert expected == NOW + timedelta(minutes=30) and "10 min after" in why


def test_at_risk_when_the_promise_is_near_and_it_is_still_on_its_way():
    # Planned to arrive already (dispatched 60 min ago, 30 min transit) but not delivered.
    risk = at_risk(watch(promised_in=10, transit=30, dispatched_ago=60), NOW, MARGIN)
    assert risk is not None and risk[0] == NOW and "10 min before" in risk[1]


def test_an_overdue_shipment_is_expected_no_earlier_than_now():
    risk = at_risk(watch(promised_in=-5, transit=30, dispatched_ago=60), NOW, MARGIN)
    assert risk is not None and risk[0] == NOW


def test_not_judged_before_dispatch_after_delivery_or_once_reported():
    assert at_risk(watch(promised_in=5, transit=30, dispatched_ago=None), NOW, MARGIN) is None
    assert at_risk(watch(promised_in=5, transit=30, done=True), NOW, MARGIN) is None
    assert at_risk(watch(promised_in=5, transit=30, flagged=True), NOW, MARGIN) is None
