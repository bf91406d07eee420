"""CandidateIndex: its vectorised search must give what `assess` + `rank` give unit by unit
(same units, same order, same scores, same exclusion counts), and availability (holds,
status, exclusions, slots) must be kept right as units come and go."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.matching.domain.model import Cmv, PatientSnapshot, ProductCategory
from services.matching.domain.ranking import Classification, Criteria, UnitProfile, assess, rank
from services.matching.index import MARGIN, Availability, CandidateIndex
from services.matching.tests.builders import NOW, TABLE, TODAY, TRANSIT, criteria, unit

STORED = Availability("STORED", "", None)

# ---- strategies ---------------------------------------------------------------------------------

POOL = {
    "A": ("A*01:01", "A*02:01", "A*03:01", "A*11:01", "A*24:02", "A*32:01"),
    "B": ("B*07:02", "B*08:01", "B*15:01", "B*15:13", "B*27:05", "B*27:08", "B*44:02"),
    "C": ("C*03:04", "C*04:01", "C*05:01", "C*07:02", "C*16:01", "C*16:02", "C*16", "C*03:07"),
}
KIR_GENES = sorted(
    {"KIR2DL2", "KIR2DS1", "KIR2DS2", "KIR2DS5", "KIR3DS1", "KIR2DS4"}
    | {g for gs in TABLE.kir_for_ligand.values() for g in gs}
    | {"KIR2DL1", "KIR2DL3", "KIR3DL1"}
)
PRODUCTS = ("NK-ALLO", "CAR-NK-X", "VST-X")
SITES = ("LON", "MAN", "EDI", "XYZ")
ABO = ("A", "B", "AB", "O", "")


def typing_of(pools: dict[str, tuple[str, ...]]) -> st.SearchStrategy[tuple[str, ...]]:
    loci = [st.lists(st.sampled_from(pools[k]), min_size=2, max_size=2) for k in "ABC"]
    return st.tuples(*loci).map(lambda ls: tuple(a for alleles in ls for a in alleles))


# the patient may be typed at low resolution, where the ligand can be ambiguous (C*16, B*15)
patients = st.builds(
    PatientSnapshot,
    patient_ref=st.just("pt-1"),
    weight_kg=st.floats(2.0, 150.0),
    hla_alleles=typing_of(
        {**POOL, "B": (*POOL["B"], "B*15"), "C": (*POOL["C"], "C*16", "C*99:99")}
    ),
    abo=st.sampled_from(ABO),
    cmv=st.sampled_from(Cmv),
)


@st.composite
def criterias(draw: st.DrawFn, categories: tuple[ProductCategory, ...]) -> Criteria:
    dose_min = draw(st.floats(1e6, 2e7))
    return Criteria(
        hospital_id=draw(st.sampled_from(("H1", "H2", "H3", "H9"))),
        patient=draw(patients),
        category=draw(st.sampled_from(categories)),
        dose_min=dose_min,
        dose_max=dose_min * draw(st.floats(1.0, 10.0)),
        needed_on=TODAY + timedelta(days=draw(st.integers(0, 30))),
    )


T = TypeVar("T")


class Genes:
    """A drawn integer read digit by digit (mixed radix), each digit choosing one feature of a
    unit. A unit is one draw of random bytes, which keeps large inventories fast to generate;
    digit 0 is the first option, so shrinking (towards zero bytes) leads to simple units."""

    def __init__(self, value: int) -> None:
        self.value = value

    def pick(self, options: Sequence[T]) -> T:
        self.value, i = divmod(self.value, len(options))
        return options[i]


GENE = st.binary(min_size=10, max_size=10).map(lambda b: int.from_bytes(b, "little"))


def unit_from_gene(
    gene: int, c: Criteria, unit_id: str, days: int, fit: bool = False
) -> UnitProfile:
    """A unit that often, not always, suits the criteria: the draws favour the ordered
    category, a dose near the range, CD3+ near the limit and HLA shared with the patient.
    fit: the unit is of the ordered category with a dose and CD3+ count inside the limits."""
    g = Genes(gene)
    own = {ProductCategory.NK: "NK-ALLO", ProductCategory.CAR_NK: "CAR-NK-X"}.get(
        c.category, "VST-X"
    )
    product = g.pick((own, own, own, *PRODUCTS))
    step = g.pick(range(102))  # 0: dose_min exactly, 1: dose_max exactly, else 0.8×min–1.25×max
    low, high = c.dose_min * 0.8, c.dose_max * 1.25
    dose = (c.dose_min, c.dose_max)[step] if step < 2 else low + (high - low) * (step - 2) / 99
    cd3 = 5000.0 * g.pick(range(51))  # 0–250,000 per kg, the 200,000 limit included
    if fit:
        product, dose, cd3 = own, (c.dose_min + c.dose_max) / 2, min(cd3, 2e5)
    site = g.pick(SITES)
    cmv = g.pick(("NEGATIVE", "POSITIVE", "UNKNOWN"))
    abo = g.pick(ABO)
    kir_bits = g.pick(range(2 ** len(KIR_GENES)))
    typed = g.pick(range(6)) != 5
    keep = g.pick(range(64))  # bit i: the donor has the patient's allele i
    other = [g.pick(POOL[locus]) for locus in "AABBCC"]
    hla = tuple(
        p if keep >> i & 1 else o
        for i, (p, o) in enumerate(zip(c.patient.hla_alleles, other, strict=True))
    ) if typed else ()  # fmt: skip
    restricting = g.pick((*hla, *hla, "", "A*02:01", "B*07:02:01"))
    return UnitProfile(
        unit_id=unit_id,
        din=f"DIN-{unit_id}",
        site_id=site,
        product_type=product,
        viable_nk_cells=dose * c.patient.weight_kg,
        cd3_cells=cd3 * c.patient.weight_kg,
        expires_on=TODAY + timedelta(days=days),
        donor_hla=hla,
        donor_kir=tuple(k for i, k in enumerate(KIR_GENES) if kir_bits >> i & 1),
        donor_cmv=cmv,
        donor_abo=abo,
        restricting_allele=restricting,
        version=1,
    )


@st.composite
def scenarios(
    draw: st.DrawFn, ties: bool = False, crowded: bool = False
) -> tuple[Criteria, list[UnitProfile], list[int], int]:
    """Criteria, units, the order they are inserted in, and the search limit.

    ties=False: up to 60 units with distinct expiry days inside the expiry horizon, so no two
    scores are equal, and often more suitable units than limit + MARGIN, so the index's top-k
    partition is exercised; crowded=True: an NK or CAR-NK order and 30–60 units, so it
    nearly always is.
    ties=True: at most limit + MARGIN copies of a few template units, with few expiry days
    (two beyond the horizon, worth 0 points): many scores tie and `rank` orders them by
    expiry, then unit id.
    """
    nk = (ProductCategory.NK, ProductCategory.CAR_NK)
    c = draw(criterias(nk if crowded else tuple(ProductCategory)))
    limit = draw(st.integers(1, 8))
    if ties:
        templates = draw(st.lists(st.tuples(GENE, st.booleans()), min_size=2, max_size=4))
        n = draw(st.integers(0, limit + MARGIN))
        picks = draw(st.lists(st.tuples(st.sampled_from(templates), st.sampled_from(TIE_DAYS)),
                              min_size=n, max_size=n))  # fmt: skip
        units = [
            unit_from_gene(gene, c, f"u{i:03d}", days, fit)
            for i, ((gene, fit), days) in enumerate(picks)
        ]
    else:
        n = draw(st.integers(30, 60) if crowded else st.integers(0, 60))
        genes = draw(st.lists(GENE, min_size=n, max_size=n))
        # crowded: about half the units are made to fit, so many are suitable
        fits = draw(st.lists(st.booleans(), min_size=n, max_size=n)) if crowded else [False] * n
        # distinct expiry days: unit i expires in the (slot[i])th 18-day window, jittered
        slots = draw(st.permutations(range(n)))
        units = [
            unit_from_gene(gene, c, f"u{i:03d}", -10 + 18 * slots[i] + gene % 17, fit)
            for i, (gene, fit) in enumerate(zip(genes, fits, strict=True))
        ]
    order = draw(st.permutations(range(len(units))))
    return c, units, order, limit


TIE_DAYS = (0, 40, 41, 2000, 2500)  # 0: expired on the day; 2000, 2500: both worth 0 points


PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def indexed(
    units: list[UnitProfile],
    order: list[int] | None = None,
    table: Classification = TABLE,
    **kw: Any,
) -> CandidateIndex:
    index = CandidateIndex(table, TRANSIT, **kw)
    for i in order if order is not None else range(len(units)):
        index.upsert(units[i], STORED)
    return index


def check_against_reference(c: Criteria, units: list[UnitProfile], order: list[int], limit: int):
    index = indexed(units, order, capacity=8)  # grows while inserting
    result = index.search(c, now=NOW, limit=limit)

    reference = [assess(u, c, TABLE, TRANSIT, TODAY) for u in units]
    expected = rank(reference)[:limit]
    assert [(a.unit.unit_id, a.score) for a in result.ranked] == [
        (a.unit.unit_id, a.score) for a in expected
    ]
    assert result.ranked == expected

    of_category = [a for a in reference if TABLE.category_of(a.unit.product_type) is c.category]
    assert result.excluded == dict(Counter(a.excluded for a in of_category if a.excluded))
    assert result.considered == len(of_category)


# ---- properties ---------------------------------------------------------------------------------


@PROPERTY
@given(scenarios(ties=False))
def test_search_returns_the_reference_top_units_and_exclusion_counts(scenario):
    check_against_reference(*scenario)


@PROPERTY
@given(scenarios(crowded=True))
def test_search_of_a_crowded_inventory_returns_the_reference_top_units(scenario):
    check_against_reference(*scenario)


@PROPERTY
@given(scenarios(ties=True))
def test_search_breaks_score_ties_like_rank(scenario):
    check_against_reference(*scenario)


WITHOUT_REFERENCE = dataclasses.replace(TABLE, reference=None)


@PROPERTY
@given(scenarios(ties=False), st.sampled_from([TABLE, WITHOUT_REFERENCE]))
def test_vectorised_scores_equal_assess_scores_unit_by_unit(scenario, table):
    c, units, order, _ = scenario
    if c.category is ProductCategory.VST:
        c = dataclasses.replace(c, category=ProductCategory.NK)
    suitable = [a for a in (assess(u, c, table, TRANSIT, TODAY) for u in units) if not a.excluded]
    index = indexed(units, order, table)
    slots = np.array([index._slot[a.unit.unit_id] for a in suitable], dtype=np.intp)
    scores = index._scores(slots, c, TODAY, table.weights)
    assert scores.tolist() == pytest.approx([a.score for a in suitable], rel=1e-12, abs=1e-12)


# ---- availability -------------------------------------------------------------------------------


def nk_units(n: int, **changes: Any) -> list[UnitProfile]:
    return [
        unit(f"u{i:02d}", **{"expires_on": TODAY + timedelta(days=100 + i), **changes})
        for i in range(n)
    ]


def found(index: CandidateIndex, limit: int = 100, **kw: Any) -> list[str]:
    return [a.unit.unit_id for a in index.search(criteria(), now=NOW, limit=limit, **kw).ranked]


def held_for(order_id: str, minutes: int) -> Availability:
    return Availability("STORED", order_id, NOW + timedelta(minutes=minutes))


def test_a_unit_held_for_another_order_is_not_offered():
    index = indexed(nk_units(2))
    index.upsert(unit("u00", expires_on=TODAY + timedelta(days=100)), held_for("order-1", 30))
    assert found(index) == ["u01"]
    assert index.search(criteria(), now=NOW, limit=5).considered == 1
    assert found(index, for_order="order-2") == ["u01"]


def test_a_unit_held_for_the_searching_order_is_offered_to_it():
    index = indexed(nk_units(2))
    index.upsert(unit("u00", expires_on=TODAY + timedelta(days=100)), held_for("order-1", 30))
    assert found(index, for_order="order-1") == ["u00", "u01"]


@pytest.mark.parametrize("minutes", [-60, 0], ids=["lapsed", "lapsing now"])
def test_a_unit_whose_hold_has_lapsed_is_offered_to_anyone(minutes):
    index = indexed(nk_units(2))
    index.upsert(unit("u00", expires_on=TODAY + timedelta(days=100)), held_for("order-1", minutes))
    assert found(index) == ["u00", "u01"]


def test_a_released_hold_makes_the_unit_available_again():
    u = unit("u00")
    index = indexed([u])
    index.upsert(u, held_for("order-1", 30))
    assert found(index) == []
    index.upsert(u, STORED)
    assert found(index) == ["u00"]
    assert found(index, for_order="order-1") == ["u00"]


def test_a_reservation_without_a_hold_time_does_not_block():
    index = CandidateIndex(TABLE, TRANSIT)
    index.upsert(unit("u00"), Availability("STORED", "order-1", None))
    assert found(index) == ["u00"]


def test_a_held_unit_of_another_category_is_not_offered_to_its_order():
    index = CandidateIndex(TABLE, TRANSIT)
    index.upsert(unit("u00"), held_for("order-1", 30))
    vst = criteria(category=ProductCategory.VST)
    assert index.search(vst, now=NOW, limit=5, for_order="order-1").ranked == []


@pytest.mark.parametrize("status", ["RESERVED", "PICKED", "QUARANTINED", "DISCARDED", ""])
def test_a_unit_no_longer_stored_leaves_the_index(status):
    index = indexed(nk_units(3))
    index.upsert(unit("u01"), Availability(status, "", None))
    assert len(index) == 2
    assert index.profile("u01") is None
    assert found(index) == ["u00", "u02"]


def test_a_unit_of_no_orderable_category_is_not_indexed():
    index = indexed(nk_units(1))
    index.upsert(unit("u00", product_type="XYZ-1"), STORED)  # re-typed: leaves
    index.upsert(unit("u01", product_type="XYZ-1"), STORED)
    assert len(index) == 0
    assert found(index) == []


def test_exclude_leaves_the_named_units_out():
    index = indexed(nk_units(4))
    result = index.search(criteria(), now=NOW, limit=10, exclude=["u01", "u03", "nope"])
    assert [a.unit.unit_id for a in result.ranked] == ["u00", "u02"]
    assert result.considered == 2


def test_upsert_refreshes_a_unit_in_place():
    index = indexed(nk_units(2))
    index.upsert(unit("u01", viable_nk_cells=1.0, version=2), STORED)
    assert len(index) == 2
    assert index.profile("u01") == unit("u01", viable_nk_cells=1.0, version=2)
    result = index.search(criteria(), now=NOW, limit=10)
    assert [a.unit.unit_id for a in result.ranked] == ["u00"]
    assert result.excluded == {"dose below 5e+06 cells/kg": 1}


def test_the_index_grows_past_its_initial_capacity():
    units = nk_units(50)
    index = indexed(units, capacity=4)
    assert len(index) == 50
    assert all(index.profile(u.unit_id) == u for u in units)
    assert found(index, limit=50) == [u.unit_id for u in units]  # sooner expiry first


def test_removed_slots_are_reused():
    index = indexed(nk_units(4), capacity=4)
    index.remove("u01")
    index.remove("u02")
    index.remove("u02")  # twice: nothing to do
    index.remove("never-added")
    index.upsert(unit("v1"), STORED)
    index.upsert(unit("v2"), STORED)
    assert len(index.alive) == 4  # no growth: the two freed slots were taken
    assert len(index) == 4
    assert index.profile("u01") is None
    assert sorted(found(index)) == ["u00", "u03", "v1", "v2"]
    index.upsert(unit("u01"), STORED)  # a fifth unit: now it grows
    assert len(index) == 5 and len(index.alive) == 16  # doubled, at least 16


def test_an_empty_index_finds_nothing():
    for category in ProductCategory:
        result = CandidateIndex(TABLE, TRANSIT).search(
            criteria(category=category), now=NOW, limit=5
        )
        assert (result.ranked, result.excluded, result.considered) == ([], {}, 0)


def test_an_index_created_with_no_capacity_still_grows():
    index = CandidateIndex(TABLE, TRANSIT, capacity=0)
    index.upsert(unit("u00"), STORED)
    assert len(index) == 1


def test_more_ties_than_the_margin_are_still_broken_by_unit_id():
    units = nk_units(40, expires_on=TODAY + timedelta(days=100))  # 40 identical scores
    for order in (range(40), range(39, -1, -1)):
        index = indexed(units, list(order))
        for limit in (1, 2, 5):
            assert found(index, limit=limit) == [f"u{i:02d}" for i in range(limit)]
