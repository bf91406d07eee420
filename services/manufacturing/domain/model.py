"""Manufacturing vocabulary: batch state, events (past tense), commands (imperative)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import date, datetime

from shared.signing import RecordLink, signed_content_hash


class BatchStatus(enum.StrEnum):
    NONE = "NONE"
    IN_PROCESS = "IN_PROCESS"
    RELEASED = "RELEASED"


class Step(enum.StrEnum):
    CD3_DEPLETION = "CD3_DEPLETION"
    CD56_ENRICHMENT = "CD56_ENRICHMENT"
    EXPANSION_DAY = "EXPANSION_DAY"
    HARVEST = "HARVEST"
    FORMULATION = "FORMULATION"
    CRYOPRESERVATION = "CRYOPRESERVATION"


# What a QA batch-release signature may mean (21 CFR 11.50(a)(3)): a fixed vocabulary.
RELEASE_MEANINGS = ("approved", "approved for release", "released for clinical use")

NOT_EVALUATED_LABELS = (
    "NOT EVALUATED FOR INFECTIOUS SUBSTANCES",
    "WARNING: Advise patient of communicable disease risks",
)


@dataclass(frozen=True, slots=True)
class Signature:
    """An e-signature: who (the signed-in person's name and issuer subject), when, what the
    signing means, and the record it belongs to (event id + hash of what was signed)."""

    name: str
    signed_at: datetime
    meaning: str
    subject: str = ""  # empty only in records from before people signed in
    event_id: str = ""
    content_hash: str = ""


@dataclass(frozen=True, slots=True)
class UnitRecord:
    unit_id: str
    din: str
    product_code: str  # ISBT 128, e.g. S1001VA0; older events keep S1001-01
    division: int  # the unit's place 1..N in its batch; its ISBT division ends the product code
    viable_nk_cells: float
    cd3_cells: float
    volume_ml: float
    expires_on: date
    status: str  # RELEASED: ready for storage
    segregated: bool
    labels: tuple[str, ...]
    restricting_allele: str = ""  # VST: the HLA allele the T cells are restricted by


@dataclass(frozen=True, slots=True)
class UnitSpec:
    viable_nk_cells: float
    cd3_cells: float
    volume_ml: float
    restricting_allele: str = ""  # VST only; canonical HLA nomenclature


# ---- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchStarted:
    batch_id: str
    din: str
    donor_id: str
    product_type: str
    spec_version: str
    operator: str


@dataclass(frozen=True, slots=True)
class ProcessStepRecorded:
    step: str
    day: int
    performed_by: str
    performed_at: datetime
    viable_cells: float
    viability_pct: float


@dataclass(frozen=True, slots=True)
class QcResultRecorded:
    test: str
    value: float | None
    text: str
    passed: bool
    tested_at: datetime


@dataclass(frozen=True, slots=True)
class BatchReleased:
    signature: Signature
    donor_eligibility: str
    urgent_physician_request: str
    units: tuple[UnitRecord, ...]

    def sealed(self, link: RecordLink) -> BatchReleased:
        """Links the QA signature to this release record: what was released, on which donor
        eligibility, by whom, when, meaning what."""
        s = self.signature
        signed = {
            "record": "BatchReleased", "name": s.name, "subject": s.subject,
            "signed_at": s.signed_at, "meaning": s.meaning,
            "donor_eligibility": self.donor_eligibility,
            "urgent_physician_request": self.urgent_physician_request,
            "units": [u.unit_id for u in self.units],
        }  # fmt: skip
        return dataclasses.replace(
            self,
            signature=dataclasses.replace(
                s, event_id=link.event_id, content_hash=signed_content_hash(link, signed)
            ),
        )


@dataclass(frozen=True, slots=True)
class SterilityResultRecorded:
    positive: bool
    specimen_date: date


@dataclass(frozen=True, slots=True)
class BatchSterilityFailed:
    """Positive 14-day sterility after release: every unit of the batch is to be recalled."""

    din: str
    unit_ids: tuple[str, ...]


BatchEvent = (
    BatchStarted
    | ProcessStepRecorded
    | QcResultRecorded
    | BatchReleased
    | SterilityResultRecorded
    | BatchSterilityFailed
)

# ---- state ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str = ""
    din: str = ""
    donor_id: str = ""
    product_type: str = ""
    status: BatchStatus = BatchStatus.NONE
    operators: frozenset[str] = frozenset()  # everyone who ran a step (two-person rule)
    steps: tuple[ProcessStepRecorded, ...] = ()
    qc: dict[str, QcResultRecorded] = field(default_factory=dict)  # latest result per test
    units: tuple[UnitRecord, ...] = ()
    sterility_positive: bool | None = None


# ---- commands -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartBatch:
    batch_id: str
    din: str
    donor_id: str  # from the collection read model (the handler looks the DIN up)
    product_type: str
    operator: str


@dataclass(frozen=True, slots=True)
class RecordProcessStep:
    step: Step
    day: int
    performed_by: str
    performed_at: datetime
    viable_cells: float
    viability_pct: float


@dataclass(frozen=True, slots=True)
class RecordQcResult:
    test: str
    value: float | None
    text: str
    tested_at: datetime


@dataclass(frozen=True, slots=True)
class ReleaseBatch:
    signature: Signature
    signer_role: str  # the signing principal's kind; only "qa" may release
    donor_eligibility: str  # current, from the donor read model
    units: tuple[UnitSpec, ...]
    urgent_physician_request: str = ""
    signer_username: str = ""  # the signer's login: the two-person rule compares it too


@dataclass(frozen=True, slots=True)
class RecordSterilityResult:
    positive: bool
    specimen_date: date
