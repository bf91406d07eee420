"""Donor eligibility: required infectious-disease markers within the specimen window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from services.donor_intake.domain.model import Consent, Donor, Eligibility, Result

# US 21 CFR 1271.85 / EU 2006/17/EC with HBV NAT, plus HTLV-I/II for leukocyte-rich cells:
# each must be negative.
DEFAULT_MARKERS = (
    "anti-HIV-1/2",
    "HIV-1 NAT",
    "HBsAg",
    "anti-HBc",
    "HBV NAT",
    "anti-HCV",
    "HCV NAT",
    "syphilis",
    "HTLV-I/II",
)
# Leukocyte-rich cells also need a CMV result, but a reactive one is a matching attribute, not a
# disqualification.
ATTRIBUTE_MARKERS = ("CMV",)


@dataclass(frozen=True, slots=True)
class EligibilityRules:
    """Configuration per product type / jurisdiction; its version is stored with each decision."""

    version: str = "cellbank-nk-2026.2"  # 2026.2: HBV NAT required, a CMV result required
    required_markers: tuple[str, ...] = DEFAULT_MARKERS  # negative within the window
    attribute_markers: tuple[str, ...] = ATTRIBUTE_MARKERS  # a result within the window, any
    days_before: int = 7  # specimen may be drawn this many days before collection…
    days_after: int = 7  # …or after it

    @property
    def known_markers(self) -> tuple[str, ...]:
        return self.required_markers + self.attribute_markers

    def in_window(self, specimen: date, collection: date) -> bool:
        return (
            collection - timedelta(days=self.days_before)
            <= specimen
            <= collection + timedelta(days=self.days_after)
        )


def determine_eligibility(
    donor: Donor, as_of: date, rules: EligibilityRules
) -> tuple[Eligibility, tuple[str, ...]]:
    """ELIGIBLE only when consent is given, the donor is not deferred, the questionnaire passed,
    every required marker is negative within the window and every attribute marker (CMV) has a
    result within the window, reactive or not; otherwise INELIGIBLE or PENDING, with every
    reason listed."""
    ineligible: list[str] = []
    pending: list[str] = []
    if donor.consent is Consent.WITHDRAWN:
        ineligible.append("consent withdrawn")
    elif donor.consent is Consent.NONE:
        pending.append("consent not recorded")
    if donor.deferred_until is not None and as_of < donor.deferred_until:
        ineligible.append(f"deferred until {donor.deferred_until.isoformat()}")
    if donor.questionnaire_passed is False:
        ineligible.append("screening questionnaire failed")
    elif donor.questionnaire_passed is None:
        pending.append("screening questionnaire not recorded")
    for marker in rules.required_markers:
        result = donor.screening.get(marker)
        if marker in donor.ever_positive:
            # A later negative does not clear a positive: a confirmed positive is permanent.
            ineligible.append(f"{marker}: positive")
        elif result is None:
            pending.append(f"{marker}: no result")
        elif result.result is Result.POSITIVE:
            ineligible.append(f"{marker}: positive")
        elif not rules.in_window(result.specimen_date, as_of):
            pending.append(_outside_window(marker, result.specimen_date, as_of, rules))
    for marker in rules.attribute_markers:
        result = donor.screening.get(marker)
        if result is None:
            pending.append(f"{marker}: no result")
        elif not rules.in_window(result.specimen_date, as_of):
            pending.append(_outside_window(marker, result.specimen_date, as_of, rules))
    if ineligible:
        return Eligibility.INELIGIBLE, tuple(ineligible + pending)
    if pending:
        return Eligibility.PENDING, tuple(pending)
    return Eligibility.ELIGIBLE, ()


def _outside_window(marker: str, specimen: date, as_of: date, rules: EligibilityRules) -> str:
    return (
        f"{marker}: specimen {specimen.isoformat()} outside the window"
        f" (-{rules.days_before}/+{rules.days_after} days of {as_of.isoformat()})"
    )
