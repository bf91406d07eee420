"""Donor intake's published events (cellbank.donor.v1) as storage's facts about donors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cellbank.donor.v1 import events_pb2 as pb

from shared.events import StoredEvent

CMV_STATUSES = frozenset({"UNKNOWN", "NEGATIVE", "POSITIVE"})


@dataclass(frozen=True, slots=True)
class HlaAlleles:
    alleles: tuple[str, ...]  # every typed locus's alleles, in the order published


@dataclass(frozen=True, slots=True)
class KirGenes:
    genes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CmvStatus:
    status: str  # one of CMV_STATUSES


@dataclass(frozen=True, slots=True)
class BloodGroup:
    abo: str
    rh: str


Fact = HlaAlleles | KirGenes | CmvStatus | BloodGroup


def _hla(payload: bytes) -> HlaAlleles:
    m = pb.HlaTyped.FromString(payload)
    return HlaAlleles(tuple(a for locus in m.loci for a in locus.alleles))


def _kir(payload: bytes) -> KirGenes:
    return KirGenes(tuple(pb.KirGenotyped.FromString(payload).genes))


def _cmv(payload: bytes) -> CmvStatus:
    status = pb.CmvSerostatusRecorded.FromString(payload).status
    if status not in CMV_STATUSES:
        raise ValueError(f"{status!r} is not a CMV serostatus")
    return CmvStatus(status)


def _blood_group(payload: bytes) -> BloodGroup:
    m = pb.BloodGroupRecorded.FromString(payload)
    return BloodGroup(m.abo, m.rh)


_TRANSLATORS: dict[str, Callable[[bytes], Fact]] = {
    pb.HlaTyped.DESCRIPTOR.full_name: _hla,
    pb.KirGenotyped.DESCRIPTOR.full_name: _kir,
    pb.CmvSerostatusRecorded.DESCRIPTOR.full_name: _cmv,
    pb.BloodGroupRecorded.DESCRIPTOR.full_name: _blood_group,
}
EVENT_TYPES = frozenset(_TRANSLATORS)


def translate(event: StoredEvent) -> Fact | None:
    """The fact a donor-intake event states, None for the types storage ignores; an
    undecodable payload raises (DecodeError, ValueError): the record is poison."""
    translator = _TRANSLATORS.get(event.event_type)
    return translator(event.payload) if translator else None
