"""KIR-ligand model (Ruggeri, GvH direction): which ligand an allele carries, which donor
ligands are alloreactive, and how `assess` explains and scores a mismatch."""

from __future__ import annotations

import json

import pytest

from services.matching.domain.model import ProductCategory
from services.matching.domain.ranking import (
    LIGANDS,
    Classification,
    LigandTyping,
    assess,
    mask,
)
from services.matching.entrypoints.main import DEFAULT_CLASSIFICATION
from services.matching.tests.builders import (
    PATIENT_HLA,
    TABLE,
    TODAY,
    TRANSIT,
    W,
    assessed,
    criteria,
    patient,
    reason_with,
    unit,
)
from shared.errors import InvalidArgument

RAW = json.loads(DEFAULT_CLASSIFICATION.read_text())

# Donor typings: the patient's (C1/C1, Bw6/Bw6) with one allele swapped.
C1_C2 = ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*05:01")
C2_C2 = ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*05:01", "C*04:01")
BW4 = ("A*02:01", "A*01:01", "B*07:02", "B*44:02", "C*07:02", "C*07:01")
A11 = ("A*02:01", "A*11:01", "B*07:02", "B*08:01", "C*07:02", "C*07:01")
C2_BW4 = ("A*02:01", "A*01:01", "B*07:02", "B*44:02", "C*07:02", "C*05:01")


# ---- the table ----------------------------------------------------------------------------------


def test_the_version_names_the_reference_release_the_ligand_rules_and_the_ranking_table():
    assert RAW["version"] == "rank-2"
    assert TABLE.version == "ipd-imgt-hla-fixture+kir-ligand-2+rank-2"


def test_without_a_reference_the_version_says_so():
    assert Classification.from_dict(RAW).version == "no-hla-reference+kir-ligand-2+rank-2"


def test_from_dict_reads_kir_genes_limits_and_weights():
    assert TABLE.kir_for_ligand["C2"] == frozenset({"KIR2DL1"})
    assert TABLE.kir_for_ligand["C1"] == frozenset({"KIR2DL2", "KIR2DL3"})
    assert TABLE.kir_for_ligand["Bw4"] == frozenset({"KIR3DL1"})
    assert TABLE.cd3_limit_per_kg == {ProductCategory.NK: 2e5, ProductCategory.CAR_NK: 2e5}
    assert TABLE.vst_min_shared == 2
    assert TABLE.weights.kir_alloreactive == 40.0
    assert all(isinstance(v, float) for v in (W.kir_b_content_best, W.transit_per_hour))


def test_from_dict_refuses_a_ligand_the_model_does_not_know():
    raw = {**RAW, "kir_for_ligand": {**RAW["kir_for_ligand"], "Bw6": ["KIR9"]}}
    with pytest.raises(ValueError, match="unknown ligands \\['Bw6'\\]"):
        Classification.from_dict(raw)


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
        ("C*03:07", "C2"),  # C*03 is mostly C1; this allele carries Lys80
        ("C*03", "ambiguous"),  # so the group is split
        ("C*16:01", "C1"),
        ("C*16:02", "C2"),
        ("C*16", "ambiguous"),
        ("C*07", "C1"),  # every expressed member agrees (the Q member is not counted)
        ("B*44:02", "Bw4-80T"),
        ("B*07:02", "none"),
        ("B*46:01", "C1"),
        ("A*24:02", "Bw4-80I"),
        ("A*24:04", "none"),
        ("A*11:01", "A3/A11"),
        ("C*07:02:01:01", "C1"),
        ("C*07:02:01G", "C1"),
        ("C*04:09N", "not-expressed"),
        ("A*01:01:01:02N", "not-expressed"),
        ("C*07:02:01:17Q", "ambiguous"),
        ("DRB1*15:01", "none"),
        (" C*05:01 ", "C2"),
        ("C*99:99", "unknown"),
    ],
)
def test_ligand_class_of_an_allele(allele, ligand):
    assert TABLE.ligand_class(allele) == ligand


def test_without_a_reference_every_class_is_unknown():
    assert Classification.from_dict(RAW).ligand_class("C*07:02") == "unknown"


