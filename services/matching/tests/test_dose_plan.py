"""Several units for one dose: fewest units, within the dose and CD3+ limits, one site, one
donor preferred, then the ranking's order — checked by examples and against brute force."""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from services.matching.domain.dose_plan import (
    DoseLimits,
    DosePlan,
    donor_key,
    fits,
    plan_dose,
)
from services.matching.domain.ranking import Assessment, rank
from services.matching.tests.builders import DOSE_MAX, DOSE_MIN, TABLE, WEIGHT_KG, assessed
from services.matching.tests.builders import criteria as make_criteria
from services.matching.tests.builders import unit as make_unit

CD3_LIMIT = 1e6
LIMITS = DoseLimits(DOSE_MIN, DOSE_MAX, CD3_LIMIT, WEIGHT_KG)


def part(
    unit_id: str,
    dose: float,
    *,
    donor: str = "D1",
    site: str = "LON",
    cd3_per_kg: float = 1e4,
    excluded: str = "",
) -> Assessment:
    """A suitable unit giving `dose` cells/kg (ranking order is the list order)."""
    u = make_unit(
        unit_id,
        viable_nk_cells=dose * WEIGHT_KG,
        cd3_cells=cd3_per_kg * WEIGHT_KG,
        site_id=site,
        donor_id=donor,
        din=f"G1234260{unit_id[-5:]:0>5}",
    )
    return Assessment(u, excluded, dose, 0.0, (f"dose {dose:.3g} cells/kg within 0–3e+07", "x"), 1)


def ids(plan: DosePlan | None) -> list[str]:
    assert plan is not None
    return [a.unit.unit_id for a in plan.parts]


def test_two_units_below_the_minimum_together_make_the_dose():
    plan = plan_dose([part("u1", 3e6), part("u2", 2.5e6)], LIMITS)
    assert ids(plan) == ["u1", "u2"]
    assert plan is not None and plan.dose_per_kg == 5.5e6 and plan.donors == 1


def test_a_single_unit_that_reaches_the_dose_is_chosen_alone():
    assert ids(plan_dose([part("u1", 3e6), part("u2", 6e6), part("u3", 3e6)], LIMITS)) == ["u2"]


def test_fewest_units_win_over_one_donor():
    pool = [
        part("a1", 2e6, donor="A"),
        part("a2", 2e6, donor="A"),
        part("a3", 2e6, donor="A"),
        part("b1", 3e6, donor="B"),
        part("c1", 2.5e6, donor="C"),
    ]
    plan = plan_dose(pool, LIMITS)
    assert ids(plan) == ["a1", "b1"]  # A's three units would do too, but two are fewer
    assert plan is not None and plan.donors == 2


def test_among_as_few_units_one_donor_wins_over_a_better_ranked_pair_of_donors():
    pool = [
        part("a1", 3e6, donor="A"),
        part("b1", 3e6, donor="B"),
        part("c1", 2.5e6, donor="C"),
        part("c2", 2.5e6, donor="C"),
    ]
    assert ids(plan_dose(pool, LIMITS)) == ["c1", "c2"]


def test_among_one_donor_pairs_the_ranking_order_decides():
    pool = [
        part("b1", 3e6, donor="B"),
        part("a1", 3e6, donor="A"),
        part("a2", 3e6, donor="A"),
        part("b2", 3e6, donor="B"),
    ]
    assert ids(plan_dose(pool, LIMITS)) == ["b1", "b2"]


def test_units_of_unknown_donors_are_one_donor_only_when_they_share_a_din():
    same_din = [
        dataclasses.replace(p, unit=dataclasses.replace(p.unit, donor_id="", din="G123426000777"))
        for p in (part("x1", 3e6), part("x2", 3e6))
    ]
    assert donor_key(same_din[0]) == donor_key(same_din[1]) == "din:G123426000777"
    other = dataclasses.replace(part("x3", 3e6).unit, donor_id="")
    assert donor_key(Assessment(other, "", 3e6, 0.0, (), 1)) != donor_key(same_din[0])


def test_the_summed_dose_may_not_pass_the_maximum():
    limits = dataclasses.replace(LIMITS, dose_max=6e6)
    assert plan_dose([part("u1", 4e6), part("u2", 4e6)], limits) is None
    assert ids(plan_dose([part("u1", 4e6), part("u2", 4e6), part("u3", 1.5e6)], limits)) == [
        "u1",
        "u3",
    ]


