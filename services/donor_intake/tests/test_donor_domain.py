"""Donor aggregate and eligibility: given events → when command → then events or refusal."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta

import pytest

from services.donor_intake.domain import din_sequence
from services.donor_intake.domain.donor import Command, decide, evolve
from services.donor_intake.domain.eligibility import (
    DEFAULT_MARKERS,
    EligibilityRules,
    determine_eligibility,
)
from services.donor_intake.domain.model import (
    BloodGroupRecorded,
    Cmv,
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
    ScreeningResultRecorded,
    WithdrawConsent,
)
from services.kernel.isbt128 import validate_din
from shared.errors import InvalidArgument, NotFound, PreconditionFailed

RULES = EligibilityRules()
TODAY = date(2026, 3, 2)
COLLECTED_AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DIN = "G123426000001"
HLA = {
    "A": ("A*02:01", "A*24:02"),
    "B": ("B*07:02", "B*44:02"),
    "C": ("C*07:02", "C*05:01"),
    "DRB1": ("DRB1*15:01", "DRB1*04:01"),
    "DQB1": ("DQB1*06:02", "DQB1*03:02"),
}
REGISTERED: tuple[DonorEvent, ...] = (DonorRegistered("donor-1", "DR-2026-0001"),)
CONSENTED = (*REGISTERED, ConsentGiven("CF-NK v3"))
SCREENED = (
    *CONSENTED,
    QuestionnaireRecorded(True),
    *(
        ScreeningResultRecorded(m, Result.NEGATIVE, TODAY - timedelta(days=2))
        for m in (*DEFAULT_MARKERS, "CMV")
    ),
)


def given(*events: DonorEvent) -> Donor:
    return functools.reduce(evolve, events, Donor())


def when(events: tuple[DonorEvent, ...], command: Command, rules: EligibilityRules = RULES):
    return list(decide(given(*events), command, rules))


def screening(marker: str, result: Result = Result.NEGATIVE, days_ago: int = 2):
    specimen = TODAY - timedelta(days=days_ago)
    return RecordScreeningResult(marker, result, specimen, TODAY)


def collection(din: str = DIN, urgent: str = "", **counts: float) -> RecordCollection:
    values = {
        "volume_ml": 250.0,
        "total_nucleated_cells": 1e10,
        "nk_cells": 1e9,
        "cd3_cells": 5e9,
        **counts,
    }
    return RecordCollection(din, COLLECTED_AT, urgent_physician_request=urgent, **values)


def typing(**changes) -> RecordTyping:
    values = {
        "hla": HLA,
        "kir": ("KIR2DL1", "KIR3DL1"),
        "abo": "O",
        "rh": "NEG",
        "cmv": Cmv.NEGATIVE,
    }
    return RecordTyping(**{**values, **changes})


def eligibility(events: tuple[DonorEvent, ...], as_of: date = TODAY, rules=RULES):
    return determine_eligibility(given(*events), as_of, rules)


# ---- registration ---------------------------------------------------------------------------


def test_register_records_pseudonymous_reference():
    assert when((), RegisterDonor("donor-1", "DR-2026-0001")) == [
        DonorRegistered("donor-1", "DR-2026-0001")
    ]


@pytest.mark.parametrize("ref", ["Jane Doe", "abc", "-abc1", "x" * 65, "DR_0001", ""])
def test_register_refuses_reference_that_is_not_pseudonymous(ref):
    with pytest.raises(InvalidArgument) as refused:
        when((), RegisterDonor("donor-1", ref))
    assert refused.value.field == "donor_ref"


def test_register_twice_refused():
    with pytest.raises(PreconditionFailed, match="already registered"):
        when(REGISTERED, RegisterDonor("donor-1", "DR-2026-0002"))


def test_commands_for_unregistered_donor_are_not_found():
    with pytest.raises(NotFound):
        when((), GiveConsent("CF-NK v3"))


# ---- consent --------------------------------------------------------------------------------


def test_consent_records_the_form_signed():
    assert when(REGISTERED, GiveConsent("CF-NK v3")) == [ConsentGiven("CF-NK v3")]


def test_consent_requires_the_form_name():
    with pytest.raises(InvalidArgument) as refused:
        when(REGISTERED, GiveConsent("  "))
    assert refused.value.field == "consent_form"


def test_consent_given_again_records_nothing():
    assert when(CONSENTED, GiveConsent("CF-NK v3")) == []


def test_consent_can_be_given_again_after_withdrawal():
    assert when((*CONSENTED, ConsentWithdrawn()), GiveConsent("CF-NK v4")) == [
        ConsentGiven("CF-NK v4")
    ]


def test_withdrawal_records_consent_withdrawn():
    assert when(CONSENTED, WithdrawConsent()) == [ConsentWithdrawn()]
    assert given(*CONSENTED, ConsentWithdrawn()).consent is Consent.WITHDRAWN


def test_withdrawal_without_consent_refused():
    with pytest.raises(PreconditionFailed, match="consent is not given"):
        when(REGISTERED, WithdrawConsent())


def test_withdrawal_blocks_new_collections():
    with pytest.raises(PreconditionFailed, match="consent required for collection"):
        when((*SCREENED, ConsentWithdrawn()), collection())


def test_withdrawal_blocks_collection_even_on_urgent_request():
    with pytest.raises(PreconditionFailed, match="consent required"):
        when((*SCREENED, ConsentWithdrawn()), collection(urgent="Dr Roe: relapse"))


def test_withdrawal_keeps_existing_collections_traceable():
    collected = given(*SCREENED, *when(SCREENED, collection()), ConsentWithdrawn())
    assert collected.collections == (DIN,)


# ---- screening ------------------------------------------------------------------------------


def test_negative_screening_result_is_recorded_with_specimen_date():
    assert when(REGISTERED, screening("HBsAg")) == [
        ScreeningResultRecorded("HBsAg", Result.NEGATIVE, TODAY - timedelta(days=2))
    ]


def test_screening_refuses_unknown_marker():
    with pytest.raises(InvalidArgument) as refused:
        when(REGISTERED, screening("anti-HIV"))
    assert refused.value.field == "marker"


def test_screening_refuses_specimen_drawn_in_the_future():
    with pytest.raises(InvalidArgument) as refused:
        when(REGISTERED, screening("HBsAg", days_ago=-1))
    assert refused.value.field == "specimen_date"


def test_latest_screening_result_per_marker_wins():
    state = given(
        *REGISTERED,
        ScreeningResultRecorded("HBsAg", Result.NEGATIVE, TODAY - timedelta(days=40)),
        ScreeningResultRecorded("HBsAg", Result.NEGATIVE, TODAY),
    )
    assert state.screening["HBsAg"].specimen_date == TODAY


def test_positive_required_marker_redetermines_eligibility_as_ineligible():
    events = when(SCREENED, screening("anti-HCV", Result.POSITIVE))
    assert events == [
        ScreeningResultRecorded("anti-HCV", Result.POSITIVE, TODAY - timedelta(days=2)),
        EligibilityDetermined(
            Eligibility.INELIGIBLE, ("anti-HCV: positive",), TODAY, RULES.version
        ),
    ]


def test_cmv_positive_is_recorded_but_not_disqualifying():
    events = when(SCREENED, screening("CMV", Result.POSITIVE))
    assert events == [ScreeningResultRecorded("CMV", Result.POSITIVE, TODAY - timedelta(days=2))]
    assert eligibility((*SCREENED, *events)) == (Eligibility.ELIGIBLE, ())


def test_questionnaire_result_is_recorded():
    assert when(REGISTERED, RecordQuestionnaire(False)) == [QuestionnaireRecorded(False)]


# ---- eligibility ----------------------------------------------------------------------------


def test_eligible_when_consented_questionnaire_passed_and_every_marker_negative_in_window():
    assert when(SCREENED, DetermineEligibility(TODAY)) == [
        EligibilityDetermined(Eligibility.ELIGIBLE, (), TODAY, RULES.version)
    ]


def test_eligibility_decision_records_the_rules_version():
    rules = EligibilityRules(version="eu-2026.2")
    (decided,) = when(SCREENED, DetermineEligibility(TODAY), rules)
    assert isinstance(decided, EligibilityDetermined) and decided.rules_version == "eu-2026.2"


def test_determined_eligibility_is_kept_in_the_donor_state():
    state = given(*SCREENED, *when(SCREENED, screening("syphilis", Result.POSITIVE)))
    assert state.eligibility is Eligibility.INELIGIBLE
    assert state.eligibility_reasons == ("syphilis: positive",)


def test_pending_lists_every_marker_without_result():
    status, reasons = eligibility((*CONSENTED, QuestionnaireRecorded(True)))
    assert status is Eligibility.PENDING
    assert reasons == tuple(f"{m}: no result" for m in (*DEFAULT_MARKERS, "CMV"))


def test_hbv_nat_is_a_default_required_marker():
    assert "HBV NAT" in DEFAULT_MARKERS and "HBV NAT" in RULES.required_markers
    without = tuple(
        e
        for e in SCREENED
        if not (isinstance(e, ScreeningResultRecorded) and e.marker == "HBV NAT")
    )
    assert eligibility(without) == (Eligibility.PENDING, ("HBV NAT: no result",))
    positive = ScreeningResultRecorded("HBV NAT", Result.POSITIVE, TODAY)
    assert eligibility((*SCREENED, positive)) == (Eligibility.INELIGIBLE, ("HBV NAT: positive",))


def test_a_donor_without_a_cmv_result_is_pending_not_eligible():
    without = tuple(
        e for e in SCREENED if not (isinstance(e, ScreeningResultRecorded) and e.marker == "CMV")
    )
    assert eligibility(without) == (Eligibility.PENDING, ("CMV: no result",))


def test_a_reactive_cmv_result_does_not_disqualify():
    reactive = ScreeningResultRecorded("CMV", Result.POSITIVE, TODAY)
    assert eligibility((*SCREENED, reactive)) == (Eligibility.ELIGIBLE, ())


def test_a_cmv_specimen_outside_the_window_is_pending():
    stale = ScreeningResultRecorded("CMV", Result.POSITIVE, TODAY - timedelta(days=8))
    assert eligibility((*SCREENED, stale)) == (
        Eligibility.PENDING,
        ("CMV: specimen 2026-02-22 outside the window (-7/+7 days of 2026-03-02)",),
    )


def test_the_default_rules_carry_the_version_that_requires_hbv_nat_and_cmv():
    assert RULES.version == "cellbank-nk-2026.2"
    assert RULES.attribute_markers == ("CMV",)


def test_pending_while_questionnaire_not_recorded():
    without = tuple(e for e in SCREENED if not isinstance(e, QuestionnaireRecorded))
    assert eligibility(without) == (
        Eligibility.PENDING,
        ("screening questionnaire not recorded",),
    )


def test_pending_while_consent_not_recorded():
    without = tuple(e for e in SCREENED if not isinstance(e, ConsentGiven))
    assert eligibility(without) == (Eligibility.PENDING, ("consent not recorded",))


def test_ineligible_when_a_required_marker_is_positive():
    status, reasons = eligibility(
        (*SCREENED, ScreeningResultRecorded("HIV-1 NAT", Result.POSITIVE, TODAY))
    )
    assert (status, reasons) == (Eligibility.INELIGIBLE, ("HIV-1 NAT: positive",))


def test_ineligible_when_questionnaire_failed():
    assert eligibility((*SCREENED, QuestionnaireRecorded(False))) == (
        Eligibility.INELIGIBLE,
        ("screening questionnaire failed",),
    )


def test_ineligible_when_consent_withdrawn():
    assert eligibility((*SCREENED, ConsentWithdrawn())) == (
        Eligibility.INELIGIBLE,
        ("consent withdrawn",),
    )


def test_ineligible_reasons_also_list_what_is_pending():
    status, reasons = eligibility(
        (*CONSENTED, ScreeningResultRecorded("HBsAg", Result.POSITIVE, TODAY))
    )
    assert status is Eligibility.INELIGIBLE
    assert reasons[0] == "HBsAg: positive"
    assert "screening questionnaire not recorded" in reasons


def test_specimen_drawn_more_than_seven_days_before_collection_is_pending():
    stale = ScreeningResultRecorded("HBsAg", Result.NEGATIVE, TODAY - timedelta(days=8))
    status, reasons = eligibility((*SCREENED, stale))
    assert status is Eligibility.PENDING
    assert reasons == ("HBsAg: specimen 2026-02-22 outside the window (-7/+7 days of 2026-03-02)",)


@pytest.mark.parametrize("days", [-7, 0, 7])
def test_specimen_within_seven_days_either_side_of_collection_is_in_window(days):
    assert eligibility(SCREENED, as_of=TODAY - timedelta(days=2) + timedelta(days=days)) == (
        Eligibility.ELIGIBLE,
        (),
    )


def test_specimen_drawn_more_than_seven_days_after_collection_is_pending():
    status, _ = eligibility(SCREENED, as_of=TODAY - timedelta(days=10))
    assert status is Eligibility.PENDING


def test_window_is_configurable_for_apheresis_donors():
    old = ScreeningResultRecorded("HBsAg", Result.NEGATIVE, TODAY - timedelta(days=20))
    assert eligibility((*SCREENED, old))[0] is Eligibility.PENDING
    apheresis = EligibilityRules(days_before=30)
    assert eligibility((*SCREENED, old), rules=apheresis) == (Eligibility.ELIGIBLE, ())


def test_required_and_attribute_markers_are_configurable():
    rules = EligibilityRules(required_markers=("HBsAg",), attribute_markers=())
    events = (
        *CONSENTED,
        QuestionnaireRecorded(True),
        ScreeningResultRecorded("HBsAg", Result.NEGATIVE, TODAY),
    )
    assert eligibility(events, rules=rules) == (Eligibility.ELIGIBLE, ())


# ---- deferral -------------------------------------------------------------------------------


def test_deferral_records_its_end_and_makes_the_donor_ineligible_with_reason():
    until = TODAY + timedelta(days=90)
    assert when(SCREENED, DeferDonor(until, TODAY)) == [
        DonorDeferred(until),
        EligibilityDetermined(
            Eligibility.INELIGIBLE, ("deferred until 2026-05-31",), TODAY, RULES.version
        ),
    ]


@pytest.mark.parametrize("days", [0, -1])
def test_deferral_must_end_after_today(days):
    with pytest.raises(InvalidArgument) as refused:
        when(SCREENED, DeferDonor(TODAY + timedelta(days=days), TODAY))
    assert refused.value.field == "until"


def test_deferral_no_longer_disqualifies_from_its_end_date():
    until = TODAY + timedelta(days=3)
    rules = EligibilityRules(days_before=30)
    assert eligibility((*SCREENED, DonorDeferred(until)), as_of=until, rules=rules) == (
        Eligibility.ELIGIBLE,
        (),
    )


# ---- typing ---------------------------------------------------------------------------------


def test_typing_records_hla_kir_blood_group_and_cmv():
    assert when(REGISTERED, typing(kir=("KIR3DL1", "KIR2DL1", "KIR3DL1"))) == [
        HlaTyped(tuple(LocusTyping(locus, alleles) for locus, alleles in HLA.items()), "high"),
        KirGenotyped(("KIR2DL1", "KIR3DL1")),
        BloodGroupRecorded("O", "NEG"),
        CmvSerostatusRecorded(Cmv.NEGATIVE),
    ]


def test_typing_with_any_first_field_only_allele_is_low_resolution():
    (hla, *_rest) = when(REGISTERED, typing(hla={**HLA, "B": ("B*07", "B*44:02")}))
    assert isinstance(hla, HlaTyped) and hla.resolution == "low"


def test_typing_state_keeps_alleles_kir_blood_group_and_cmv():
    state = given(*REGISTERED, *when(REGISTERED, typing(cmv=Cmv.POSITIVE)))
    assert state.hla[0] == LocusTyping("A", ("A*02:01", "A*24:02"))
    assert (state.kir, state.abo, state.rh, state.cmv) == (
        ("KIR2DL1", "KIR3DL1"),
        "O",
        "NEG",
        Cmv.POSITIVE,
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hla": {**HLA, "A": ("A*2:01", "A*24:02")}}, "hla.A"),
        ({"hla": {**HLA, "DRB1": ("DRB1*15:01",)}}, "hla.DRB1"),
        ({"hla": {k: v for k, v in HLA.items() if k != "C"}}, "hla"),
        ({"kir": ("KIR2DL1", "KIR9XX1")}, "kir"),
        ({"abo": "0"}, "abo"),
        ({"rh": "+"}, "rh"),
    ],
)
def test_typing_refuses_malformed_values_naming_the_field(changes, field):
    with pytest.raises(InvalidArgument) as refused:
        when(REGISTERED, typing(**changes))
    assert refused.value.field == field


# ---- collection -----------------------------------------------------------------------------


def test_collection_from_eligible_donor_is_recorded_with_its_eligibility():
    assert when(SCREENED, collection()) == [
        CollectionRecorded(
            din=DIN,
            collected_at=COLLECTED_AT,
            volume_ml=250.0,
            total_nucleated_cells=1e10,
            nk_cells=1e9,
            cd3_cells=5e9,
            eligibility=Eligibility.ELIGIBLE,
            urgent_physician_request="",
        )
    ]


def test_collection_without_consent_refused():
    without = tuple(e for e in SCREENED if not isinstance(e, ConsentGiven))
    with pytest.raises(PreconditionFailed, match="consent required"):
        when(without, collection())


def test_collection_from_pending_donor_refused_naming_the_reasons():
    with pytest.raises(PreconditionFailed, match=r"not eligible.*HBsAg: no result"):
        when((*CONSENTED, QuestionnaireRecorded(True)), collection())


def test_collection_from_ineligible_donor_refused():
    positive = ScreeningResultRecorded("anti-HBc", Result.POSITIVE, TODAY)
    with pytest.raises(PreconditionFailed, match="anti-HBc: positive"):
        when((*SCREENED, positive), collection())


def test_collection_from_pending_donor_on_urgent_request_records_eligibility_and_request():
    (recorded,) = when((*CONSENTED, QuestionnaireRecorded(True)), collection(urgent="Dr Roe"))
    assert isinstance(recorded, CollectionRecorded)
    assert (recorded.eligibility, recorded.urgent_physician_request) == (
        Eligibility.PENDING,
        "Dr Roe",
    )


def test_collection_from_ineligible_donor_on_urgent_request_is_recorded():
    positive = ScreeningResultRecorded("anti-HBc", Result.POSITIVE, TODAY)
    (recorded,) = when((*SCREENED, positive), collection(urgent="Dr Roe: relapse"))
    assert isinstance(recorded, CollectionRecorded)
    assert recorded.eligibility is Eligibility.INELIGIBLE
    assert recorded.urgent_physician_request == "Dr Roe: relapse"


def test_urgent_request_is_not_recorded_for_an_eligible_donor():
    (recorded,) = when(SCREENED, collection(urgent="Dr Roe"))
    assert isinstance(recorded, CollectionRecorded)
    assert recorded.urgent_physician_request == ""


def test_collection_from_deferred_donor_refused_even_on_urgent_request():
    deferred = (*SCREENED, DonorDeferred(TODAY + timedelta(days=30)))
    with pytest.raises(PreconditionFailed, match="deferred"):
        when(deferred, collection(urgent="Dr Roe"))


def test_collection_eligibility_is_measured_from_the_collection_date():
    late = RecordCollection(DIN, COLLECTED_AT + timedelta(days=10), 250.0, 1e10, 1e9, 5e9)
    with pytest.raises(PreconditionFailed, match="outside the window"):
        when(SCREENED, late)


def test_collection_with_a_used_din_refused():
    collected = (*SCREENED, *when(SCREENED, collection()))
    with pytest.raises(PreconditionFailed, match="DIN already used"):
        when(collected, collection())


def test_collection_refuses_malformed_din():
    with pytest.raises(InvalidArgument) as refused:
        when(SCREENED, collection(din="G123426000001A"))
    assert refused.value.field == "din"


@pytest.mark.parametrize("field", ["volume_ml", "total_nucleated_cells", "nk_cells", "cd3_cells"])
def test_collection_refuses_negative_count_naming_the_field(field):
    with pytest.raises(InvalidArgument) as refused:
        when(SCREENED, collection(**{field: -1.0}))
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("volume_ml", float("nan")),
        ("total_nucleated_cells", float("inf")),
        ("nk_cells", float("nan")),
        ("cd3_cells", float("nan")),
    ],
)
def test_collection_refuses_non_finite_count_naming_the_field(field, value):
    with pytest.raises(InvalidArgument) as refused:
        when(SCREENED, collection(**{field: value}))
    assert refused.value.field == field


def test_collection_refuses_zero_volume():
    with pytest.raises(InvalidArgument) as refused:
        when(SCREENED, collection(volume_ml=0.0))
    assert refused.value.field == "volume_ml"


def test_collection_refuses_nk_and_cd3_cells_exceeding_total():
    with pytest.raises(InvalidArgument) as refused:
        when(SCREENED, collection(total_nucleated_cells=1e9, nk_cells=6e8, cd3_cells=6e8))
    assert refused.value.field == "nk_cells"


def test_collection_appends_its_din_to_the_donor():
    first = (*SCREENED, *when(SCREENED, collection()))
    second = when(first, collection(din="G123426000002"))
    assert given(*first, *second).collections == (DIN, "G123426000002")


# ---- positive results after collection ------------------------------------------------------


def test_positive_result_after_collection_names_every_collected_din():
    collected = (
        *SCREENED,
        *when(SCREENED, collection()),
        *when(SCREENED, collection(din="G123426000002")),
    )
    events = when(collected, screening("HTLV-I/II", Result.POSITIVE, days_ago=0))
    assert events[-1] == PositiveResultAfterCollection("HTLV-I/II", TODAY, (DIN, "G123426000002"))
    assert isinstance(events[1], EligibilityDetermined)
    assert events[1].status is Eligibility.INELIGIBLE


def test_positive_result_before_any_collection_raises_no_lookback():
    events = when(SCREENED, screening("HTLV-I/II", Result.POSITIVE))
    assert not any(isinstance(e, PositiveResultAfterCollection) for e in events)


def test_cmv_positive_after_collection_raises_no_lookback():
    collected = (*SCREENED, *when(SCREENED, collection()))
    assert when(collected, screening("CMV", Result.POSITIVE)) == [
        ScreeningResultRecorded("CMV", Result.POSITIVE, TODAY - timedelta(days=2))
    ]


def test_negative_result_after_collection_raises_no_lookback():
    collected = (*SCREENED, *when(SCREENED, collection()))
    assert len(when(collected, screening("HBsAg", days_ago=0))) == 1


# ---- DIN sequence ---------------------------------------------------------------------------


def allocate(count: int, facility_id: str = "G1234", year: int = 2026) -> list[str]:
    state, dins = din_sequence.DinSequence(), []
    for _ in range(count):
        (allocated,) = din_sequence.decide(state, din_sequence.AllocateDin(facility_id, year))
        state = din_sequence.evolve(state, allocated)
        dins.append(allocated.din)
    return dins


def test_din_sequence_allocates_1_2_3_in_order():
    assert allocate(3) == ["G123426000001", "G123426000002", "G123426000003"]


def test_din_sequence_never_reuses_a_din():
    dins = allocate(500)
    assert len(set(dins)) == 500
    assert all(validate_din(d) == d for d in dins)


def test_din_sequence_continues_from_the_last_allocated_number():
    state = din_sequence.DinSequence(last=41)
    (allocated,) = din_sequence.decide(state, din_sequence.AllocateDin("G1234", 2026))
    assert allocated == din_sequence.DinAllocated("G123426000042", 42)


def test_din_sequence_refuses_to_wrap_after_999999():
    state = din_sequence.DinSequence(last=999_999)
    with pytest.raises(InvalidArgument) as refused:
        din_sequence.decide(state, din_sequence.AllocateDin("G1234", 2026))
    assert refused.value.field == "sequence"


def test_din_sequence_has_one_stream_per_facility_and_year():
    assert din_sequence.stream_id("G1234", 2026) == "din-sequence-G1234-26"
    assert din_sequence.stream_id("G1234", 2027) != din_sequence.stream_id("G1234", 2026)


def test_din_sequence_refuses_malformed_facility():
    with pytest.raises(InvalidArgument) as refused:
        din_sequence.stream_id("O1234", 2026)
    assert refused.value.field == "facility_id"


ELIGIBLE = (*SCREENED, *when(SCREENED, DetermineEligibility(TODAY)))


def test_eligible_donor_who_withdraws_consent_becomes_ineligible_at_once():
    events = when(ELIGIBLE, WithdrawConsent())
    assert events[0] == ConsentWithdrawn()
    assert isinstance(events[1], EligibilityDetermined)
    assert events[1].status is Eligibility.INELIGIBLE and "consent withdrawn" in events[1].reasons


def test_eligible_donor_who_fails_the_questionnaire_becomes_ineligible_at_once():
    events = when(ELIGIBLE, RecordQuestionnaire(False))
    assert isinstance(events[-1], EligibilityDetermined)
    assert events[-1].status is Eligibility.INELIGIBLE


def test_questionnaire_passed_again_changes_no_eligibility():
    assert when(ELIGIBLE, RecordQuestionnaire(True)) == [QuestionnaireRecorded(True)]


def test_a_later_negative_does_not_clear_a_positive_marker():
    positive = (*ELIGIBLE, ScreeningResultRecorded("HBsAg", Result.POSITIVE, TODAY))
    negative_again = (*positive, ScreeningResultRecorded("HBsAg", Result.NEGATIVE, TODAY))
    (determined,) = when(negative_again, DetermineEligibility(TODAY))
    assert isinstance(determined, EligibilityDetermined)
    assert determined.status is Eligibility.INELIGIBLE and "HBsAg: positive" in determined.reasons


def test_deferral_records_its_reason():
    events = when(SCREENED, DeferDonor(TODAY + timedelta(days=90), TODAY, reason="recent travel"))
    assert events[0] == DonorDeferred(TODAY + timedelta(days=90), "recent travel")
    assert given(*SCREENED, events[0]).deferral_reason == "recent travel"
