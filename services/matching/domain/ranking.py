"""Which units suit a patient and in what order: dose, CD3+, expiry, KIR-ligand (NK, CAR-NK),
shared HLA (VST), CMV, ABO, KIR B-content, delivery time and expiry. Every factor is explained.

Ligand classes come per allele from an IPD-IMGT/HLA release (`kir_ligand`); the weights and
limits are a versioned table passed in; this module only applies them. `assess` is the
reference: the search index computes the same scores in bulk.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

from services.kernel.hla import LOCI, parse_allele
from services.matching.domain.kir_b_content import UNDETERMINED, BContent, b_content
from services.matching.domain.kir_ligand import (
    A3_A11,
    AMBIGUOUS,
    BW4_80I,
    BW4_80T,
    C1,
    C2,
    CLASS_I_LOCI,
    RULES_VERSION,
    AlleleNameError,
)
from services.matching.domain.model import Cmv, PatientSnapshot, ProductCategory
from shared.errors import InvalidArgument

LIGANDS = ("C1", "C2", "Bw4", "A3/A11")  # bit i of a ligand mask = LIGANDS[i]
# An allele's ligand class → the ligand group its KIR recognises (both Bw4 subtypes: KIR3DL1).
KIR_LIGAND_OF_CLASS = {C1: "C1", C2: "C2", BW4_80I: "Bw4", BW4_80T: "Bw4", A3_A11: "A3/A11"}
NO_REFERENCE = "no-hla-reference"
ABO_GROUPS = ("A", "B", "AB", "O")
MAX_WEIGHT_KG = 300.0
MIN_WEIGHT_KG = 0.3
MAX_DOSE_PER_KG = 1e12


@dataclass(frozen=True, slots=True)
class Weights:
    kir_alloreactive: float
    hla_shared_allele: float
    cmv_negative_match: float
    cmv_positive_donor_for_negative_patient: float
    cmv_unknown_donor_for_negative_patient: float
    abo_identical: float
    abo_minor_incompatible: float
    abo_major_incompatible: float
    kir_b_content_better: float
    kir_b_content_best: float
    transit_per_hour: float
    expiry_soonest: float


class LigandReference(Protocol):
    """An HLA reference release that classifies allele names (see `kir_ligand.HlaReference`)."""

    @property
    def version(self) -> str: ...

    def classify(self, text: str) -> str: ...

    def __hash__(self) -> int: ...  # classifications are cached per reference


@dataclass(frozen=True, slots=True)
class LigandTyping:
    """The KIR ligands an HLA typing carries, or why they are not known."""

    ligands: frozenset[str]  # ligand groups (C1, C2, Bw4, A3/A11)
    unresolved: tuple[str, ...]  # alleles whose ligand is ambiguous at the typed resolution
    unknown: tuple[str, ...]  # alleles the reference does not know

    @property
    def known(self) -> bool:
        return not self.unresolved and not self.unknown


@dataclass(frozen=True)
class Classification:
    """One version of the ranking table (weights, limits, KIR per ligand) with the HLA
    reference release that classifies alleles (None: no KIR-ligand points, said loudly)."""

    rank_version: str
    kir_for_ligand: Mapping[str, frozenset[str]]
    product_prefixes: Mapping[ProductCategory, tuple[str, ...]]
    cd3_limit_per_kg: Mapping[ProductCategory, float]
    vst_min_shared: int
    expiry_horizon_days: int
    weights: Weights
    reference: LigandReference | None = None

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], reference: LigandReference | None = None
    ) -> Classification:
        unknown = set(raw["kir_for_ligand"]) - set(LIGANDS)
        if unknown:
            raise ValueError(f"unknown ligands {sorted(unknown)} in table {raw['version']}")
        return cls(
            rank_version=raw["version"],
            kir_for_ligand={k: frozenset(v) for k, v in raw["kir_for_ligand"].items()},
            product_prefixes={
                ProductCategory(k): tuple(v) for k, v in raw["product_prefixes"].items()
            },
            cd3_limit_per_kg={
                ProductCategory(k): float(v) for k, v in raw["cd3_limit_per_kg"].items()
            },
            vst_min_shared=int(raw["vst_min_shared_alleles"]),
            expiry_horizon_days=int(raw["expiry_horizon_days"]),
            weights=Weights(**{k: float(v) for k, v in raw["weights"].items()}),
            reference=reference,
        )

    def with_reference(self, reference: LigandReference | None) -> Classification:
        return dataclasses.replace(self, reference=reference)

    @property
    def version(self) -> str:
        """What a match records: the reference release, the ligand rules and the ranking table,
        e.g. ipd-imgt-hla-3.58.0+kir-ligand-2+rank-2."""
        release = self.reference.version if self.reference is not None else NO_REFERENCE
        return f"{release}+{RULES_VERSION}+{self.rank_version}"

    def category_of(self, product_type: str) -> ProductCategory | None:
        """The orderable category of a manufacturing product type code (longest prefix)."""
        best: tuple[int, ProductCategory | None] = (0, None)
        for category, prefixes in self.product_prefixes.items():
            for prefix in prefixes:
                if product_type.startswith(prefix) and len(prefix) > best[0]:
                    best = (len(prefix), category)
        return best[1]

    def ligand_class(self, allele: str) -> str:
        """The allele's class (C1, C2, Bw4-80I, Bw4-80T, A3/A11, none, ambiguous, not-expressed)
        in the reference; `unknown` where the reference does not know it or none is loaded."""
        if self.reference is None:
            return "unknown"
        return _classify(self.reference, allele.strip())

    def ligand_typing(self, alleles: Iterable[str]) -> LigandTyping:
        """The KIR ligands of a typing's class I alleles; ambiguous or unknown ones listed."""
        ligands: set[str] = set()
        unresolved: list[str] = []
        unknown: list[str] = []
        for allele in alleles:
            if allele.partition("*")[0].removeprefix("HLA-") not in CLASS_I_LOCI:
                continue
            found = self.ligand_class(allele)
            if found == "unknown":
                unknown.append(allele)
            elif found == AMBIGUOUS:
                unresolved.append(allele)
            elif found in KIR_LIGAND_OF_CLASS:
                ligands.add(KIR_LIGAND_OF_CLASS[found])
        return LigandTyping(frozenset(ligands), tuple(unresolved), tuple(unknown))

    def alloreactive_ligands(self, hla: Iterable[str], kir: Iterable[str]) -> frozenset[str]:
        """The donor's ligands for which the donor also carries the inhibitory KIR: if the
        patient lacks one of these, the donor's NK cells are alloreactive (GvH direction)."""
        genes = set(kir)
        return frozenset(
            lig
            for lig in self.ligand_typing(hla).ligands
            if self.kir_for_ligand.get(lig, frozenset()) & genes
        )

    def b_content_points(self, content: BContent) -> float:
        w = self.weights
        return {"Better": w.kir_b_content_better, "Best": w.kir_b_content_best}.get(
            content.group, 0.0
        )

    def search_notes(self, category: ProductCategory) -> list[str]:
        """What holds for a whole search of the category (KIR ligands count for NK products)."""
        if self.reference is None and category is not ProductCategory.VST:
            return [
                "KIR-ligand points are off: no HLA reference release is configured at this site"
                " (CELLBANK_HLA_REFERENCE)"
            ]
        return []

    def refuse_retired(self, alleles: Iterable[str], field: str) -> None:
        """InvalidArgument for a name the reference has retired (deleted or renamed), naming
        the current name; names it does not know at all are allowed (scored without ligand)."""
        if self.reference is None:
            return
        for i, allele in enumerate(alleles):
            try:
                self.reference.classify(allele)
            except AlleleNameError as exc:
                if exc.retired:
                    raise InvalidArgument(f"{field}[{i}]", str(exc)) from None