def test_the_summed_cd3_may_not_pass_the_limit_of_the_category():
    pool = [
        part("u1", 3e6, cd3_per_kg=6e5),
        part("u2", 3e6, cd3_per_kg=6e5),
        part("u3", 3e6, cd3_per_kg=3e5),
    ]
    assert ids(plan_dose(pool, LIMITS)) == ["u1", "u3"]
    assert plan_dose(pool[:2], LIMITS) is None
    assert ids(plan_dose(pool[:2], dataclasses.replace(LIMITS, cd3_max=None))) == ["u1", "u2"]


def test_units_of_different_sites_never_make_one_dose():
    # Delivery ships an order from the one site that owns all its units.
    pool = [part("u1", 3e6, site="LON"), part("u2", 3e6, site="MAN")]
    assert plan_dose(pool, LIMITS) is None


def test_excluded_units_and_empty_units_take_no_part():
    pool = [part("u1", 3e6, excluded="expires on or before 2026-06-02"), part("u2", 3e6)]
    assert plan_dose(pool, LIMITS) is None
    assert plan_dose([part("u1", 0.0), part("u2", 5e6)], LIMITS) is not None


def test_more_units_than_the_cap_are_not_combined():
    pool = [part(f"u{i}", 1.1e6) for i in range(6)]
    assert plan_dose(pool, LIMITS) is None  # five would be needed
    assert len(ids(plan_dose(pool, LIMITS, max_units=5))) == 5


def test_each_part_is_explained_with_the_combined_dose_not_the_relaxed_minimum():
    # The saga searches with the minimum relaxed so that units below it are candidates; the
    # assessment's own dose line (against that relaxed minimum) is replaced.
    relaxed = make_criteria(dose_min=0.0)
    pool = rank(
        [
            assessed(make_unit(f"u{i}", viable_nk_cells=3e6 * WEIGHT_KG, donor_id="D1"), relaxed)
            for i in (1, 2)
        ]
    )
    limits = DoseLimits(DOSE_MIN, DOSE_MAX, TABLE.cd3_limit_per_kg[relaxed.category], WEIGHT_KG)
    plan = plan_dose(pool, limits)
    assert plan is not None
    reasons = plan.reasons(plan.parts[0], limits)
    assert reasons[0].startswith("one of 2 units making one dose: together 6e+06 cells/kg")
    assert "one donor" in reasons[0]
    assert reasons[1].startswith("this unit: 3e+06 cells/kg")
    assert not any(r.startswith("dose ") for r in reasons)
    assert any(r.startswith("CMV") for r in reasons)  # the rest of the assessment stays


# ---- property: the plan is minimal and the preferred one, against brute force ----------------

doses = st.sampled_from([0.8e6, 1.2e6, 2e6, 2.5e6, 3e6, 4e6, 6e6, 9e6])
cd3s = st.sampled_from([1e4, 2e5, 4e5, 7e5])
pools = st.lists(
    st.tuples(doses, cd3s, st.sampled_from(["A", "B", "C"]), st.sampled_from(["LON", "MAN"])),
    max_size=9,
)
windows = st.tuples(
    st.sampled_from([4e6, 5e6, 7e6, 1e7]), st.sampled_from([1.0, 1.3, 2.0, 4.0])
).map(lambda w: (w[0], w[0] * w[1]))


@settings(max_examples=300, deadline=None)
@given(pools, windows, st.sampled_from([None, 1e6, 6e5]), st.integers(1, 4))
def test_the_plan_has_the_fewest_units_and_is_the_preferred_one(spec, window, cd3_max, cap):
    pool = [
        part(f"u{i:02d}", d, cd3_per_kg=c, donor=donor, site=site)
        for i, (d, c, donor, site) in enumerate(spec)
    ]
    limits = DoseLimits(window[0], window[1], cd3_max, WEIGHT_KG)
    plan = plan_dose(pool, limits, max_units=cap)
    fitting = [
        combo
        for k in range(1, cap + 1)
        for combo in itertools.combinations(range(len(pool)), k)
        if fits((pool[i] for i in combo), limits)
    ]
    if plan is None:
        assert fitting == []
        return
    chosen = tuple(pool.index(a) for a in plan.parts)
    assert fits(plan.parts, limits)
    assert limits.dose_min <= plan.dose_per_kg <= limits.dose_max
    assert cd3_max is None or plan.cd3_per_kg <= cd3_max
    fewest = min(len(c) for c in fitting)
    assert len(chosen) == fewest  # none exists with fewer units
    as_few = [c for c in fitting if len(c) == fewest]
    one_donor = [c for c in as_few if len({donor_key(pool[i]) for i in c}) == 1]
    assert chosen == min(one_donor or as_few)  # one donor first, then ranking order
