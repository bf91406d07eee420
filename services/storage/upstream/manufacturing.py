"""Manufacturing's published events (cellbank.manufacturing.v1) as storage's facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from cellbank.manufacturing.v1 import events_pb2 as pb

from shared.events import StoredEvent


@dataclass(frozen=True, slots=True)
class BatchOrigin:
    """Which donor and product a batch is made from (its start)."""

    donor_id: str
    product_type: str


@dataclass(frozen=True, slots=True)
class ReleasedUnit:
    unit_id: str
    din: str
    product_code: str
    viable_nk_cells: float
    cd3_cells: float
    volume_ml: float
    expires_on: date
    segregated: bool
    restricting_allele: str


@dataclass(frozen=True, slots=True)
class UnitsReleased:
    """A batch released units: each may now be stored at the releasing site."""

    units: tuple[ReleasedUnit, ...]


Fact = BatchOrigin | UnitsReleased


def _origin(payload: bytes) -> BatchOrigin:
    m = pb.BatchStarted.FromString(payload)
    return BatchOrigin(m.donor_id, m.product_type)


def _released(payload: bytes) -> UnitsReleased:
    return UnitsReleased(tuple(map(_unit, pb.BatchReleased.FromString(payload).units)))


def _unit(u: pb.UnitRecord) -> ReleasedUnit:
    return ReleasedUnit(
        u.unit_id, u.din, u.product_code, u.viable_nk_cells, u.cd3_cells, u.volume_ml,
        date.fromisoformat(u.expires_on), u.segregated, u.restricting_allele,
    )  # fmt: skip


_TRANSLATORS: dict[str, Callable[[bytes], Fact]] = {
    pb.BatchStarted.DESCRIPTOR.full_name: _origin,
    pb.BatchReleased.DESCRIPTOR.full_name: _released,
}
EVENT_TYPES = frozenset(_TRANSLATORS)


def translate(event: StoredEvent) -> Fact | None:
    """The fact a manufacturing event states, None for the types storage ignores; an
    undecodable payload raises (DecodeError, ValueError): the record is poison."""
    translator = _TRANSLATORS.get(event.event_type)
    return translator(event.payload) if translator else None