@lru_cache(maxsize=65536)  # an index refresh classifies every donor's alleles again
def _classify(reference: LigandReference, allele: str) -> str:
    try:
        return reference.classify(allele)
    except AlleleNameError:
        return "unknown"


def mask(ligands: Iterable[str]) -> int:
    return sum(1 << LIGANDS.index(x) for x in set(ligands))


def two_field(allele: str) -> str:
    """A*02:01:01:02N → A*02:01N: two fields, keeping an expression suffix (N, L, S, Q …)."""
    locus, _, rest = allele.partition("*")
    suffix = rest[-1] if rest and rest[-1].isalpha() else ""
    fields = rest.removesuffix(suffix).split(":")[:2]
    return f"{locus}*{':'.join(fields)}{suffix}"


def abo_antigens(abo: str) -> int | None:
    """A = 1, B = 2, AB = 3, O = 0; None when unknown."""
    return {"A": 1, "B": 2, "AB": 3, "O": 0}.get(abo)


@dataclass(frozen=True, slots=True)
class Transit:
    """Estimated courier hours from a bank site to a hospital (operational data)."""

    default_hours: float
    routes: Mapping[str, Mapping[str, float]]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Transit:
        routes = {s: {h: float(v) for h, v in r.items()} for s, r in raw["routes"].items()}
        return cls(float(raw["default_hours"]), routes)

    def hours(self, site_id: str, hospital_id: str) -> float:
        return self.routes.get(site_id, {}).get(hospital_id, self.default_hours)


