"""A facility's DIN sequence per year: every DIN allocated once, never reused."""

from __future__ import annotations

from dataclasses import dataclass

from services.kernel.isbt128 import make_din, validate_fin


@dataclass(frozen=True, slots=True)
class DinAllocated:
    din: str
    sequence: int


@dataclass(frozen=True, slots=True)
class DinSequence:
    last: int = 0


@dataclass(frozen=True, slots=True)
class AllocateDin:
    facility_id: str
    year: int


def stream_id(facility_id: str, year: int) -> str:
    """One stream per facility and year: its version is the last sequence number."""
    return f"din-sequence-{validate_fin(facility_id)}-{year % 100:02d}"


def decide(state: DinSequence, command: AllocateDin) -> list[DinAllocated]:
    sequence = state.last + 1
    return [DinAllocated(make_din(command.facility_id, command.year, sequence), sequence)]


def evolve(state: DinSequence, event: DinAllocated) -> DinSequence:
    return DinSequence(last=event.sequence)
