"""KIR-ligand model (Ruggeri, GvH direction): which ligand an allele carries, which donor
ligands are alloreactive, and how `assess` explains and scores a mismatch."""

from __future__ import annotations

import json

import pytest

from services.matching.domain.model import ProductCategory
from services.matching.domain.ranking import LIGANDS, Classification, mask
from services.matching.entrypoints.main import DEFAULT_CLASSIFICATION
from services.matching.tests.builders import (
    PATIENT_HLA,
    TABLE,
    W,
    assessed,
    criteria,
    patient,
    reason_with,
    unit,
)

RAW = json.loads(DEFAULT_CLASSIFICATION.read_text())

# Donor typings: the patient's (C1/C1, Bw6/Bw6) with one allele swapped.
C1_C2 = ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*05:01")
C2_C2 = ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*05:01", "C*04:01")
BW4 = ("A*02:01", "A*01:01", "B*07:02", "B*44:02", "C*07:02", "C*07:01")
A11 = ("A*02:01", "A*11:01", "B*07:02", "B*08:01", "C*07:02", "C*07:01")
C2_BW4 = ("A*02:01", "A*01:01", "B*07:02", "B*44:02", "C*07:02", "C*05:01")


# ---- the table ----------------------------------------------------------------------------------


def test_the_table_is_versioned():
    assert TABLE.version == RAW["version"] == "kir-ligand-2026.1+rank-1"


def test_from_dict_maps_every_listed_prefix_to_its_ligand():
    for ligand, prefixes in RAW["kir_ligands"].items():
        for prefix in prefixes:
            assert TABLE.ligand_of_prefix[prefix] == ligand


def test_from_dict_reads_kir_genes_limits_and_weights():
    assert TABLE.kir_for_ligand["C2"] == frozenset({"KIR2DL1"})
    assert TABLE.kir_for_ligand["C1"] == frozenset({"KIR2DL2", "KIR2DL3"})
    assert TABLE.not_a_ligand == frozenset({"B*27:08"})
    assert TABLE.cd3_limit_per_kg == {ProductCategory.NK: 2e5, ProductCategory.CAR_NK: 2e5}
    assert TABLE.vst_min_shared == 2
    assert TABLE.weights.kir_alloreactive == 40.0
    assert all(isinstance(v, float) for v in (W.kir_b_gene, W.transit_per_hour))


def test_from_dict_refuses_a_ligand_the_model_does_not_know():
    raw = {**RAW, "kir_ligands": {**RAW["kir_ligands"], "Bw6": ["B*07"]}}
    with pytest.raises(ValueError, match="unknown ligands \\['Bw6'\\]"):
        Classification.from_dict(raw)


def test_from_dict_without_not_a_ligand_entry_has_none():
    raw = {k: v for k, v in RAW.items() if k != "not_a_ligand"}
    table = Classification.from_dict(raw)
    assert table.not_a_ligand == frozenset()
    assert table.ligand("B*27:08") == "Bw4"


@pytest.mark.parametrize(
    ("product_type", "category"),
    [
        ("NK-ALLO", ProductCategory.NK),
        ("CAR-NK-CD19", ProductCategory.CAR_NK),
        ("VST-CMV", ProductCategory.VST),
        ("XYZ", None),
        ("nk-allo", None),
        ("", None),
    ],
)
def test_category_of_a_product_type_is_by_code_prefix(product_type, category):
    assert TABLE.category_of(product_type) is category


def test_category_of_takes_the_longest_matching_prefix():
    raw = {**RAW, "product_prefixes": {"NK": ["NK-"], "CAR_NK": ["NK-CAR-"], "VST": ["VST-"]}}
    table = Classification.from_dict(raw)
    assert table.category_of("NK-CAR-19") is ProductCategory.CAR_NK
    assert table.category_of("NK-ALLO") is ProductCategory.NK


# ---- ligand of an allele ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allele", "ligand"),
    [
        ("C*07:02", "C1"),
        ("C*05:01", "C2"),
        ("C*16:01", "C1"),
        ("C*16:02", "C2"),
        ("C*16:04", "C1"),
        ("C*16", None),
        ("B*44:02", "Bw4"),
        ("B*07:02", None),
        ("B*27:05", "Bw4"),
        ("B*27:08", None),
        ("B*27:08:01", None),
        ("A*24:02", "Bw4"),
        ("A*23:01", "Bw4"),
        ("A*32:01", "Bw4"),
        ("A*11:01", "A3/A11"),
        ("A*03:01", "A3/A11"),
        ("A*02:01", None),
        ("B*15:01", None),
        ("B*15:13", "Bw4"),
        ("C*07:02:01:03", "C1"),
        ("C*07", "C1"),
        (" C*05:01 ", "C2"),
    ],
)
def test_ligand_of_an_allele(allele, ligand):
    assert TABLE.ligand(allele) == ligand