@dataclass(frozen=True, slots=True)
class UnitProfile:
    """An available unit of the network inventory with its donor's facts."""

    unit_id: str
    din: str
    site_id: str
    product_type: str  # manufacturing product type code, e.g. NK-ALLO
    viable_nk_cells: float
    cd3_cells: float
    expires_on: date
    donor_hla: tuple[str, ...]
    donor_kir: tuple[str, ...]
    donor_cmv: str  # NEGATIVE | POSITIVE | UNKNOWN
    donor_abo: str
    restricting_allele: str
    version: int
    donor_id: str = ""  # the donor (several units of one dose prefer one donor); "" = unknown


@dataclass(frozen=True, slots=True)
class Criteria:
    hospital_id: str
    patient: PatientSnapshot
    category: ProductCategory
    dose_min: float
    dose_max: float
    needed_on: date  # units must still be usable on this day (an expiry date ends at midnight)


@dataclass(frozen=True, slots=True)
class Assessment:
    unit: UnitProfile
    excluded: str  # "" = suitable; else the rule that excludes it (aggregated for rejections)
    dose_per_kg: float
    score: float
    reasons: tuple[str, ...]
    transit_hours: float


# ---- input rules ------------------------------------------------------------------------------


def validate_patient(patient: PatientSnapshot, field: str = "patient") -> PatientSnapshot:
    """Checks every patient field; returns the profile with canonical allele names."""
    ref = patient.patient_ref.strip()
    if not ref:
        raise InvalidArgument(f"{field}.patient_ref", "is required (the hospital's reference)")
    if len(ref) > 64 or not ref.isprintable():
        raise InvalidArgument(f"{field}.patient_ref", "at most 64 printable characters")
    w = patient.weight_kg
    if not math.isfinite(w) or w <= 0:
        raise InvalidArgument(f"{field}.weight_kg", "must be a positive number of kilograms")
    if not MIN_WEIGHT_KG <= w <= MAX_WEIGHT_KG:
        raise InvalidArgument(
            f"{field}.weight_kg", f"{w:g} kg is outside {MIN_WEIGHT_KG:g}–{MAX_WEIGHT_KG:g} kg"
        )
    if len(patient.hla_alleles) > 2 * len(LOCI):
        raise InvalidArgument(f"{field}.hla_alleles", f"at most {2 * len(LOCI)} alleles")
    alleles = tuple(
        parse_allele(a, field=f"{field}.hla_alleles[{i}]").name
        for i, a in enumerate(patient.hla_alleles)
    )
    per_locus = {locus: sum(a.startswith(locus + "*") for a in alleles) for locus in LOCI}
    missing = [locus for locus in ("A", "B", "C") if per_locus[locus] == 0]
    if missing:
        raise InvalidArgument(
            f"{field}.hla_alleles",
            f"HLA-A, -B and -C typing is required for matching (missing {', '.join(missing)})",
        )
    crowded = [locus for locus, n in per_locus.items() if n > 2]
    if crowded:
        raise InvalidArgument(f"{field}.hla_alleles", f"more than two alleles at {crowded[0]}")
    abo = patient.abo.strip().upper()
    if abo and abo not in ABO_GROUPS:
        raise InvalidArgument(f"{field}.abo", f"{patient.abo!r} is not one of A, B, AB, O")
    return PatientSnapshot(ref, w, alleles, abo, patient.cmv)


def validate_dose(dose_min: float, dose_max: float) -> None:
    for name, value in (("dose_cells_per_kg_min", dose_min), ("dose_cells_per_kg_max", dose_max)):
        if not math.isfinite(value) or value <= 0:
            raise InvalidArgument(name, "must be a positive number of cells per kg")
        if value > MAX_DOSE_PER_KG:
            raise InvalidArgument(name, f"{value:g} cells/kg is beyond any cell product")
    if dose_min > dose_max:
        raise InvalidArgument(
            "dose_cells_per_kg_min", f"{dose_min:g} is above dose_cells_per_kg_max {dose_max:g}"
        )


def validate_needed_by(moment: datetime, now: datetime) -> datetime:
    """When the units are needed: not in the past (5 minutes of clock skew allowed), not absurdly
    far ahead."""
    if moment < now - timedelta(minutes=5):
        raise InvalidArgument("needed_by", f"{moment.isoformat()} is in the past")
    if moment > now + timedelta(days=3650):
        raise InvalidArgument("needed_by", "more than ten years ahead")
    return moment


