"""The donor aggregate: decide(state, command) -> events and evolve(state, event) -> state."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

from services.donor_intake.domain.eligibility import EligibilityRules, determine_eligibility
from services.donor_intake.domain.model import (
    BloodGroupRecorded,
    CmvSerostatusRecorded,
    CollectionRecorded,
    Consent,
    ConsentGiven,
    ConsentWithdrawn,
    DeferDonor,
    DetermineEligibility,
    Donor,
    DonorDeferred,
    DonorEvent,
    DonorRegistered,
    Eligibility,
    EligibilityDetermined,
    GiveConsent,
    HlaTyped,
    KirGenotyped,
    LocusTyping,
    PositiveResultAfterCollection,
    QuestionnaireRecorded,
    RecordCollection,
    RecordQuestionnaire,
    RecordScreeningResult,
    RecordTyping,
    RegisterDonor,
    Result,
    Screening,
    ScreeningResultRecorded,
    WithdrawConsent,
)
from services.kernel.hla import parse_typing
from services.kernel.isbt128 import validate_din
from shared.errors import InvalidArgument, NotFound, PreconditionFailed

DONOR_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{3,63}$")
KIR_GENES = frozenset(
    {"KIR2DL1", "KIR2DL2", "KIR2DL3", "KIR2DL4", "KIR2DL5", "KIR2DL5A", "KIR2DL5B", "KIR2DS1",
     "KIR2DS2", "KIR2DS3", "KIR2DS4", "KIR2DS5", "KIR3DL1", "KIR3DL2", "KIR3DL3", "KIR3DS1",
     "KIR2DP1", "KIR3DP1"}
)  # fmt: skip
ABO = frozenset({"A", "B", "AB", "O"})
RH = frozenset({"POS", "NEG"})

Command = (
    RegisterDonor
    | GiveConsent
    | WithdrawConsent
    | RecordScreeningResult
    | RecordQuestionnaire
    | DetermineEligibility
    | DeferDonor
    | RecordTyping
    | RecordCollection
)


def decide(state: Donor, command: Command, rules: EligibilityRules) -> Sequence[DonorEvent]:
    """The events a command causes, or a typed refusal (nothing is written on refusal)."""
    if isinstance(command, RegisterDonor):
        return register(state, command)
    if not state.registered:
        raise NotFound("donor is not registered")
    match command:
        case GiveConsent(form):
            if not form.strip():
                raise InvalidArgument("consent_form", "name the consent form and version signed")
            return [] if state.consent is Consent.GIVEN else [ConsentGiven(form)]
        case WithdrawConsent():
            if state.consent is not Consent.GIVEN:
                raise PreconditionFailed("consent is not given", "nothing to withdraw")
            return with_redetermination(state, [ConsentWithdrawn()], rules)
        case RecordScreeningResult():
            return record_screening(state, command, rules)
        case RecordQuestionnaire(passed):
            return with_redetermination(state, [QuestionnaireRecorded(passed)], rules)
        case DetermineEligibility(as_of):
            status, reasons = determine_eligibility(state, as_of, rules)
            return [EligibilityDetermined(status, reasons, as_of, rules.version)]
        case DeferDonor(until, today, reason):
            if until <= today:
                raise InvalidArgument("until", "a deferral ends after today")
            deferred = evolve(state, DonorDeferred(until, reason))
            status, reasons = determine_eligibility(deferred, today, rules)
            return [
                DonorDeferred(until, reason),
                EligibilityDetermined(status, reasons, today, rules.version),
            ]
        case RecordTyping():
            return record_typing(command)
        case RecordCollection():
            return record_collection(state, command, rules)
    raise TypeError(f"unknown command {command!r}")


def register(state: Donor, command: RegisterDonor) -> list[DonorEvent]:
    if state.registered:
        raise PreconditionFailed("donor already registered", command.donor_id)
    if not DONOR_REF.match(command.donor_ref):
        raise InvalidArgument(
            "donor_ref", "a pseudonymous reference: 4–64 letters, digits or '-', no names or spaces"
        )
    return [DonorRegistered(command.donor_id, command.donor_ref)]


def with_redetermination(
    state: Donor, events: list[DonorEvent], rules: EligibilityRules
) -> list[DonorEvent]:
    """A change that can only lower eligibility re-determines it as of the last determination,
    so a stored ELIGIBLE never outlives withdrawn consent or a failed questionnaire."""
    if state.eligibility_as_of is None:
        return events
    after = state
    for event in events:
        after = evolve(after, event)
    status, reasons = determine_eligibility(after, state.eligibility_as_of, rules)
    if (status, reasons) == (state.eligibility, state.eligibility_reasons):
        return events
    return [*events, EligibilityDetermined(status, reasons, state.eligibility_as_of, rules.version)]


def record_screening(
    state: Donor, command: RecordScreeningResult, rules: EligibilityRules
) -> list[DonorEvent]:
    if command.marker not in rules.known_markers:
        raise InvalidArgument(
            "marker", f"unknown marker; expected one of {', '.join(rules.known_markers)}"
        )
    if command.specimen_date > command.today:
        raise InvalidArgument("specimen_date", "cannot be in the future")
    events: list[DonorEvent] = [
        ScreeningResultRecorded(command.marker, command.result, command.specimen_date)
    ]
    disqualifying = command.result is Result.POSITIVE and command.marker in rules.required_markers
    if disqualifying:
        after = evolve(state, events[0])
        status, reasons = determine_eligibility(after, command.today, rules)
        events.append(EligibilityDetermined(status, reasons, command.today, rules.version))
        if state.collections:
            events.append(
                PositiveResultAfterCollection(
                    command.marker, command.specimen_date, state.collections
                )
            )
    return events


def record_typing(command: RecordTyping) -> list[DonorEvent]:
    typed = parse_typing(command.hla)
    unknown = sorted(set(command.kir) - KIR_GENES)
    if unknown:
        raise InvalidArgument("kir", f"unknown KIR genes: {', '.join(unknown)}")
    if command.abo not in ABO:
        raise InvalidArgument("abo", "must be A, B, AB or O")
    if command.rh not in RH:
        raise InvalidArgument("rh", "must be POS or NEG")
    loci = tuple(
        LocusTyping(locus, tuple(a.name for a in alleles)) for locus, alleles in typed.items()
    )
    high = all(a.resolution == "high" for alleles in typed.values() for a in alleles)
    return [
        HlaTyped(loci, "high" if high else "low"),
        KirGenotyped(tuple(sorted(set(command.kir)))),
        BloodGroupRecorded(command.abo, command.rh),
        CmvSerostatusRecorded(command.cmv),
    ]


def record_collection(
    state: Donor, command: RecordCollection, rules: EligibilityRules
) -> list[DonorEvent]:
    validate_din(command.din)
    for name in ("volume_ml", "total_nucleated_cells", "nk_cells", "cd3_cells"):
        value = getattr(command, name)
        # NaN and infinity slip past `< 0`; a double on the wire can carry either
        if not math.isfinite(value) or value < 0 or (name == "volume_ml" and value == 0):
            raise InvalidArgument(
                name,
                "must be a positive number" if name == "volume_ml" else "must be a number >= 0",
            )
    if command.nk_cells + command.cd3_cells > command.total_nucleated_cells:
        raise InvalidArgument("nk_cells", "NK plus CD3+ cells exceed the total nucleated cells")
    if state.consent is not Consent.GIVEN:
        raise PreconditionFailed(
            "consent required for collection", f"consent is {state.consent.value}"
        )
    if command.din in state.collections:
        raise PreconditionFailed("DIN already used", command.din)
    status, reasons = determine_eligibility(state, command.collected_at.date(), rules)
    urgent = command.urgent_physician_request.strip()
    if status is not Eligibility.ELIGIBLE and not urgent:
        raise PreconditionFailed(
            "donor not eligible for collection", "; ".join(reasons) or status.value
        )
    if urgent and state.deferred_until and command.collected_at.date() < state.deferred_until:
        raise PreconditionFailed("donor deferred", f"until {state.deferred_until.isoformat()}")
    return [
        CollectionRecorded(
            din=command.din,
            collected_at=command.collected_at,
            volume_ml=command.volume_ml,
            total_nucleated_cells=command.total_nucleated_cells,
            nk_cells=command.nk_cells,
            cd3_cells=command.cd3_cells,
            eligibility=status,
            urgent_physician_request=urgent if status is not Eligibility.ELIGIBLE else "",
        )
    ]


def evolve(state: Donor, event: DonorEvent) -> Donor:
    """Apply one event; total over every event type (replay must never fail)."""
    replace = dataclasses.replace
    match event:
        case DonorRegistered(donor_id, donor_ref):
            return replace(state, donor_id=donor_id, donor_ref=donor_ref)
        case ConsentGiven():
            return replace(state, consent=Consent.GIVEN)
        case ConsentWithdrawn():
            return replace(state, consent=Consent.WITHDRAWN)
        case ScreeningResultRecorded(marker, result, specimen_date):
            screening = {**state.screening, marker: Screening(marker, result, specimen_date)}
            newly_positive = result is Result.POSITIVE and marker not in state.ever_positive
            ever_positive = (
                (*state.ever_positive, marker) if newly_positive else state.ever_positive
            )
            return replace(state, screening=screening, ever_positive=ever_positive)
        case QuestionnaireRecorded(passed):
            return replace(state, questionnaire_passed=passed)
        case EligibilityDetermined(status, reasons, as_of):
            return replace(
                state, eligibility=status, eligibility_reasons=reasons, eligibility_as_of=as_of
            )
        case DonorDeferred(until, reason):
            return replace(state, deferred_until=until, deferral_reason=reason)
        case HlaTyped(loci):
            return replace(state, hla=loci)
        case KirGenotyped(genes):
            return replace(state, kir=genes)
        case BloodGroupRecorded(abo, rh):
            return replace(state, abo=abo, rh=rh)
        case CmvSerostatusRecorded(status):
            return replace(state, cmv=status)
        case CollectionRecorded(din):
            return replace(state, collections=(*state.collections, din))
        case PositiveResultAfterCollection():
            return state
    raise TypeError(f"unknown event {event!r}")
