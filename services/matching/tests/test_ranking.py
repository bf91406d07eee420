"""Suitability and ranking of a unit for a patient: exclusion rules (dose, CD3+, expiry,
category, VST HLA restriction), score factors (CMV, ABO, KIR B-content, transit, expiry),
the order of `rank`, input validation and the words of a rejection."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from services.matching.domain.model import Cmv, ProductCategory
from services.matching.domain.ranking import (
    Assessment,
    needed_on,
    rank,
    rejection_reason,
    two_field,
    validate_dose,
    validate_patient,
)
from services.matching.tests.builders import (
    DOSE_MAX,
    DOSE_MIN,
    NOW,
    PATIENT_HLA,
    TODAY,
    TRANSIT,
    WEIGHT_KG,
    W,
    assessed,
    criteria,
    patient,
    reason_with,
    unit,
)
from shared.errors import InvalidArgument

NK, CAR_NK, VST = ProductCategory.NK, ProductCategory.CAR_NK, ProductCategory.VST
CD3_LIMIT = 2e5


def expiry_points(days: int) -> float:
    return W.expiry_soonest * max(0.0, 1.0 - days / 1826)


# ---- the default match --------------------------------------------------------------------------


def test_a_suitable_unit_scores_the_sum_of_its_factors_and_explains_each():
    a = assessed()
    assert a.excluded == ""
    assert a.dose_per_kg == 1e7
    assert a.transit_hours == 1.0
    # CMV -/- +15, ABO identical +10, no B genes, 1 h transit -2, expiry in 365 days
    assert a.score == pytest.approx(15 + 10 + 0 - 2 + expiry_points(365))
    assert a.reasons == (
        "dose 1e+07 cells/kg within 5e+06–3e+07; CD3+ 1.43e+04/kg ≤ 2e+05",
        "no KIR-ligand mismatch: patient carries every donor ligand (+0)",
        "CMV-negative donor for a CMV-negative patient (+15)",
        "ABO identical (A) (+10)",
        "donor KIR B-content Neutral (Cen-A/A, Tel-A/A; 0 B motif(s)) (+0)",
        "delivery ≈ 1 h from LON (-2.0)",
        "expires 2027-06-01, in 365 days (+4.00)",
    )


def test_an_excluded_unit_has_no_score_and_no_reasons_but_keeps_dose_and_transit():
    a = assessed(unit(viable_nk_cells=1.0, site_id="MAN"), criteria(hospital_id="H3"))
    assert a.excluded.startswith("dose below")
    assert (a.score, a.reasons) == (0.0, ())
    assert a.dose_per_kg == pytest.approx(1 / WEIGHT_KG)
    assert a.transit_hours == 4.0


# ---- dose ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dose", "excluded"),
    [
        (DOSE_MIN * 0.999, "dose below 5e+06 cells/kg"),
        (DOSE_MIN, ""),
        (DOSE_MAX, ""),
        (DOSE_MAX * 1.001, "dose above 3e+07 cells/kg"),
        (0.0, "dose below 5e+06 cells/kg"),
    ],
    ids=["below min", "at min", "at max", "above max", "no cells"],
)
def test_the_dose_per_kg_must_lie_inside_the_ordered_range_bounds_inclusive(dose, excluded):
    a = assessed(unit(viable_nk_cells=dose * WEIGHT_KG))
    assert a.excluded == excluded
    assert a.dose_per_kg == pytest.approx(dose)


def test_the_dose_is_divided_by_the_patients_weight():
    u = unit(viable_nk_cells=1e9)  # 1.43e7/kg for 70 kg, 4e7/kg for 25 kg
    assert assessed(u).excluded == ""
    a = assessed(u, criteria(patient=patient(weight_kg=25.0)))
    assert a.excluded == "dose above 3e+07 cells/kg"
    assert a.dose_per_kg == 4e7


# ---- CD3+ ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("category", "product"), [(NK, "NK-ALLO"), (CAR_NK, "CAR-NK-X")])
@pytest.mark.parametrize(
    ("cd3_per_kg", "excluded"),
    [(CD3_LIMIT, ""), (CD3_LIMIT + 1, "CD3+ above 200000 cells/kg"), (0.0, "")],
    ids=["at limit", "above limit", "none"],
)
def test_cd3_cells_per_kg_above_the_limit_exclude_nk_products(
    category, product, cd3_per_kg, excluded
):
    u = unit(product_type=product, cd3_cells=cd3_per_kg * WEIGHT_KG)
    assert assessed(u, criteria(category=category)).excluded == excluded


def test_vst_products_have_no_cd3_limit():
    u = vst_unit(cd3_cells=1e10)
    a = assessed(u, criteria(category=VST))
    assert a.excluded == ""
    assert "CD3" not in a.reasons[0]


# ---- expiry -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_after_needed", "excluded"),
    [(-30, True), (-1, True), (0, False), (1, False)],
    ids=["long before", "day before", "on the day (usable until it ends)", "day after"],
)
def test_a_unit_expiring_before_the_day_needed_is_excluded(days_after_needed, excluded):
    needed = TODAY + timedelta(days=9)
    u = unit(expires_on=needed + timedelta(days=days_after_needed))
    a = assessed(u, criteria(needed_on=needed))
    assert a.excluded == ("expires before 2026-06-10" if excluded else "")


def test_a_unit_expired_before_today_is_never_suitable():
    c = criteria(needed_on=TODAY - timedelta(days=5))
    a = assessed(unit(expires_on=TODAY - timedelta(days=1)), c)
    assert a.excluded


def test_the_first_failing_rule_is_the_one_named():
    u = unit(viable_nk_cells=1.0, cd3_cells=1e12, expires_on=TODAY)
    assert assessed(u).excluded == "dose below 5e+06 cells/kg"
    u = unit(cd3_cells=1e12, expires_on=TODAY)
    assert assessed(u).excluded == "CD3+ above 200000 cells/kg"


# ---- product category ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "product", "excluded"),
    [
        (NK, "VST-X", "not a NK product"),
        (NK, "CAR-NK-X", "not a NK product"),
        (NK, "XYZ-1", "not a NK product"),
        (CAR_NK, "NK-ALLO", "not a CAR_NK product"),
        (VST, "NK-ALLO", "not a VST product"),
    ],
)
def test_a_unit_of_another_product_category_is_excluded(category, product, excluded):
    assert assessed(unit(product_type=product), criteria(category=category)).excluded == excluded


# ---- VST: HLA restriction -----------------------------------------------------------------------

# shares A*02:01 and B*07:02 with the patient (A*02:01, A*01:01, B*07:02, B*08:01, C*07:02, C*07:01)
VST_DONOR = ("A*02:01", "A*03:01", "B*07:02", "B*44:02", "C*05:01", "C*04:01")


def vst_unit(**changes):
    return unit(
        **{
            "product_type": "VST-X",
            "donor_hla": VST_DONOR,
            "restricting_allele": "A*02:01",
            **changes,
        }
    )


def test_a_vst_unit_sharing_two_alleles_including_the_restricting_one_is_suitable():
    a = assessed(vst_unit(), criteria(category=VST))
    assert a.excluded == ""
    assert reason_with(a, "HLA:") == ("HLA: 2 shared (A*02:01, B*07:02), restricting A*02:01 (+10)")
    # HLA 2×5, CMV +15, ABO +10, transit -2, expiry; no KIR and no B-content for VST
    assert a.score == pytest.approx(10 + 15 + 10 - 2 + expiry_points(365))
    assert not any("KIR" in r for r in a.reasons)


@pytest.mark.parametrize(
    ("changes", "excluded"),
    [
        ({"restricting_allele": ""}, "restricting HLA allele not recorded"),
        ({"restricting_allele": "A*03:01"}, "restricting allele A*03:01 not shared"),
        ({"restricting_allele": "A*01:01"}, "restricting allele A*01:01 not shared"),
        (
            {"donor_hla": ("A*02:01", "A*03:01", "B*35:01", "B*44:02", "C*05:01", "C*04:01")},
            "fewer than 2 shared HLA alleles",
        ),
        (
            {"donor_hla": ("A*02:05", "A*03:01", "B*07:02", "B*44:02", "C*05:01", "C*04:01")},
            "restricting allele A*02:01 not shared",
        ),
    ],
    ids=["no restricting", "restricting donor-only", "restricting patient-only", "one shared",
         "differs in 2nd field"],
)  # fmt: skip
def test_a_vst_unit_without_a_shared_restricting_allele_and_two_shared_is_excluded(
    changes, excluded
):
    assert assessed(vst_unit(**changes), criteria(category=VST)).excluded == excluded


def test_vst_sharing_is_compared_at_two_field_resolution():
    donor = ("A*02:01:01:01", "A*03:01", "B*07:02:01", "B*44:02", "C*07:01:02", "C*04:01")
    a = assessed(vst_unit(donor_hla=donor, restricting_allele="A*02:01:01"), criteria(category=VST))
    assert a.excluded == ""
    assert reason_with(a, "HLA:") == (
        "HLA: 3 shared (A*02:01, B*07:02, C*07:01), restricting A*02:01 (+15)"
    )


def test_a_homozygous_patient_allele_counts_once():
    p = patient(hla_alleles=("A*02:01", "A*02:01", "B*35:01", "B*08:01", "C*07:02", "C*07:01"))
    a = assessed(vst_unit(), criteria(category=VST, patient=p))
    assert a.excluded == "fewer than 2 shared HLA alleles"


@pytest.mark.parametrize(
    ("allele", "two"),
    [("A*02:01", "A*02:01"), ("A*02:01:01:01", "A*02:01"), ("C*16", "C*16"), ("B*07:02:01", "B*07:02")],
)  # fmt: skip
def test_two_field_keeps_locus_and_first_two_fields(allele, two):
    assert two_field(allele) == two


# ---- CMV ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patient_cmv", "donor_cmv", "points", "why"),
    [
        (Cmv.NEGATIVE, "NEGATIVE", 15, "CMV-negative donor for a CMV-negative patient (+15)"),
        (Cmv.NEGATIVE, "POSITIVE", -15, "CMV-positive donor for a CMV-negative patient (-15)"),
        (Cmv.NEGATIVE, "UNKNOWN", -5, "donor CMV status unknown, patient CMV-negative (-5)"),
        (Cmv.NEGATIVE, "", -5, "donor CMV status unknown, patient CMV-negative (-5)"),
        (Cmv.POSITIVE, "NEGATIVE", 0, "CMV: patient positive, no donor preference (+0)"),
        (Cmv.POSITIVE, "POSITIVE", 0, "CMV: patient positive, no donor preference (+0)"),
        (Cmv.UNKNOWN, "POSITIVE", 0, "CMV: patient unknown, no donor preference (+0)"),
    ],
)
def test_cmv_negative_patients_prefer_cmv_negative_donors(patient_cmv, donor_cmv, points, why):
    u = unit(donor_cmv=donor_cmv)
    a = assessed(u, criteria(patient=patient(cmv=patient_cmv)))
    neutral = assessed(u, criteria(patient=patient(cmv=Cmv.POSITIVE)))
    assert a.score - neutral.score == pytest.approx(points)
    assert reason_with(a, "CMV") == why


# ---- ABO ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("donor", "recipient", "points", "why"),
    [
        ("A", "A", 10, "ABO identical (A) (+10)"),
        ("O", "O", 10, "ABO identical (O) (+10)"),
        ("AB", "AB", 10, "ABO identical (AB) (+10)"),
        ("O", "A", 5, "ABO minor incompatibility (donor O, patient A) (+5)"),
        ("A", "AB", 5, "ABO minor incompatibility (donor A, patient AB) (+5)"),
        ("O", "AB", 5, "ABO minor incompatibility (donor O, patient AB) (+5)"),
        ("A", "O", -10, "ABO major incompatibility (donor A, patient O) (-10)"),
        ("AB", "B", -10, "ABO major incompatibility (donor AB, patient B) (-10)"),
        ("B", "A", -10, "ABO major incompatibility (donor B, patient A) (-10)"),
        ("", "A", 0, "ABO not assessed (donor ?, patient A) (+0)"),
        ("A", "", 0, "ABO not assessed (donor A, patient ?) (+0)"),
        ("X", "A", 0, "ABO not assessed (donor X, patient A) (+0)"),
    ],
)
def test_abo_identical_scores_best_then_minor_then_unknown_then_major(
    donor, recipient, points, why
):
    c = criteria(patient=patient(abo=recipient))
    a = assessed(unit(donor_abo=donor), c)
    unknown = assessed(unit(donor_abo=""), c)
    assert a.score - unknown.score == pytest.approx(points)
    assert reason_with(a, "ABO") == why


# ---- KIR B-content ------------------------------------------------------------------------------


def test_a_cen_b_b_donor_is_best_and_outranks_a_cen_a_b_tel_b_b_donor_with_more_b_genes():
    best = assessed(unit(donor_kir=("KIR2DL2", "KIR2DS2", "KIR3DL1", "KIR2DS4", "KIR2DL1")))
    better = assessed(
        unit(donor_kir=("KIR2DL3", "KIR2DL2", "KIR2DS2", "KIR3DS1", "KIR2DS1", "KIR2DL1"))
    )
    assert best.score - assessed().score == pytest.approx(W.kir_b_content_best) == 10
    assert better.score - assessed().score == pytest.approx(W.kir_b_content_better) == 5
    assert best.score > better.score  # 2 B motifs (Cen-B/B) above 3 (Cen-A/B, Tel-B/B)
    assert reason_with(best, "B-content") == (
        "donor KIR B-content Best (Cen-B/B, Tel-A/A; 2 B motif(s)) (+10)"
    )
    assert reason_with(better, "B-content") == (
        "donor KIR B-content Better (Cen-A/B, Tel-B/B; 3 B motif(s)) (+5)"
    )


def test_a_neutral_donor_scores_no_b_content_points():
    a = assessed(unit(donor_kir=("KIR2DL3", "KIR2DL2", "KIR3DL1", "KIR2DL1")))  # 1 B motif
    assert a.score == pytest.approx(assessed().score)
    assert reason_with(a, "B-content") == (
        "donor KIR B-content Neutral (Cen-A/B, Tel-A/A; 1 B motif(s)) (+0)"
    )


def test_b_content_the_genotype_cannot_place_is_said_and_scores_nothing():
    a = assessed(unit(donor_kir=("KIR2DL1", "KIR2DL2", "KIR2DL3", "KIR2DS5")))
    assert a.score == pytest.approx(assessed().score)
    assert reason_with(a, "B-content") == (
        "donor KIR B-content undetermined: the genotype can't tell Cen/Tel (Cen-A/B,"
        " Tel-undetermined; ? B motif(s); KIR2DS5 present, Cen or Tel unknown from gene"
        " presence) (+0)"
    )


def test_kir_b_content_does_not_count_for_vst():
    u = vst_unit(donor_kir=("KIR2DS1", "KIR2DS2"))
    c = criteria(category=VST)
    assert assessed(u, c).score == assessed(vst_unit(), c).score


# ---- delivery time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("site", "hospital", "hours"),
    [
        ("LON", "H1", 1.0),
        ("LON", "H3", 5.5),
        ("MAN", "H3", 4.0),
        ("EDI", "H3", 1.0),
        ("XYZ", "H1", 6.0),  # unknown site: default
        ("LON", "H9", 6.0),  # unknown hospital: default
    ],
)
def test_transit_hours_come_from_the_route_table_with_a_default(site, hospital, hours):
    assert TRANSIT.hours(site, hospital) == hours
    a = assessed(unit(site_id=site), criteria(hospital_id=hospital))
    assert a.transit_hours == hours
    assert a.score - assessed().score == pytest.approx(W.transit_per_hour * (hours - 1.0))
    assert reason_with(a, "delivery") == (
        f"delivery ≈ {hours:g} h from {site} ({W.transit_per_hour * hours:+.1f})"
    )


# ---- expiry preference --------------------------------------------------------------------------


def test_a_sooner_expiring_unit_scores_slightly_higher():
    soon = assessed(unit(expires_on=TODAY + timedelta(days=30)))
    late = assessed(unit(expires_on=TODAY + timedelta(days=300)))
    assert 0 < soon.score - late.score < W.expiry_soonest
    assert soon.score - late.score == pytest.approx(expiry_points(30) - expiry_points(300))
    assert reason_with(soon, "expires") == "expires 2026-07-01, in 30 days (+4.92)"


def test_expiry_beyond_the_horizon_adds_nothing_and_never_subtracts():
    a = assessed(unit(expires_on=TODAY + timedelta(days=2000)))
    b = assessed(unit(expires_on=TODAY + timedelta(days=4000)))
    assert a.score == b.score
    assert reason_with(a, "expires").endswith("(+0.00)")


def test_expiry_points_count_from_today_not_from_the_day_needed():
    u = unit(expires_on=TODAY + timedelta(days=100))
    a = assessed(u, today=TODAY)
    b = assessed(u, today=TODAY + timedelta(days=50))
    assert b.score - a.score == pytest.approx(expiry_points(50) - expiry_points(100))


# ---- rank ---------------------------------------------------------------------------------------


def scored(unit_id: str, score: float, days: int = 100, excluded: str = "") -> Assessment:
    u = unit(unit_id, expires_on=TODAY + timedelta(days=days))
    return Assessment(u, excluded, 1e7, score, (), 1.0)


def ids(assessments: list[Assessment]) -> list[str]:
    return [a.unit.unit_id for a in assessments]


def test_rank_orders_by_score_highest_first():
    assert ids(rank([scored("a", 1), scored("b", 30), scored("c", -5)])) == ["b", "a", "c"]


def test_rank_breaks_score_ties_by_soonest_expiry():
    assert ids(rank([scored("a", 7, days=90), scored("b", 7, days=10)])) == ["b", "a"]


def test_rank_breaks_score_and_expiry_ties_by_unit_id():
    ranked = rank([scored("u3", 7), scored("u1", 7), scored("u2", 7), scored("u0", 8, days=900)])
    assert ids(ranked) == ["u0", "u1", "u2", "u3"]


def test_rank_leaves_out_excluded_units():
    ranked = rank([scored("a", 0, excluded="dose below 1 cells/kg"), scored("b", -50)])
    assert ids(ranked) == ["b"]
    assert rank([]) == []


def test_rank_of_real_assessments_puts_the_better_match_first():
    good = unit("good", donor_hla=("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*05:01"),
                donor_kir=("KIR2DL1",))  # fmt: skip
    plain = unit("plain")
    far = unit("far", site_id="EDI")
    cut = unit("cut", viable_nk_cells=1.0)
    ranked = rank(assessed(u) for u in (cut, far, plain, good))
    assert ids(ranked) == ["good", "plain", "far"]


# ---- validate_patient ---------------------------------------------------------------------------


def field_of(call) -> str:
    with pytest.raises(InvalidArgument) as e:
        call()
    return e.value.field


def test_a_valid_patient_comes_back_canonical():
    p = patient(
        patient_ref="  pt-7 ",
        hla_alleles=("HLA-A*02:01", *PATIENT_HLA[1:], "DRB1*15:01"),
        abo=" ab ",
    )
    v = validate_patient(p)
    assert v.patient_ref == "pt-7"
    assert v.hla_alleles == (*PATIENT_HLA, "DRB1*15:01")
    assert v.abo == "AB"
    assert (v.weight_kg, v.cmv) == (p.weight_kg, p.cmv)


@pytest.mark.parametrize("weight", [0.3, 1.0, 300.0])
def test_weights_inside_the_range_are_accepted(weight):
    assert validate_patient(patient(weight_kg=weight)).weight_kg == weight


@pytest.mark.parametrize("weight", [0.0, -1.0, math.nan, math.inf, -math.inf, 1000.0, 300.5, 0.29])
def test_a_weight_that_is_not_a_plausible_body_weight_is_refused(weight):
    assert field_of(lambda: validate_patient(patient(weight_kg=weight))) == "patient.weight_kg"


def test_the_field_prefix_is_the_callers():
    call = lambda: validate_patient(patient(weight_kg=0.0), field="order.patient")  # noqa: E731
    assert field_of(call) == "order.patient.weight_kg"


@pytest.mark.parametrize(
    ("index", "allele"),
    [(0, "XYZ"), (1, "A*2:01"), (3, "b*08:01"), (5, "C*07:01X"), (2, "")],
)
def test_a_malformed_allele_is_refused_naming_its_position(index, allele):
    hla = list(PATIENT_HLA)
    hla[index] = allele
    field = field_of(lambda: validate_patient(patient(hla_alleles=tuple(hla))))
    assert field == f"patient.hla_alleles[{index}]"


def test_low_resolution_alleles_are_accepted():
    hla = ("A*02", "A*01", "B*07", "B*08", "C*16", "C*07")
    assert validate_patient(patient(hla_alleles=hla)).hla_alleles == hla


@pytest.mark.parametrize(
    ("hla", "missing"),
    [
        (PATIENT_HLA[:4], "missing C"),
        (PATIENT_HLA[2:], "missing A"),
        (("B*07:02", "DRB1*15:01"), "missing A, C"),
        ((), "missing A, B, C"),
    ],
)
def test_a_b_and_c_typing_is_required(hla, missing):
    with pytest.raises(InvalidArgument) as e:
        validate_patient(patient(hla_alleles=hla))
    assert e.value.field == "patient.hla_alleles"
    assert missing in e.value.rule


def test_more_than_two_alleles_at_a_locus_are_refused():
    with pytest.raises(InvalidArgument, match="more than two alleles at A") as e:
        validate_patient(patient(hla_alleles=(*PATIENT_HLA, "A*03:01")))
    assert e.value.field == "patient.hla_alleles"


def test_more_alleles_than_two_per_locus_in_total_are_refused():
    hla = (*PATIENT_HLA, "DRB1*15:01", "DRB1*01:01", "DQB1*06:02", "DQB1*05:01", "A*03:01")
    with pytest.raises(InvalidArgument, match="at most 10 alleles") as e:
        validate_patient(patient(hla_alleles=hla))
    assert e.value.field == "patient.hla_alleles"


@pytest.mark.parametrize("abo", ["Q", "0", "A+", "ABO"])
def test_an_unknown_blood_group_is_refused(abo):
    assert field_of(lambda: validate_patient(patient(abo=abo))) == "patient.abo"


@pytest.mark.parametrize("abo", ["A", "b", "AB", "O", ""])
def test_known_or_absent_blood_groups_are_accepted(abo):
    assert validate_patient(patient(abo=abo)).abo == abo.upper()


@pytest.mark.parametrize("ref", ["", "   ", "x" * 65, "pt\n1"])
def test_the_patient_reference_is_required_short_and_printable(ref):
    assert field_of(lambda: validate_patient(patient(patient_ref=ref))) == "patient.patient_ref"


# ---- validate_dose ------------------------------------------------------------------------------


@pytest.mark.parametrize(("low", "high"), [(5e6, 3e7), (1e7, 1e7), (1.0, 1e12)])
def test_a_positive_dose_range_is_accepted(low, high):
    validate_dose(low, high)


@pytest.mark.parametrize(
    ("low", "high", "field"),
    [
        (3e7, 5e6, "dose_cells_per_kg_min"),
        (math.nan, 3e7, "dose_cells_per_kg_min"),
        (5e6, math.nan, "dose_cells_per_kg_max"),
        (0.0, 3e7, "dose_cells_per_kg_min"),
        (-5e6, 3e7, "dose_cells_per_kg_min"),
        (5e6, math.inf, "dose_cells_per_kg_max"),
        (5e6, 2e12, "dose_cells_per_kg_max"),
        (2e12, 3e12, "dose_cells_per_kg_min"),
    ],
    ids=["min above max", "NaN min", "NaN max", "zero", "negative", "inf", "huge max", "huge"],
)
def test_an_impossible_dose_range_is_refused_naming_the_field(low, high, field):
    assert field_of(lambda: validate_dose(low, high)) == field


# ---- rejection_reason, needed_on ----------------------------------------------------------------


def test_rejection_counts_every_exclusion_rule_most_frequent_first():
    excluded = {"dose below 5e+06 cells/kg": 3, "expires on or before 2026-06-01": 7}
    assert rejection_reason(criteria(), excluded, tried=0) == (
        "no suitable NK unit in the network for a dose of 5e+06–3e+07 cells/kg for 70 kg "
        "(units excluded — expires on or before 2026-06-01: 7; dose below 5e+06 cells/kg: 3)"
    )


def test_rejection_after_losing_every_reservation_race_says_so():
    why = rejection_reason(criteria(category=VST), {"dose below 5e+06 cells/kg": 1}, tried=2)
    assert why == (
        "no VST unit could be reserved: the 2 suitable unit(s) (5e+06–3e+07 cells/kg for 70 kg)"
        " were taken by other orders or changed at their site meanwhile"
    )


def test_rejection_with_nothing_in_stock_says_so():
    assert rejection_reason(criteria(category=CAR_NK), {}, tried=0) == (
        "no CAR_NK unit is available in the network inventory"
    )


def test_needed_on_is_the_day_needed_or_today():
    assert needed_on(None, NOW) == TODAY
    assert needed_on(datetime(2026, 7, 4, 23, 0, tzinfo=UTC), NOW).isoformat() == "2026-07-04"


def test_needed_by_may_not_be_in_the_past_nor_a_decade_away():
    from datetime import UTC, datetime, timedelta

    from services.matching.domain.ranking import validate_needed_by
    from shared.errors import InvalidArgument

    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert validate_needed_by(now - timedelta(minutes=4), now) == now - timedelta(minutes=4)
    for moment in (now - timedelta(minutes=6), now + timedelta(days=3651)):
        with pytest.raises(InvalidArgument) as refused:
            validate_needed_by(moment, now)
        assert refused.value.field == "needed_by"
