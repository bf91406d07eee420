"""The network inventory in memory, as columns: a search filters and scores every available
unit with vectorised arithmetic, then the domain's `assess` explains (and orders) the best.

The arithmetic mirrors `domain.ranking.assess` term by term (a property test holds them
equal); `assess` stays the reference and produces every score and reason a caller sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import numpy.typing as npt

from services.matching.domain.kir_b_content import b_content
from services.matching.domain.model import Cmv, ProductCategory
from services.matching.domain.ranking import (
    Assessment,
    Classification,
    Criteria,
    Transit,
    UnitProfile,
    abo_antigens,
    assess,
    mask,
    rank,
)

_CATEGORIES = tuple(ProductCategory)
_CMV = {Cmv.UNKNOWN.value: 0, Cmv.NEGATIVE.value: 1, Cmv.POSITIVE.value: 2}
_NOT_HELD = -np.inf
MARGIN = 16  # extra units explained beyond the limit, so ties at the edge are ordered right


@dataclass(frozen=True, slots=True)
class Availability:
    """Storage's view of a unit: only STORED units count; a hold blocks others until it lapses."""

    status: str
    reserved_for: str
    hold_until: datetime | None


@dataclass(frozen=True, slots=True)
class SearchResult:
    ranked: list[Assessment]
    excluded: dict[str, int]  # rule → units of the category it excluded
    considered: int  # available units of the category


