"""Shared builders for the matching unit tests: the real versioned ranking table with a small
hand-written HLA reference, a patient, a unit, criteria — each with defaults that make a
suitable NK match, overridden field by field."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.matching.domain.kir_ligand import HlaReference
from services.matching.domain.model import Cmv, PatientSnapshot, ProductCategory
from services.matching.domain.ranking import Assessment, Criteria, UnitProfile, assess
from services.matching.entrypoints.main import load_tables

# A hand-written stand-in for an IPD-IMGT/HLA release (the real one may not be committed):
# each allele's class as the motif rules give it, with groups that split (C*16, C*03, B*15) and
# groups that agree (C*07 here, A*02), null and questionable alleles, and a renamed name.
FIXTURE_CLASSES = {
    "A*01:01:01:01": "none", "A*01:01:01:02N": "not-expressed", "A*02:01:01:01": "none",
    "A*02:01:01:02L": "none", "A*03:01:01:01": "A3/A11", "A*11:01:01:01": "A3/A11",
    "A*23:01:01:01": "Bw4-80I", "A*24:02:01:01": "Bw4-80I", "A*24:04": "none",
    "A*25:01:01:01": "Bw4-80I", "A*32:01:01:01": "Bw4-80I",
    "B*07:02:01:01": "none", "B*08:01:01:01": "none", "B*15:01:01:01": "none",
    "B*15:13:01": "Bw4-80I", "B*27:05:02:01": "Bw4-80T", "B*27:08": "Bw4-80T",
    "B*44:02:01:01": "Bw4-80T", "B*44:03:01:01": "Bw4-80T", "B*46:01:01:01": "C1",
    "B*73:01:01:01": "C1",
    "C*03:04:01:01": "C1", "C*03:07": "C2", "C*04:01:01:01": "C2", "C*04:09N": "not-expressed",
    "C*05:01:01:01": "C2", "C*07:01:01:01": "C1", "C*07:02:01:01": "C1", "C*07:02:01:17Q": "ambiguous",
    "C*16:01:01:01": "C1", "C*16:02:01:01": "C2", "C*16:04:01": "C1",
}  # fmt: skip
FIXTURE_REFERENCE = HlaReference(
    release="fixture",
    checksums={},
    classes=FIXTURE_CLASSES,
    other_names=frozenset({"DRB1*15:01:01:01", "DQB1*06:02:01:01"}),
    retired={"C*07:99": ("C*07:02:01:01", "renamed C*07:02:01:01 (fixture)")},
    groups={"C*07:02:01G": ("C*07:02:01:01", "C*07:02:01:17Q")},
)
TABLE, TRANSIT = load_tables(reference=FIXTURE_REFERENCE)
W = TABLE.weights

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
TODAY = NOW.date()
WEIGHT_KG = 70.0
DOSE_MIN = 5e6
DOSE_MAX = 3e7

# C1/C1, Bw6/Bw6, no A3/A11: the patient carries only the C1 ligand.
PATIENT_HLA = ("A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*07:01")
# Donor KIR genes that are not B-content genes (so B-content stays 0 by default).
NO_B_KIR = ("KIR2DL1", "KIR2DL3", "KIR3DL1")


def patient(**changes: Any) -> PatientSnapshot:
    base = PatientSnapshot("pt-0001", WEIGHT_KG, PATIENT_HLA, "A", Cmv.NEGATIVE)
    return dataclasses.replace(base, **changes)


def unit(unit_id: str = "unit-1", **changes: Any) -> UnitProfile:
    """An NK unit at LON giving a 1e7 cells/kg dose to a 70 kg patient, expiring in a year."""
    base = UnitProfile(
        unit_id=unit_id,
        din="G123426000001",
        site_id="LON",
        product_type="NK-ALLO",
        viable_nk_cells=1e7 * WEIGHT_KG,
        cd3_cells=1e6,
        expires_on=TODAY + timedelta(days=365),
        donor_hla=PATIENT_HLA,
        donor_kir=NO_B_KIR,
        donor_cmv="NEGATIVE",
        donor_abo="A",
        restricting_allele="",
        version=1,
    )
    return dataclasses.replace(base, **changes)


def criteria(**changes: Any) -> Criteria:
    base = Criteria(
        hospital_id="H1",
        patient=patient(),
        category=ProductCategory.NK,
        dose_min=DOSE_MIN,
        dose_max=DOSE_MAX,
        needed_on=TODAY,
    )
    return dataclasses.replace(base, **changes)


def assessed(u: UnitProfile | None = None, c: Criteria | None = None, today: date = TODAY):
    return assess(u or unit(), c or criteria(), TABLE, TRANSIT, today)


def reason_with(a: Assessment, text: str) -> str:
    """The one reason that mentions `text` (fails if none or several do)."""
    found = [r for r in a.reasons if text in r]
    assert len(found) == 1, f"{text!r} in {a.reasons}"
    return found[0]