# ---- the assessment ---------------------------------------------------------------------------


def assess(
    unit: UnitProfile, criteria: Criteria, table: Classification, transit: Transit, today: date
) -> Assessment:
    """Is the unit suitable for the patient, and how good a match (score, every factor)?"""
    patient = criteria.patient
    dose = unit.viable_nk_cells / patient.weight_kg
    hours = transit.hours(unit.site_id, criteria.hospital_id)

    def out(excluded: str, score: float = 0.0, reasons: Sequence[str] = ()) -> Assessment:
        return Assessment(unit, excluded, dose, score, tuple(reasons), hours)

    if table.category_of(unit.product_type) is not criteria.category:
        return out(f"not a {criteria.category.value} product")
    if dose < criteria.dose_min:
        return out(f"dose below {criteria.dose_min:g} cells/kg")
    if dose > criteria.dose_max:
        return out(f"dose above {criteria.dose_max:g} cells/kg")
    cd3_limit = table.cd3_limit_per_kg.get(criteria.category)
    cd3 = unit.cd3_cells / patient.weight_kg
    if cd3_limit is not None and cd3 > cd3_limit:
        return out(f"CD3+ above {cd3_limit:g} cells/kg")
    needed = max(criteria.needed_on, today)
    if unit.expires_on < needed:  # expiring on the day needed: usable until that day ends
        return out(f"expires before {needed.isoformat()}")
    w = table.weights
    reasons = [
        f"dose {dose:.3g} cells/kg within {criteria.dose_min:.3g}–{criteria.dose_max:.3g}"
        + (f"; CD3+ {cd3:.3g}/kg ≤ {cd3_limit:.3g}" if cd3_limit is not None else "")
    ]
    kir_points = hla_points = 0.0
    if criteria.category in (ProductCategory.NK, ProductCategory.CAR_NK):
        kir_points, why = _kir(unit, patient, table)
        reasons.append(why)
    else:
        shared = sorted({two_field(a) for a in patient.hla_alleles} & _donor_two_field(unit))
        restricting = two_field(unit.restricting_allele) if unit.restricting_allele else ""
        if not restricting:
            return out("restricting HLA allele not recorded")
        if restricting not in shared:
            return out(f"restricting allele {restricting} not shared")
        if len(shared) < table.vst_min_shared:
            return out(f"fewer than {table.vst_min_shared} shared HLA alleles")
        hla_points = w.hla_shared_allele * len(shared)
        reasons.append(
            f"HLA: {len(shared)} shared ({', '.join(shared)}), restricting {restricting}"
            f" ({hla_points:+g})"
        )
    cmv_points, why = _cmv(unit.donor_cmv, patient.cmv, w)
    reasons.append(why)
    abo_points, why = _abo(unit.donor_abo, patient.abo, w)
    reasons.append(why)
    b_points = 0.0
    if criteria.category in (ProductCategory.NK, ProductCategory.CAR_NK):
        b_points, why = _b_content(unit, table)
        reasons.append(why)
    transit_points = w.transit_per_hour * hours
    reasons.append(f"delivery ≈ {hours:g} h from {unit.site_id} ({transit_points:+.1f})")
    days = (unit.expires_on - today).days
    expiry_points = w.expiry_soonest * max(0.0, 1.0 - days / table.expiry_horizon_days)
    reasons.append(f"expires {unit.expires_on.isoformat()}, in {days} days ({expiry_points:+.2f})")
    score = kir_points + hla_points + cmv_points + abo_points + b_points
    score = score + transit_points + expiry_points
    return out("", score, reasons)


def _donor_two_field(unit: UnitProfile) -> set[str]:
    return {two_field(a) for a in unit.donor_hla}


