"""Manufacturing's published batch events, as delivery needs them: a batch's DIN and donor,
the units it released, and a positive 14-day sterility after release (a recall)."""

from __future__ import annotations

from dataclasses import dataclass

from cellbank.manufacturing.v1 import events_pb2 as pb

from services.delivery.upstream.published import Translator


@dataclass(frozen=True, slots=True)
class BatchStarted:
    din: str
    donor_id: str
    product_type: str


@dataclass(frozen=True, slots=True)
class ReleasedUnit:
    unit_id: str
    din: str


@dataclass(frozen=True, slots=True)
class BatchReleased:
    units: tuple[ReleasedUnit, ...]


@dataclass(frozen=True, slots=True)
class SterilityFailed:
    din: str
    unit_ids: tuple[str, ...]


BatchFact = BatchStarted | BatchReleased | SterilityFailed

translate: Translator[BatchFact] = Translator(
    {
        pb.BatchStarted: lambda m: BatchStarted(m.din, m.donor_id, m.product_type),
        pb.BatchReleased: lambda m: BatchReleased(
            tuple(ReleasedUnit(u.unit_id, u.din) for u in m.units)
        ),
        pb.BatchSterilityFailed: lambda m: SterilityFailed(m.din, tuple(m.unit_ids)),
    },
)
