"""The demo's donor population (deploy/demo_population.py): its alleles are current names of the
HLA reference release the system loads, its draws follow the table, and a search ranks the
drawn donors differently for different patients."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from deploy.demo_population import (
    ABO,
    CMV_POSITIVE,
    HLA_A,
    HLA_CLASS_I,
    KIR_GENOTYPES,
    DonorProfile,
    demo_donor,
    population,
)
from deploy.processes import hla_reference_dir
from services.donor_intake.domain.donor import ABO as DONOR_ABO
from services.donor_intake.domain.donor import KIR_GENES, RH
from services.matching.adapters.hla_release import load_release
from services.matching.domain.kir_b_content import b_content
from services.matching.domain.kir_ligand import AMBIGUOUS, NOT_EXPRESSED, HlaReference
from services.matching.domain.model import Cmv
from services.matching.domain.ranking import Assessment, assess, rank
from services.matching.tests.builders import TABLE, TODAY, TRANSIT, criteria, patient, unit


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> HlaReference:
    """The IPD-IMGT/HLA release the services load (read here, never committed)."""
    release = Path(hla_reference_dir()) if hla_reference_dir() else None
    assert release is not None and release.is_dir(), (
        "no IPD-IMGT/HLA release: set CELLBANK_HLA_REFERENCE or put it in ../shared/reference"
    )
    return load_release(release, cache_dir=tmp_path_factory.mktemp("hla-cache"))


def test_every_table_allele_is_a_current_name_with_a_definite_ligand_class(
    reference: HlaReference,
) -> None:
    for table in HLA_CLASS_I.values():
        for allele in table:
            # classify refuses unknown and retired names (AlleleNameError)
            assert reference.classify(allele) not in (AMBIGUOUS, NOT_EXPRESSED), allele


def test_every_drawn_donor_is_one_donor_intake_accepts() -> None:
    for donor in population("intake", 200):
        assert set(donor.kir) <= KIR_GENES
        assert donor.abo in DONOR_ABO and donor.rh in RH
        assert donor.cmv in ("POSITIVE", "NEGATIVE")
        assert all(len(donor.hla[locus]) == 2 for locus in HLA_CLASS_I)


def test_kir_genotypes_carry_the_motifs_their_names_say() -> None:
    for name, (genes, _) in KIR_GENOTYPES.items():
        content = b_content(genes)
        assert f"Cen-{content.centromeric} Tel-{content.telomeric}" in name
        assert not content.unplaced, name
    assert sum(share for _, share in KIR_GENOTYPES.values()) == pytest.approx(1.0)


def test_a_drawn_population_follows_the_frequency_table() -> None:
    donors = population("frequencies", 4000)
    alleles = Counter(a for d in donors for a in d.hla["A"])
    expected = HLA_A["A*02:01"] / sum(HLA_A.values())
    assert alleles["A*02:01"] / (2 * len(donors)) == pytest.approx(expected, abs=0.03)
    assert Counter(d.abo for d in donors)["O"] / len(donors) == pytest.approx(ABO["O"], abs=0.03)
    cmv = sum(d.cmv == "POSITIVE" for d in donors) / len(donors)
    assert cmv == pytest.approx(CMV_POSITIVE, abs=0.03)
    a_a = sum("KIR2DL2" not in d.kir and "KIR3DS1" not in d.kir for d in donors) / len(donors)
    assert a_a == pytest.approx(0.30, abs=0.03)
    assert len({d.alleles for d in donors}) > 3500  # not one typing repeated


def test_the_nth_demo_donor_of_a_site_is_the_same_on_every_run() -> None:
    assert demo_donor("LON", 3) == demo_donor("LON", 3)
    assert len({demo_donor("LON", n).alleles for n in range(10)}) > 1


def _ranking(donors: list[DonorProfile], who, reference: HlaReference) -> list[Assessment]:
    table = TABLE.with_reference(reference)
    units = [
        unit(
            f"unit-{i:02d}", donor_hla=d.alleles, donor_kir=d.kir, donor_cmv=d.cmv,
            donor_abo=d.abo, donor_id=f"donor-{i:02d}",
        )
        for i, d in enumerate(donors)
    ]  # fmt: skip
    return rank(assess(u, criteria(patient=who), table, TRANSIT, TODAY) for u in units)


def test_searches_rank_a_drawn_population_differently_for_different_patients(
    reference: HlaReference,
) -> None:
    donors = list(population("ranking", 30))
    # C1/C1, Bw6 only, no A3/A11; O, CMV-negative: alloreactive donors carry C2 or Bw4.
    first = patient(
        hla_alleles=("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*07:01"),
        abo="O", cmv=Cmv.NEGATIVE,
    )  # fmt: skip
    # C2/C2, Bw4, A3 present; AB, CMV-positive: alloreactive donors carry C1.
    second = patient(
        hla_alleles=("A*03:01", "A*24:02", "B*44:02", "B*51:01", "C*05:01", "C*04:01"),
        abo="AB", cmv=Cmv.POSITIVE,
    )  # fmt: skip
    one, two = _ranking(donors, first, reference), _ranking(donors, second, reference)
    assert len(one) == len(two) == len(donors)  # every unit suits both: only the order differs
    top = [[a.unit.unit_id for a in r[:5]] for r in (one, two)]
    assert top[0] != top[1]
    assert top[0][0] != top[1][0]
    for ranking in (one, two):  # the scores separate the donors, not one score for all
        assert len({round(a.score, 6) for a in ranking}) >= 5
