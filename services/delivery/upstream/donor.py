"""Donor intake's published donor events, as delivery needs them: who was registered where,
which DINs were collected from whom, and a positive result after collection (a recall)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from cellbank.donor.v1 import events_pb2 as pb

from services.delivery.upstream.published import Translator
from shared.proto_mapping import timestamp_to_datetime


@dataclass(frozen=True, slots=True)
class DonorRegistered:
    """The donor (the event's aggregate) is registered at the event's site."""


@dataclass(frozen=True, slots=True)
class Collected:
    din: str
    collected_at: datetime


@dataclass(frozen=True, slots=True)
class PositiveAfterCollection:
    marker: str
    specimen_date: date
    dins: tuple[str, ...]


DonorFact = DonorRegistered | Collected | PositiveAfterCollection

translate: Translator[DonorFact] = Translator(
    {
        pb.DonorRegistered: lambda m: DonorRegistered(),
        pb.CollectionRecorded: lambda m: Collected(m.din, timestamp_to_datetime(m.collected_at)),
        pb.PositiveResultAfterCollection: lambda m: PositiveAfterCollection(
            m.marker, date.fromisoformat(m.specimen_date), tuple(m.dins)
        ),
    },
)
