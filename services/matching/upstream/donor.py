"""Donor intake's published donor events (`cellbank.donor.v1`) as the donor facts matching ranks
units by: HLA alleles, KIR genes, CMV serostatus and ABO group."""

from __future__ import annotations

from dataclasses import dataclass

from cellbank.donor.v1 import events_pb2 as pb

from services.matching.domain.model import Cmv
from shared.events import StoredEvent

PACKAGE = "cellbank.donor.v1."


@dataclass(frozen=True, slots=True)
class DonorHlaTyped:
    alleles: tuple[str, ...]  # every locus' alleles, in the typing's order


@dataclass(frozen=True, slots=True)
class DonorKirGenotyped:
    genes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DonorCmvTested:
    status: Cmv


@dataclass(frozen=True, slots=True)
class DonorBloodGrouped:
    abo: str


DonorFact = DonorHlaTyped | DonorKirGenotyped | DonorCmvTested | DonorBloodGrouped
TYPES = frozenset(
    PACKAGE + name
    for name in ("HlaTyped", "KirGenotyped", "CmvSerostatusRecorded", "BloodGroupRecorded")
)


def donor_fact(event: StoredEvent) -> DonorFact | None:
    """The fact of one donor event; None for the events matching does not read. A payload that
    does not parse raises protobuf's DecodeError, an unknown CMV status ValueError (poison)."""
    if event.aggregate_type != "donor" or event.event_type not in TYPES:
        return None
    match event.event_type[len(PACKAGE) :]:
        case "HlaTyped":
            loci = pb.HlaTyped.FromString(event.payload).loci
            return DonorHlaTyped(tuple(a for locus in loci for a in locus.alleles))
        case "KirGenotyped":
            return DonorKirGenotyped(tuple(pb.KirGenotyped.FromString(event.payload).genes))
        case "CmvSerostatusRecorded":
            return DonorCmvTested(Cmv(pb.CmvSerostatusRecorded.FromString(event.payload).status))
        case _:
            return DonorBloodGrouped(pb.BloodGroupRecorded.FromString(event.payload).abo)
