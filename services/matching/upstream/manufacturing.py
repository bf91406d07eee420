"""Manufacturing's published batch events (`cellbank.manufacturing.v1`) as where matching's
units come from: a batch's donor, and the units its release made (a VST's restricting allele)."""

from __future__ import annotations

from dataclasses import dataclass

from cellbank.manufacturing.v1 import events_pb2 as pb

from shared.events import StoredEvent

STARTED = "cellbank.manufacturing.v1.BatchStarted"
RELEASED = "cellbank.manufacturing.v1.BatchReleased"


@dataclass(frozen=True, slots=True)
class BatchOfDonor:
    donor_id: str


@dataclass(frozen=True, slots=True)
class ReleasedUnit:
    unit_id: str
    restricting_allele: str  # VST: the HLA restriction of its T cells ("" otherwise)


@dataclass(frozen=True, slots=True)
class BatchUnitsReleased:
    units: tuple[ReleasedUnit, ...]


BatchFact = BatchOfDonor | BatchUnitsReleased


def batch_fact(event: StoredEvent) -> BatchFact | None:
    """The fact of one batch event; None for the events matching does not read. A payload
    that does not parse raises protobuf's DecodeError (the record is poison)."""
    if event.aggregate_type != "batch":
        return None
    if event.event_type == STARTED:
        return BatchOfDonor(pb.BatchStarted.FromString(event.payload).donor_id)
    if event.event_type == RELEASED:
        units = pb.BatchReleased.FromString(event.payload).units
        return BatchUnitsReleased(
            tuple(ReleasedUnit(u.unit_id, u.restricting_allele) for u in units)
        )
    return None