class CandidateIndex:
    def __init__(self, table: Classification, transit: Transit, capacity: int = 1024) -> None:
        self.table = table
        self.transit = transit
        self._slot: dict[str, int] = {}
        self._free: list[int] = []
        self._profiles: list[UnitProfile | None] = []
        self._reserved_for: dict[int, str] = {}
        self._sites: list[str] = []
        self._site_index: dict[str, int] = {}
        self._alloc(capacity)

    def _alloc(self, n: int) -> None:
        def grow(old: npt.NDArray | None, dtype: npt.DTypeLike, fill: object) -> npt.NDArray:
            new = np.full(n, fill, dtype=dtype)
            if old is not None:
                new[: len(old)] = old
            return new

        get = self.__dict__.get
        self.alive = grow(get("alive"), np.bool_, False)
        self.category = grow(get("category"), np.int8, -1)
        self.viable = grow(get("viable"), np.float64, 0.0)
        self.cd3 = grow(get("cd3"), np.float64, 0.0)
        self.expires = grow(get("expires"), np.int64, 0)
        self.held_until = grow(get("held_until"), np.float64, _NOT_HELD)
        self.site = grow(get("site"), np.int32, 0)
        self.typed = grow(get("typed"), np.bool_, False)
        self.allo = grow(get("allo"), np.int64, 0)
        self.cmv = grow(get("cmv"), np.int8, 0)
        self.abo = grow(get("abo"), np.int8, -1)
        self.b_points = grow(get("b_points"), np.float64, 0.0)
        self._free.extend(range(n - 1, len(self._profiles) - 1, -1))
        self._profiles.extend([None] * (n - len(self._profiles)))

    def __len__(self) -> int:
        return int(self.alive.sum())

    # ---- updates --------------------------------------------------------------------------

    def upsert(self, unit: UnitProfile, availability: Availability) -> None:
        """Add or refresh a unit; one no longer in stock leaves the index."""
        if availability.status != "STORED":
            self.remove(unit.unit_id)
            return
        category = self.table.category_of(unit.product_type)
        if category is None:
            self.remove(unit.unit_id)
            return
        slot = self._slot.get(unit.unit_id)
        if slot is None:
            if not self._free:
                self._alloc(max(16, len(self._profiles) * 2))
            slot = self._free.pop()
            self._slot[unit.unit_id] = slot
        self._profiles[slot] = unit
        self.alive[slot] = True
        self.category[slot] = _CATEGORIES.index(category)
        self.viable[slot] = unit.viable_nk_cells
        self.cd3[slot] = unit.cd3_cells
        self.expires[slot] = unit.expires_on.toordinal()
        self.site[slot] = self._site(unit.site_id)
        self._classify(slot, unit)
        self.cmv[slot] = _CMV.get(unit.donor_cmv, 0)
        antigens = abo_antigens(unit.donor_abo)
        self.abo[slot] = -1 if antigens is None else antigens
        if availability.reserved_for and availability.hold_until is not None:
            self.held_until[slot] = availability.hold_until.timestamp()
            self._reserved_for[slot] = availability.reserved_for
        else:
            self.held_until[slot] = _NOT_HELD
            self._reserved_for.pop(slot, None)

    def _classify(self, slot: int, unit: UnitProfile) -> None:
        """The unit's columns that depend on the table and its HLA reference."""
        t = self.table
        # KIR-ligand points need the donor's ligands known at allele level (and a reference).
        self.typed[slot] = bool(
            unit.donor_hla
            and unit.donor_kir
            and t.reference is not None
            and t.ligand_typing(unit.donor_hla).known
        )
        self.allo[slot] = mask(t.alloreactive_ligands(unit.donor_hla, unit.donor_kir))
        self.b_points[slot] = (
            t.b_content_points(b_content(unit.donor_kir)) if unit.donor_kir else 0.0
        )

    def use_table(self, table: Classification) -> None:
        """Score with another table (e.g. a newly approved HLA reference) from now on."""
        self.table = table
        for slot, unit in enumerate(self._profiles):
            if unit is not None:
                self._classify(slot, unit)

    def remove(self, unit_id: str) -> None:
        slot = self._slot.pop(unit_id, None)
        if slot is None:
            return
        self.alive[slot] = False
        self._profiles[slot] = None
        self._reserved_for.pop(slot, None)
        self._free.append(slot)

    def _site(self, site_id: str) -> int:
        if site_id not in self._site_index:
            self._site_index[site_id] = len(self._sites)
            self._sites.append(site_id)
        return self._site_index[site_id]

    def profile(self, unit_id: str) -> UnitProfile | None:
        slot = self._slot.get(unit_id)
        return None if slot is None else self._profiles[slot]

    # ---- search ---------------------------------------------------------------------------

    def search(
        self,
        criteria: Criteria,
        *,
        now: datetime,
        limit: int,
        for_order: str = "",
        exclude: Iterable[str] = (),
    ) -> SearchResult:
        """The best `limit` available units for the criteria (a unit held for `for_order`
        counts as available to it), with counts of what each rule excluded."""
        t, w = self.table, self.table.weights
        p = criteria.patient
        category = _CATEGORIES.index(criteria.category)
        available = self.alive & (self.category == category) & (self.held_until <= now.timestamp())
        if for_order:
            for held, order_id in self._reserved_for.items():
                if order_id == for_order and self.alive[held] and self.category[held] == category:
                    available[held] = True
        for unit_id in exclude:
            slot = self._slot.get(unit_id)
            if slot is not None:
                available[slot] = False
        excluded: Counter[str] = Counter()
        considered = int(available.sum())
        dose = self.viable / p.weight_kg
        ok = available.copy()

        def rule(name: str, failing: npt.NDArray[np.bool_]) -> None:
            nonlocal ok
            hit = ok & failing
            n = int(hit.sum())
            if n:
                excluded[name] += n
            ok = ok & ~failing

        rule(f"dose below {criteria.dose_min:g} cells/kg", dose < criteria.dose_min)
        rule(f"dose above {criteria.dose_max:g} cells/kg", dose > criteria.dose_max)
        cd3_limit = t.cd3_limit_per_kg.get(criteria.category)
        if cd3_limit is not None:
            rule(f"CD3+ above {cd3_limit:g} cells/kg", self.cd3 / p.weight_kg > cd3_limit)
        needed_day = max(criteria.needed_on, now.date())
        rule(f"expires before {needed_day.isoformat()}", self.expires < needed_day.toordinal())
        slots = np.nonzero(ok)[0]
        today = now.date()
        if criteria.category is ProductCategory.VST:
            # HLA sharing is per allele set: explained unit by unit (VST stock is small).
            found = [self._assess(int(s), criteria, today) for s in slots]
            for a in found:
                if a.excluded:
                    excluded[a.excluded] += 1
            return SearchResult(rank(found)[:limit], dict(excluded), considered)
        if len(slots) == 0:
            return SearchResult([], dict(excluded), considered)
        score = self._scores(slots, criteria, today, w)
        best = self._shortlist(slots, score, limit + MARGIN)
        found = [self._assess(int(s), criteria, today) for s in best]
        return SearchResult(rank(found)[:limit], dict(excluded), considered)

    def _shortlist(
        self, slots: npt.NDArray[np.intp], score: npt.NDArray[np.float64], k: int
    ) -> npt.NDArray[np.intp]:
        """At least the k best by score, with every unit tied with the k-th that could outrank
        it on the tie-breaks (soonest expiry; unit id is settled by `rank`)."""
        if len(slots) <= k:
            return slots
        kth = np.partition(-score, k - 1)[k - 1]
        better = slots[-score < kth]
        tied = slots[-score == kth]
        room = k - len(better)
        if len(tied) > room:
            expiry = self.expires[tied]
            last = np.partition(expiry, room - 1)[room - 1]
            tied = tied[expiry <= last]  # all of the boundary day: ids decide among them
        return np.concatenate([better, tied])

    def _scores(
        self, slots: npt.NDArray[np.intp], criteria: Criteria, today: date, w: object
    ) -> npt.NDArray[np.float64]:
        t = self.table
        weights = t.weights
        p = criteria.patient
        patient = t.ligand_typing(p.hla_alleles)
        allo = self.allo[slots] & ~mask(patient.ligands)
        scored = self.typed[slots] & (allo != 0) & patient.known
        kir = np.where(scored, weights.kir_alloreactive, 0.0)
        hla = np.zeros(len(slots))
        if p.cmv is Cmv.NEGATIVE:
            cmv_table = np.array(
                [
                    weights.cmv_unknown_donor_for_negative_patient,
                    weights.cmv_negative_match,
                    weights.cmv_positive_donor_for_negative_patient,
                ]
            )
            cmv = cmv_table[self.cmv[slots]]
        else:
            cmv = np.zeros(len(slots))
        patient_abo = abo_antigens(p.abo)
        donor_abo = self.abo[slots]
        if patient_abo is None:
            abo = np.zeros(len(slots))
        else:
            major = (donor_abo & ~patient_abo) != 0
            abo = np.where(
                donor_abo < 0,
                0.0,
                np.where(
                    donor_abo == patient_abo,
                    weights.abo_identical,
                    np.where(major, weights.abo_major_incompatible, weights.abo_minor_incompatible),
                ),
            )
        b = self.b_points[slots]
        hours = np.array(
            [self.transit.hours(s, criteria.hospital_id) for s in self._sites] or [0.0]
        )
        transit = weights.transit_per_hour * hours[self.site[slots]]
        days = self.expires[slots] - today.toordinal()
        expiry = weights.expiry_soonest * np.maximum(0.0, 1.0 - days / t.expiry_horizon_days)
        score: npt.NDArray[np.float64] = kir + hla + cmv + abo + b
        return score + transit + expiry

    def _assess(self, slot: int, criteria: Criteria, today: date) -> Assessment:
        unit = self._profiles[slot]
        assert unit is not None
        return assess(unit, criteria, self.table, self.transit, today)
