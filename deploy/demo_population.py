"""The demo's donor population: HLA-A/B/C, KIR, ABO/Rh and CMV drawn from approximate frequencies.

Every number is approximate and rounded; the draw normalises each table over its own entries
(the rarer alleles left out are folded into the common ones). Sources:

- HLA-A, -B, -C: two-field allele frequencies of the European American (EURCAU) population of
  the US NMDP registry, Gragert L. et al., "Six-locus high resolution HLA haplotype frequencies
  derived from mixed-resolution DNA typing for the entire US donor registry", Human Immunology
  74 (2013) 1313–1320; comparable to the "USA NMDP European Caucasian" entries of the Allele
  Frequency Net Database (allelefrequencies.net). Loci are drawn independently (no linkage
  disequilibrium, so haplotypes such as A*01:01~B*08:01~C*07:01 are not favoured).
- KIR: about 30 % of Europeans carry the A/A genotype (two group-A haplotypes), the rest B/x
  (Hsu K.C. et al., Immunol. Rev. 190 (2002) 40–52; the KIR pages of allelefrequencies.net).
  The B/x split over centromeric and telomeric B motifs follows roughly the donor groups of
  Cooley S. et al., Blood 116 (2010) 2411–2419 (Cen-B/B about one donor in ten). Gene content
  is the few genes the domain reads (DOMAIN.md: KIR2DL1/2DL2/2DL3/3DL1/3DL2 for the ligand model,
  2DL2/2DS2, 3DS1/2DS1, 2DL5A for B-content) plus the framework genes every haplotype carries.
- ABO: O 45 %, A 40 %, B 11 %, AB 4 %; Rh(D) positive 85 % (the usual figures for people of
  European descent, e.g. the American Red Cross blood-type table).
- CMV: IgG seroprevalence about 55 % in adult blood donors in Europe and the US (Zuhair M. et
  al., "Estimation of the worldwide seroprevalence of cytomegalovirus", Rev. Med. Virol. 29
  (2019) e2034: 40–60 % in Europe and North America).

Every allele name here must be current in the IPD-IMGT/HLA release the system loads
(tests/unit/test_demo_population.py checks that at run time, against the release itself).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Two-field allele → approximate allele frequency (EURCAU, Gragert et al. 2013).
HLA_A = {
    "A*02:01": 0.29, "A*01:01": 0.16, "A*03:01": 0.14, "A*24:02": 0.09, "A*11:01": 0.06,
    "A*68:01": 0.04, "A*32:01": 0.035, "A*26:01": 0.03, "A*29:02": 0.03, "A*31:01": 0.025,
    "A*25:01": 0.02, "A*23:01": 0.02, "A*30:01": 0.015, "A*33:01": 0.01,
}  # fmt: skip
HLA_B = {
    "B*07:02": 0.13, "B*08:01": 0.11, "B*44:02": 0.09, "B*15:01": 0.065, "B*35:01": 0.06,
    "B*40:01": 0.05, "B*44:03": 0.05, "B*51:01": 0.045, "B*18:01": 0.045, "B*57:01": 0.035,
    "B*27:05": 0.035, "B*14:02": 0.03, "B*13:02": 0.02, "B*38:01": 0.02, "B*55:01": 0.02,
    "B*49:01": 0.015,
}  # fmt: skip
HLA_C = {
    "C*07:01": 0.15, "C*07:02": 0.14, "C*04:01": 0.11, "C*05:01": 0.09, "C*06:02": 0.09,
    "C*03:04": 0.08, "C*03:03": 0.05, "C*12:03": 0.05, "C*02:02": 0.05, "C*08:02": 0.04,
    "C*01:02": 0.035, "C*16:01": 0.035, "C*15:02": 0.02, "C*14:02": 0.015,
}  # fmt: skip
HLA_CLASS_I: Mapping[str, Mapping[str, float]] = {"A": HLA_A, "B": HLA_B, "C": HLA_C}
# Class II does not enter NK matching: every demo donor keeps one common typing.
HLA_CLASS_II = {"DRB1": ("DRB1*15:01", "DRB1*04:01"), "DQB1": ("DQB1*06:02", "DQB1*03:02")}

FRAMEWORK_KIR = ("KIR3DL3", "KIR3DL2", "KIR2DL4", "KIR3DP1")  # on every haplotype
CEN_A = ("KIR2DL1", "KIR2DL3")
CEN_B = ("KIR2DL2", "KIR2DS2")
TEL_A = ("KIR3DL1", "KIR2DS4")
TEL_B = ("KIR3DS1", "KIR2DS1", "KIR2DL5A")  # KIR2DL5A: the telomeric copy


def _genotype(*parts: tuple[str, ...]) -> tuple[str, ...]:
    genes = {g for part in (FRAMEWORK_KIR, *parts) for g in part}
    return tuple(sorted(genes))


# Genotype (as Cen/Tel motifs) → gene content and approximate share: A/A ≈ 30 %, B/x ≈ 70 %.
# Cen-B/B keeps KIR2DL1 (the common cB01 haplotype carries it) and lacks KIR2DL3.
KIR_GENOTYPES: Mapping[str, tuple[tuple[str, ...], float]] = {
    "A/A (Cen-A/A Tel-A/A)": (_genotype(CEN_A, TEL_A), 0.30),
    "B/x (Cen-A/B Tel-A/A)": (_genotype(CEN_A, CEN_B, TEL_A), 0.22),
    "B/x (Cen-A/A Tel-A/B)": (_genotype(CEN_A, TEL_A, TEL_B), 0.16),
    "B/x (Cen-A/B Tel-A/B)": (_genotype(CEN_A, CEN_B, TEL_A, TEL_B), 0.16),
    "B/x (Cen-B/B Tel-A/A)": (_genotype(("KIR2DL1",), CEN_B, TEL_A), 0.10),
    "B/x (Cen-A/A Tel-B/B)": (_genotype(CEN_A, TEL_B), 0.06),
}
ABO = {"O": 0.45, "A": 0.40, "B": 0.11, "AB": 0.04}
RH_POSITIVE = 0.85
CMV_POSITIVE = 0.55


@dataclass(frozen=True, slots=True)
class DonorProfile:
    """What the typing lab records for one demo donor."""

    hla: Mapping[str, tuple[str, str]]  # locus → two alleles
    kir: tuple[str, ...]
    abo: str  # A, B, AB, O
    rh: str  # POS, NEG
    cmv: str  # POSITIVE, NEGATIVE

    @property
    def alleles(self) -> tuple[str, ...]:
        """The class I alleles, as a search or a unit profile lists them."""
        return tuple(a for locus in HLA_CLASS_I for a in self.hla[locus])


def _pick(rng: random.Random, table: Mapping[str, float]) -> str:
    return rng.choices(list(table), weights=list(table.values()))[0]


def draw_donor(rng: random.Random) -> DonorProfile:
    """One donor: two alleles per class I locus, a KIR genotype, ABO/Rh and CMV, each drawn."""
    hla = {locus: (_pick(rng, t), _pick(rng, t)) for locus, t in HLA_CLASS_I.items()}
    genotype = _pick(rng, {name: share for name, (_, share) in KIR_GENOTYPES.items()})
    return DonorProfile(
        hla={**hla, **HLA_CLASS_II},
        kir=KIR_GENOTYPES[genotype][0],
        abo=_pick(rng, ABO),
        rh="POS" if rng.random() < RH_POSITIVE else "NEG",
        cmv="POSITIVE" if rng.random() < CMV_POSITIVE else "NEGATIVE",
    )


def demo_donor(site: str, ordinal: int) -> DonorProfile:
    """The `ordinal`-th demo donor of a site: the same donor on every run (a seeded draw)."""
    return draw_donor(random.Random(f"cellbank-demo/{site}/{ordinal}"))


def population(seed: str, size: int) -> Sequence[DonorProfile]:
    """`size` donors drawn from one seeded generator (tests, benches)."""
    rng = random.Random(seed)
    return [draw_donor(rng) for _ in range(size)]
