"""Donor intake vocabulary: value objects, events (past tense) and commands (imperative)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime


class Consent(enum.StrEnum):
    NONE = "NONE"
    GIVEN = "GIVEN"
    WITHDRAWN = "WITHDRAWN"


class Result(enum.StrEnum):
    NEGATIVE = "NEGATIVE"
    POSITIVE = "POSITIVE"  # reactive / detected


class Eligibility(enum.StrEnum):
    PENDING = "PENDING"
    ELIGIBLE = "ELIGIBLE"
    INELIGIBLE = "INELIGIBLE"


class Cmv(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    NEGATIVE = "NEGATIVE"
    POSITIVE = "POSITIVE"


@dataclass(frozen=True, slots=True)
class Screening:
    marker: str
    result: Result
    specimen_date: date


@dataclass(frozen=True, slots=True)
class LocusTyping:
    locus: str
    alleles: tuple[str, ...]


# ---- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DonorRegistered:
    donor_id: str
    donor_ref: str  # pseudonymous reference; never a name


@dataclass(frozen=True, slots=True)
class ConsentGiven:
    consent_form: str


@dataclass(frozen=True, slots=True)
class ConsentWithdrawn:
    pass


@dataclass(frozen=True, slots=True)
class ScreeningResultRecorded:
    marker: str
    result: Result
    specimen_date: date


@dataclass(frozen=True, slots=True)
class QuestionnaireRecorded:
    passed: bool


@dataclass(frozen=True, slots=True)
class EligibilityDetermined:
    status: Eligibility
    reasons: tuple[str, ...]
    as_of: date
    rules_version: str


@dataclass(frozen=True, slots=True)
class DonorDeferred:
    until: date
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HlaTyped:
    loci: tuple[LocusTyping, ...]
    resolution: str  # "high" when every allele has 2+ fields, else "low"


@dataclass(frozen=True, slots=True)
class KirGenotyped:
    genes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BloodGroupRecorded:
    abo: str
    rh: str


@dataclass(frozen=True, slots=True)
class CmvSerostatusRecorded:
    status: Cmv


@dataclass(frozen=True, slots=True)
class CollectionRecorded:
    din: str
    collected_at: datetime
    volume_ml: float
    total_nucleated_cells: float
    nk_cells: float
    cd3_cells: float
    eligibility: Eligibility
    urgent_physician_request: str  # non-empty only on the urgent-medical-need path


@dataclass(frozen=True, slots=True)
class PositiveResultAfterCollection:
    """A donor already collected from turned positive: the lookback issue acts on this."""

    marker: str
    specimen_date: date
    dins: tuple[str, ...]


DonorEvent = (
    DonorRegistered
    | ConsentGiven
    | ConsentWithdrawn
    | ScreeningResultRecorded
    | QuestionnaireRecorded
    | EligibilityDetermined
    | DonorDeferred
    | HlaTyped
    | KirGenotyped
    | BloodGroupRecorded
    | CmvSerostatusRecorded
    | CollectionRecorded
    | PositiveResultAfterCollection
)

# ---- state ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Donor:
    donor_id: str = ""
    donor_ref: str = ""
    consent: Consent = Consent.NONE
    screening: dict[str, Screening] = field(default_factory=dict)  # latest result per marker
    questionnaire_passed: bool | None = None
    eligibility: Eligibility = Eligibility.PENDING
    eligibility_reasons: tuple[str, ...] = ()
    eligibility_as_of: date | None = None  # the date of the last determination
    ever_positive: tuple[str, ...] = ()  # required markers ever found positive: permanent
    deferred_until: date | None = None
    deferral_reason: str = ""
    hla: tuple[LocusTyping, ...] = ()
    kir: tuple[str, ...] = ()
    abo: str = ""
    rh: str = ""
    cmv: Cmv = Cmv.UNKNOWN
    collections: tuple[str, ...] = ()

    @property
    def registered(self) -> bool:
        return bool(self.donor_id)


# ---- commands -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterDonor:
    donor_id: str
    donor_ref: str


@dataclass(frozen=True, slots=True)
class GiveConsent:
    consent_form: str


@dataclass(frozen=True, slots=True)
class WithdrawConsent:
    pass


@dataclass(frozen=True, slots=True)
class RecordScreeningResult:
    marker: str
    result: Result
    specimen_date: date
    today: date


@dataclass(frozen=True, slots=True)
class RecordQuestionnaire:
    passed: bool


@dataclass(frozen=True, slots=True)
class DetermineEligibility:
    as_of: date  # the (planned) collection date the specimen window is measured from


@dataclass(frozen=True, slots=True)
class DeferDonor:
    until: date
    today: date
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RecordTyping:
    hla: dict[str, tuple[str, ...]]
    kir: tuple[str, ...]
    abo: str
    rh: str
    cmv: Cmv


@dataclass(frozen=True, slots=True)
class RecordCollection:
    din: str  # allocated by the handler from the site's DIN sequence
    collected_at: datetime
    volume_ml: float
    total_nucleated_cells: float
    nk_cells: float
    cd3_cells: float
    urgent_physician_request: str = ""
