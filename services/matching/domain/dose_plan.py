"""Several units for one dose: the fewest suitable units whose summed dose and CD3+ fit."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

from services.matching.domain.ranking import Assessment

MAX_UNITS_PER_DOSE = 4  # beyond this a "dose" is a pooling exercise, not an allocation
_SLACK = 1e-9  # relative: pruning never discards a combination a rounding ulp could admit


@dataclass(frozen=True, slots=True)
class DoseLimits:
    """The order's dose window and the category's CD3+ ceiling, per kg of the patient."""

    dose_min: float
    dose_max: float
    cd3_max: float | None  # None: the category has no CD3+ limit
    weight_kg: float


@dataclass(frozen=True, slots=True)
class DosePlan:
    """The units chosen (in ranking order) and what they make together."""

    parts: tuple[Assessment, ...]
    dose_per_kg: float
    cd3_per_kg: float
    donors: int  # distinct donors among the parts

    def reasons(self, part: Assessment, limits: DoseLimits) -> tuple[str, ...]:
        """The part's own assessment, its dose line replaced by the combined dose."""
        n = len(self.parts)
        cd3 = (
            f"; CD3+ {self.cd3_per_kg:.3g}/kg ≤ {limits.cd3_max:.3g}"
            if limits.cd3_max is not None
            else ""
        )
        donors = "one donor" if self.donors == 1 else f"{self.donors} donors"
        return (
            f"one of {n} units making one dose: together {self.dose_per_kg:.3g} cells/kg within"
            f" {limits.dose_min:.3g}–{limits.dose_max:.3g}{cd3} ({donors}, site"
            f" {part.unit.site_id})",
            f"this unit: {part.dose_per_kg:.3g} cells/kg, CD3+"
            f" {part.unit.cd3_cells / limits.weight_kg:.3g}/kg",
            *(r for r in part.reasons if not r.startswith("dose ")),
        )


def donor_key(a: Assessment) -> str:
    """Who gave the unit: the donor id where the inventory knows it; otherwise its DIN, which
    names one collection (so one donor) — units of unknown donors never count as one donor."""
    return f"donor:{a.unit.donor_id}" if a.unit.donor_id else f"din:{a.unit.din}"


def fits(parts: Iterable[Assessment], limits: DoseLimits) -> bool:
    """Do these units together make the dose, within its maximum and the CD3+ limit?"""
    chosen = list(parts)
    dose = math.fsum(a.dose_per_kg for a in chosen)
    cd3 = math.fsum(a.unit.cd3_cells for a in chosen) / limits.weight_kg
    return (
        limits.dose_min <= dose <= limits.dose_max
        and (limits.cd3_max is None or cd3 <= limits.cd3_max)
        and len({a.unit.site_id for a in chosen}) <= 1
    )


def plan_dose(
    ranked: Sequence[Assessment], limits: DoseLimits, max_units: int = MAX_UNITS_PER_DOSE
) -> DosePlan | None:
    """The fewest units, all of one owning site (one shipment carries the dose), that together
    fit `limits`; among as few, units of one donor first, then the ranking's order (the plan
    holding the best-ranked unit, then the next best, …). `ranked` are units that each pass
    every other rule, best first; None if no combination of up to `max_units` fits."""
    usable = [a for a in ranked if not a.excluded and a.dose_per_kg > 0]
    by_donor = _groups(usable, lambda a: (a.unit.site_id, donor_key(a)))
    by_site = _groups(usable, lambda a: (a.unit.site_id,))
    for k in range(1, max_units + 1):
        for groups in (by_donor, by_site):
            found = [c for g in groups if (c := _first_fitting(g, k, limits)) is not None]
            if found:
                best = min(found)
                parts = tuple(usable[i] for i in best)
                return DosePlan(
                    parts,
                    math.fsum(a.dose_per_kg for a in parts),
                    math.fsum(a.unit.cd3_cells for a in parts) / limits.weight_kg,
                    len({donor_key(a) for a in parts}),
                )
    return None


def _groups(
    usable: Sequence[Assessment], key: Callable[[Assessment], Hashable]
) -> list[list[tuple[int, Assessment]]]:
    """Units (with their ranking positions) sharing a key, each group in ranking order."""
    out: dict[Hashable, list[tuple[int, Assessment]]] = {}
    for i, a in enumerate(usable):
        out.setdefault(key(a), []).append((i, a))
    return list(out.values())


def _first_fitting(
    group: Sequence[tuple[int, Assessment]], k: int, limits: DoseLimits
) -> tuple[int, ...] | None:
    """The first k-combination of the group in ranking (lexicographic) order that fits,
    as ranking positions; depth-first, pruned by what the remaining units can still add."""
    n = len(group)
    if n < k:
        return None
    dose = [a.dose_per_kg for _, a in group]
    cd3 = [a.unit.cd3_cells / limits.weight_kg for _, a in group]
    # most[i][r] / least[i][r]: the largest / smallest dose r units from group[i:] can add.
    most = [[0.0] * (k + 1) for _ in range(n + 1)]
    least = [[math.inf] * (k + 1) for _ in range(n + 1)]
    fewest_cd3 = [[math.inf] * (k + 1) for _ in range(n + 1)]
    for i in range(n, -1, -1):
        least[i][0] = fewest_cd3[i][0] = 0.0
        if i == n:
            most[i][1:] = [-math.inf] * k
            continue
        for r in range(1, k + 1):
            most[i][r] = max(most[i + 1][r], dose[i] + most[i + 1][r - 1])
            least[i][r] = min(least[i + 1][r], dose[i] + least[i + 1][r - 1])
            fewest_cd3[i][r] = min(fewest_cd3[i + 1][r], cd3[i] + fewest_cd3[i + 1][r - 1])
    lo, hi = limits.dose_min * (1 - _SLACK), limits.dose_max * (1 + _SLACK)
    cd3_hi = math.inf if limits.cd3_max is None else limits.cd3_max * (1 + _SLACK)
    chosen: list[int] = []

    def search(start: int, total: float, total_cd3: float) -> bool:
        r = k - len(chosen)
        if r == 0:
            return fits((group[j][1] for j in chosen), limits)
        for i in range(start, n - r + 1):
            d, c = total + dose[i], total_cd3 + cd3[i]
            rest = r - 1
            if (
                d + most[i + 1][rest] < lo
                or d + least[i + 1][rest] > hi
                or c + fewest_cd3[i + 1][rest] > cd3_hi
            ):
                continue
            chosen.append(i)
            if search(i + 1, d, c):
                return True
            chosen.pop()
        return False

    if not search(0, 0.0, 0.0):
        return None
    return tuple(group[j][0] for j in chosen)