def test_a_prefix_only_covers_whole_fields():
    # C*01 is C1, but C*010 is not an allele of the C*01 group
    assert TABLE.ligand("C*010:01") is None


@pytest.mark.parametrize(
    ("allele", "ambiguous"),
    [
        ("C*16", True),  # the table splits C*16 into C*16:01 (C1) and C*16:02 (C2)
        ("B*15", True),  # only some B*15 alleles are Bw4
        ("C*16:01", False),
        ("C*07", False),  # all of C*07 is C1
        ("A*02", False),  # no ligand at all, not ambiguous
        ("B*07:02", False),
    ],
)
def test_a_low_resolution_allele_is_ambiguous_only_when_the_table_splits_its_group(
    allele, ambiguous
):
    assert TABLE.ambiguous(allele) is ambiguous


def test_ligands_of_a_typing_are_the_set_of_its_alleles_ligands():
    assert TABLE.ligands(PATIENT_HLA) == {"C1"}
    assert TABLE.ligands(C2_BW4) == {"C1", "C2", "Bw4"}
    assert TABLE.ligands(A11) == {"C1", "A3/A11"}
    assert TABLE.ligands(("B*27:08", "C*16", "A*02:01")) == frozenset()


def test_ligand_mask_has_one_bit_per_ligand():
    assert mask(()) == 0
    assert mask(["C1"]) == 1
    assert mask(LIGANDS) == 0b1111
    assert mask(["Bw4", "Bw4", "C2"]) == 0b0110


# ---- alloreactive ligands of a donor ------------------------------------------------------------


@pytest.mark.parametrize(
    ("hla", "kir", "expected"),
    [
        (C1_C2, ("KIR2DL1",), {"C2"}),
        (C1_C2, ("KIR2DL3",), {"C1"}),
        (C1_C2, ("KIR2DL2", "KIR2DL1"), {"C1", "C2"}),
        (C1_C2, ("KIR3DL1",), set()),  # donor has no Bw4 to license KIR3DL1
        (C2_C2, ("KIR2DL3",), set()),  # KIR2DL3 needs C1, which the donor lacks
        (BW4, ("KIR3DL1",), {"Bw4"}),
        (A11, ("KIR3DL2",), {"A3/A11"}),
        (C2_BW4, ("KIR2DL1", "KIR3DL1", "KIR2DS1"), {"C2", "Bw4"}),
        (C2_BW4, (), set()),
    ],
)
def test_alloreactive_ligands_are_donor_ligands_whose_inhibitory_kir_the_donor_carries(
    hla, kir, expected
):
    assert TABLE.alloreactive_ligands(hla, kir) == expected


# ---- assess: mismatch, alloreactivity, score ----------------------------------------------------


def kir_points(donor_hla, donor_kir, patient_hla=PATIENT_HLA, category=ProductCategory.NK):
    """Score of the donor minus the score of an otherwise identical, ligand-matched donor."""
    c = criteria(patient=patient(hla_alleles=patient_hla), category=category)
    product = "CAR-NK-X" if category is ProductCategory.CAR_NK else "NK-ALLO"
    mismatched = assessed(unit(donor_hla=donor_hla, donor_kir=donor_kir, product_type=product), c)
    matched = assessed(unit(donor_hla=patient_hla, donor_kir=donor_kir, product_type=product), c)
    assert not mismatched.excluded and not matched.excluded
    return mismatched, mismatched.score - matched.score


def test_donor_c1_c2_with_kir2dl1_against_a_c1_c1_patient_is_alloreactive_for_c2():
    a, points = kir_points(C1_C2, ("KIR2DL1",))
    assert points == pytest.approx(W.kir_alloreactive) == 40
    why = reason_with(a, "KIR-ligand")
    assert "alloreactive: patient lacks C2 (donor KIR2DL1)" in why
    assert why.endswith("(+40)")


def test_the_same_donor_without_kir2dl1_is_a_mismatch_but_not_alloreactive():
    a, points = kir_points(C1_C2, ("KIR2DL3",))
    assert points == pytest.approx(0)
    why = reason_with(a, "KIR-ligand")
    assert why.startswith("KIR-ligand mismatch (C2) but donor lacks the matching KIR")
    assert "not alloreactive" in why and why.endswith("(+0)")