def _kir(unit: UnitProfile, patient: PatientSnapshot, table: Classification) -> tuple[float, str]:
    if table.reference is None:
        return 0.0, (
            "KIR-ligand not scored: no HLA reference release is configured"
            " (CELLBANK_HLA_REFERENCE) (+0)"
        )
    if not unit.donor_hla or not unit.donor_kir:
        return 0.0, "KIR-ligand not assessed: donor HLA or KIR not typed (+0)"
    patient_typing = table.ligand_typing(patient.hla_alleles)
    donor_typing = table.ligand_typing(unit.donor_hla)
    unsure = _unsure("patient", patient_typing) + _unsure("donor", donor_typing)
    if unsure:
        return 0.0, f"KIR-ligand not scored: {'; '.join(unsure)} (+0)"
    patient_ligands = patient_typing.ligands
    mismatched = donor_typing.ligands - patient_ligands
    alloreactive = table.alloreactive_ligands(unit.donor_hla, unit.donor_kir) - patient_ligands
    if alloreactive:
        detail = ", ".join(
            f"{lig} (donor {'/'.join(sorted(table.kir_for_ligand[lig] & set(unit.donor_kir)))})"
            for lig in sorted(alloreactive)
        )
        points = table.weights.kir_alloreactive
        return (
            points,
            f"KIR-ligand GvH mismatch, alloreactive: patient lacks {detail} ({points:+g})",
        )
    if mismatched:
        return 0.0, (
            f"KIR-ligand mismatch ({', '.join(sorted(mismatched))}) but donor lacks the"
            f" matching KIR: not alloreactive (+0)"
        )
    return 0.0, "no KIR-ligand mismatch: patient carries every donor ligand (+0)"


def _unsure(who: str, typing: LigandTyping) -> list[str]:
    out = []
    if typing.unresolved:
        out.append(
            f"{who} {', '.join(typing.unresolved)} needs allele-level typing"
            " (ligand ambiguous at this resolution)"
        )
    if typing.unknown:
        out.append(f"{who} {', '.join(typing.unknown)} not in the HLA reference release")
    return out


def _b_content(unit: UnitProfile, table: Classification) -> tuple[float, str]:
    if not unit.donor_kir:
        return 0.0, "donor KIR B-content: KIR not typed (+0)"
    content = b_content(unit.donor_kir)
    points = table.b_content_points(content)
    if content.group == UNDETERMINED:
        return 0.0, (
            f"donor KIR B-content undetermined: the genotype can't tell Cen/Tel"
            f" ({content.describe()}) (+0)"
        )
    return points, f"donor KIR B-content {content.group} ({content.describe()}) ({points:+g})"


def _cmv(donor: str, patient: Cmv, w: Weights) -> tuple[float, str]:
    if patient is not Cmv.NEGATIVE:
        return 0.0, f"CMV: patient {patient.value.lower()}, no donor preference (+0)"
    if donor == Cmv.NEGATIVE.value:
        return (
            w.cmv_negative_match,
            f"CMV-negative donor for a CMV-negative patient ({w.cmv_negative_match:+g})",
        )
    if donor == Cmv.POSITIVE.value:
        points = w.cmv_positive_donor_for_negative_patient
        return points, f"CMV-positive donor for a CMV-negative patient ({points:+g})"
    points = w.cmv_unknown_donor_for_negative_patient
    return points, f"donor CMV status unknown, patient CMV-negative ({points:+g})"


def _abo(donor: str, patient: str, w: Weights) -> tuple[float, str]:
    d, p = abo_antigens(donor), abo_antigens(patient)
    if d is None or p is None:
        return 0.0, f"ABO not assessed (donor {donor or '?'}, patient {patient or '?'}) (+0)"
    if d == p:
        return w.abo_identical, f"ABO identical ({donor}) ({w.abo_identical:+g})"
    if d & ~p:
        points = w.abo_major_incompatible
        return points, f"ABO major incompatibility (donor {donor}, patient {patient}) ({points:+g})"
    points = w.abo_minor_incompatible
    return points, f"ABO minor incompatibility (donor {donor}, patient {patient}) ({points:+g})"


def rank(assessments: Iterable[Assessment]) -> list[Assessment]:
    """Suitable units best first: score, then the soonest expiry, then the unit id."""
    suitable = [a for a in assessments if not a.excluded]
    return sorted(suitable, key=lambda a: (-a.score, a.unit.expires_on, a.unit.unit_id))


def rejection_reason(criteria: Criteria, excluded: Mapping[str, int], tried: int) -> str:
    """Why no unit could be allocated, in words a clinician understands."""
    what = f"{criteria.category.value} unit"
    dose = f"{criteria.dose_min:.3g}–{criteria.dose_max:.3g} cells/kg for {criteria.patient.weight_kg:g} kg"
    if tried:
        return (
            f"no {what} could be reserved: the {tried} suitable unit(s) ({dose}) were taken by"
            " other orders or changed at their site meanwhile"
        )
    if not excluded:
        return f"no {what} is available in the network inventory"
    counts = "; ".join(f"{rule}: {n}" for rule, n in sorted(excluded.items(), key=lambda x: -x[1]))
    return f"no suitable {what} in the network for a dose of {dose} (units excluded — {counts})"


def needed_on(needed_by: datetime | None, now: datetime) -> date:
    """The day a unit must still be usable on: the order's date, never a day already past."""
    return max(needed_by or now, now).date()
