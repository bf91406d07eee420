"""Donor intake's published events (cellbank.donor.v1) as manufacturing's facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cellbank.donor.v1 import events_pb2 as pb

from shared.events import StoredEvent
from shared.proto_mapping import timestamp_to_datetime

ELIGIBILITIES = frozenset({"PENDING", "ELIGIBLE", "INELIGIBLE"})


@dataclass(frozen=True, slots=True)
class DonorEligibility:
    """The donor's eligibility as last determined."""

    status: str  # one of ELIGIBILITIES


@dataclass(frozen=True, slots=True)
class Collection:
    """A collection a batch may be started from (by the collecting site)."""

    din: str
    collected_at: datetime
    eligibility: str  # the donor's, at collection; one of ELIGIBILITIES
    urgent_physician_request: str


Fact = DonorEligibility | Collection


def _eligibility(value: str) -> str:
    if value not in ELIGIBILITIES:
        raise ValueError(f"{value!r} is not a donor eligibility")
    return value


def _determined(payload: bytes) -> DonorEligibility:
    return DonorEligibility(_eligibility(pb.EligibilityDetermined.FromString(payload).status))


def _collected(payload: bytes) -> Collection:
    m = pb.CollectionRecorded.FromString(payload)
    return Collection(
        m.din,
        timestamp_to_datetime(m.collected_at),
        _eligibility(m.eligibility),
        m.urgent_physician_request,
    )


_TRANSLATORS: dict[str, Callable[[bytes], Fact]] = {
    pb.EligibilityDetermined.DESCRIPTOR.full_name: _determined,
    pb.CollectionRecorded.DESCRIPTOR.full_name: _collected,
}
EVENT_TYPES = frozenset(_TRANSLATORS)


def translate(event: StoredEvent) -> Fact | None:
    """The fact a donor-intake event states, None for the types manufacturing ignores; an
    undecodable payload raises (DecodeError, ValueError): the record is poison."""
    translator = _TRANSLATORS.get(event.event_type)
    return translator(event.payload) if translator else None