def test_ligand_typing_collects_ligand_groups_and_what_is_not_known():
    assert TABLE.ligand_typing(PATIENT_HLA) == LigandTyping(frozenset({"C1"}), (), ())
    assert TABLE.ligand_typing(C2_BW4).ligands == {"C1", "C2", "Bw4"}
    assert TABLE.ligand_typing(A11).ligands == {"C1", "A3/A11"}
    typing = TABLE.ligand_typing(("C*04:09N", "C*16", "A*02:01", "B*99:01", "DRB1*15:01"))
    assert typing == LigandTyping(frozenset(), ("C*16",), ("B*99:01",))
    assert not typing.known


def test_a_retired_allele_name_is_refused_with_the_current_name():
    with pytest.raises(InvalidArgument) as refused:
        TABLE.refuse_retired(("A*02:01", "C*07:99"), "patient.hla_alleles")
    assert refused.value.field == "patient.hla_alleles[1]"
    assert "renamed C*07:02:01:01" in str(refused.value)
    TABLE.refuse_retired(("A*02:01", "C*99:99"), "patient.hla_alleles")  # unknown: allowed


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


@pytest.mark.parametrize("low_resolution", ["C*16", "C*03"])
def test_a_patient_typed_at_low_resolution_earns_no_kir_points_and_needs_allele_typing(
    low_resolution,
):
    p = ("A*02:01", "A*01:01", "B*07:02", "B*08:01", low_resolution, "C*07:02")
    a, points = kir_points(C1_C2, ("KIR2DL1",), patient_hla=p)
    assert points == pytest.approx(0)  # the patient may carry C2: no alloreactivity claimed
    assert reason_with(a, "KIR-ligand") == (
        f"KIR-ligand not scored: patient {low_resolution} needs allele-level typing"
        " (ligand ambiguous at this resolution) (+0)"
    )


def test_a_donor_typed_at_low_resolution_earns_no_kir_points():
    donor = ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*16", "C*05:01")
    a, points = kir_points(donor, ("KIR2DL1",))
    assert points == pytest.approx(0)
    assert "donor C*16 needs allele-level typing" in reason_with(a, "KIR-ligand")


def test_a_c3_07_patient_carries_c2_so_a_c2_c2_kir2dl1_donor_is_not_alloreactive():
    p = ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*03:07", "C*07:01")
    a, points = kir_points(C2_C2, ("KIR2DL1", "KIR2DL3"), patient_hla=p)
    assert points == pytest.approx(0)
    assert "alloreactive" not in reason_with(a, "KIR-ligand")


def test_an_allele_the_reference_does_not_know_earns_no_kir_points():
    p = ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*99:99", "C*07:02")
    a, points = kir_points(C1_C2, ("KIR2DL1",), patient_hla=p)
    assert points == pytest.approx(0)
    assert "patient C*99:99 not in the HLA reference release" in reason_with(a, "KIR-ligand")


def test_without_a_reference_no_kir_points_and_the_reason_says_why():
    table = Classification.from_dict(RAW)
    a = assess(unit(donor_hla=C1_C2, donor_kir=("KIR2DL1",)), criteria(), table, TRANSIT, TODAY)
    assert reason_with(a, "KIR-ligand") == (
        "KIR-ligand not scored: no HLA reference release is configured"
        " (CELLBANK_HLA_REFERENCE) (+0)"
    )


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
    assert TABLE.ligand_class("C*04:09N") == "not-expressed"
    # consequence: a C1/C1 donor with a null C2 allele has no C2 to be alloreactive for
    _, points = kir_points(
        ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*04:09N"), ("KIR2DL1",)
    )
    assert points == pytest.approx(0)


def test_a_search_without_a_reference_notes_that_kir_points_are_off_for_nk_products():
    without = Classification.from_dict(RAW)
    assert without.search_notes(ProductCategory.NK) == [
        "KIR-ligand points are off: no HLA reference release is configured at this site"
        " (CELLBANK_HLA_REFERENCE)"
    ]
    assert without.search_notes(ProductCategory.VST) == []
    assert TABLE.search_notes(ProductCategory.NK) == []