def test_donor_bw4_with_kir3dl1_against_a_bw6_bw6_patient_is_alloreactive_for_bw4():
    a, points = kir_points(BW4, ("KIR3DL1", "KIR2DL3"))
    assert points == pytest.approx(40)
    assert "patient lacks Bw4 (donor KIR3DL1)" in reason_with(a, "KIR-ligand")


def test_donor_a11_with_kir3dl2_is_alloreactive_for_a3_a11():
    a, points = kir_points(A11, ("KIR3DL2",))
    assert points == pytest.approx(40)
    assert "patient lacks A3/A11 (donor KIR3DL2)" in reason_with(a, "KIR-ligand")


def test_two_alloreactive_ligands_score_the_weight_once_and_name_both():
    a, points = kir_points(C2_BW4, ("KIR2DL1", "KIR3DL1"))
    assert points == pytest.approx(40)
    why = reason_with(a, "KIR-ligand")
    assert "Bw4 (donor KIR3DL1), C2 (donor KIR2DL1)" in why


def test_the_reason_names_every_donor_kir_gene_for_the_ligand():
    a, points = kir_points(C1_C2, ("KIR2DL3", "KIR2DL2"), patient_hla=C2_C2)
    assert points == pytest.approx(40)
    assert "patient lacks C1 (donor KIR2DL2/KIR2DL3)" in reason_with(a, "KIR-ligand")


@pytest.mark.parametrize(
    ("donor", "kir", "patient_hla"),
    [
        (C1_C2, ("KIR2DL1", "KIR2DL3"), C1_C2),
        (BW4, ("KIR3DL1",), ("A*24:02", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*07:01")),
        (BW4, ("KIR3DL1",), ("A*02:01", "A*01:01", "B*07:02", "B*44:03", "C*07:02", "C*07:01")),
        (PATIENT_HLA, ("KIR2DL3",), C1_C2),  # patient has more ligands than the donor
    ],
    ids=["C1+C2 both", "Bw4 via HLA-A*24", "Bw4 via another B allele", "patient superset"],
)
def test_a_patient_carrying_every_donor_ligand_has_no_mismatch(donor, kir, patient_hla):
    a, points = kir_points(donor, kir, patient_hla=patient_hla)
    assert points == pytest.approx(0)
    assert reason_with(a, "KIR-ligand").startswith(
        "no KIR-ligand mismatch: patient carries every donor ligand"
    )


def test_a_donor_c1_missing_in_a_c2_c2_patient_is_not_alloreactive_without_c1_kir():
    a, points = kir_points(PATIENT_HLA, ("KIR2DL1",), patient_hla=C2_C2)
    assert points == pytest.approx(0)
    assert "mismatch (C1)" in reason_with(a, "KIR-ligand")


def test_car_nk_products_are_assessed_for_kir_ligands_too():
    a, points = kir_points(C1_C2, ("KIR2DL1",), category=ProductCategory.CAR_NK)
    assert points == pytest.approx(40)
    assert "alloreactive" in reason_with(a, "KIR-ligand")


@pytest.mark.parametrize(
    "changes", [{"donor_kir": ()}, {"donor_hla": ()}], ids=["no KIR typing", "no HLA typing"]
)
def test_a_donor_without_hla_or_kir_typing_is_not_assessed_and_scores_nothing(changes):
    a = assessed(unit(**{"donor_hla": C1_C2, "donor_kir": ("KIR2DL1",), **changes}))
    assert not a.excluded
    assert reason_with(a, "KIR-ligand") == (
        "KIR-ligand not assessed: donor HLA or KIR not typed (+0)"
    )
    assert a.score == assessed(unit(**changes)).score


def test_a_patient_allele_of_ambiguous_group_is_flagged_in_the_reason():
    p = ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*16", "C*07:02")
    a, points = kir_points(C1_C2, ("KIR2DL1",), patient_hla=p)
    assert points == pytest.approx(40)  # C*16 may be C2, but only known ligands count
    assert "patient C*16 ligand unknown at this resolution" in reason_with(a, "KIR-ligand")


def test_vst_products_get_no_kir_ligand_assessment():
    c = criteria(category=ProductCategory.VST)
    a = assessed(
        unit(product_type="VST-X", donor_hla=C1_C2, donor_kir=("KIR2DL1", "KIR2DS1"),
             restricting_allele="A*02:01"),
        c,
    )  # fmt: skip
    assert not a.excluded
    assert not any("KIR" in r for r in a.reasons)


def test_a_null_allele_carries_no_ligand():
    assert TABLE.ligand("C*04:09N") is None
    # consequence: a C1/C1 donor with a null C2 allele is scored alloreactive for C2
    _, points = kir_points(
        ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*04:09N"), ("KIR2DL1",)
    )
    assert points == pytest.approx(0)
