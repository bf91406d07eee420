"""Batch aggregate: steps, QC against the product's release spec, release, units, sterility."""

from __future__ import annotations

import dataclasses
import functools
import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from services.kernel.isbt128 import parse_product_code
from services.manufacturing.adapters.codec import CODEC
from services.manufacturing.domain.batch import Command, decide, evolve
from services.manufacturing.domain.model import (
    NOT_EVALUATED_LABELS,
    Batch,
    BatchEvent,
    BatchReleased,
    BatchStarted,
    BatchStatus,
    BatchSterilityFailed,
    ProcessStepRecorded,
    QcResultRecorded,
    RecordProcessStep,
    RecordQcResult,
    RecordSterilityResult,
    ReleaseBatch,
    Signature,
    StartBatch,
    Step,
    SterilityResultRecorded,
    UnitRecord,
    UnitSpec,
)
from services.manufacturing.domain.product_types import (
    ALLOGENEIC_NK,
    ReleaseTest,
    Rule,
    load_product_types,
)
from shared.errors import InvalidArgument, NotFound, PreconditionFailed

PRODUCTS = load_product_types()
DIN = "G123426000001"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
CRYOPRESERVED_AT = datetime(2026, 3, 21, 23, 30, tzinfo=UTC)
SIGNED_AT = datetime(2026, 3, 25, 16, 45, tzinfo=UTC)
STARTED: tuple[BatchEvent, ...] = (
    BatchStarted("batch-1", DIN, "donor-1", "NK-ALLO", "NK-ALLO-2026.1", "olga"),
)
PASSING_QC = {
    "viability": (85.0, ""),
    "purity_cd56_cd3neg": (82.0, ""),
    "cd3_content": (1.5e5, ""),
    "endotoxin": (0.5, ""),
    "mycoplasma_pcr": (None, "negative"),
    "gram_stain": (None, "no organisms"),
    "preliminary_culture": (None, "no growth"),
    "potency_k562_lysis": (34.0, ""),
    "identity_hla_ab": (None, "confirmed"),
}
UNITS = (UnitSpec(1e9, 1e5, 20.0), UnitSpec(1e9, 1e5, 20.0), UnitSpec(8e8, 9e4, 18.0))


def given(*events: BatchEvent) -> Batch:
    return functools.reduce(evolve, events, Batch())


def when(events: tuple[BatchEvent, ...], command: Command) -> list[BatchEvent]:
    return list(decide(given(*events), command, PRODUCTS))


def qc(test: str, value: float | None = None, text: str = "") -> RecordQcResult:
    return RecordQcResult(test, value, text, T0 + timedelta(days=20))


def step(
    step: Step = Step.HARVEST, by: str = "olga", at: datetime = T0 + timedelta(days=1), **changes
) -> RecordProcessStep:
    values = {"day": 0, "viable_cells": 3e9, "viability_pct": 92.0, **changes}
    return RecordProcessStep(step, performed_by=by, performed_at=at, **values)


def steps(events: tuple[BatchEvent, ...], *commands: RecordProcessStep) -> tuple[BatchEvent, ...]:
    return (*events, *(e for c in commands for e in when(events, c)))


def with_qc(events: tuple[BatchEvent, ...], **overrides) -> tuple[BatchEvent, ...]:
    results = {**PASSING_QC, **overrides}
    recorded = [e for test, (v, t) in results.items() for e in when(events, qc(test, v, t))]
    return (*events, *recorded)


PROCESSED = steps(
    STARTED,
    step(Step.EXPANSION_DAY, by="pavel", day=14),
    step(Step.CRYOPRESERVATION, by="pavel", at=CRYOPRESERVED_AT),
)
QC_PASSED = with_qc(PROCESSED)


def release(
    name: str = "quinn",
    role: str = "qa",
    eligibility: str = "ELIGIBLE",
    units: tuple[UnitSpec, ...] = UNITS,
    urgent: str = "",
    meaning: str = "QA release: batch meets specification",
) -> ReleaseBatch:
    return ReleaseBatch(Signature(name, SIGNED_AT, meaning), role, eligibility, units, urgent)


def released_units(events: list[BatchEvent]) -> tuple[UnitRecord, ...]:
    (released,) = events
    assert isinstance(released, BatchReleased)
    return released.units


def refusal(events: tuple[BatchEvent, ...], command: Command) -> str:
    with pytest.raises(PreconditionFailed) as refused:
        when(events, command)
    assert refused.value.rule == "release refused"
    return str(refused.value)


RELEASED = (*QC_PASSED, *when(QC_PASSED, release()))


# ---- start ----------------------------------------------------------------------------------


def test_start_records_din_donor_product_spec_version_and_operator():
    assert when((), StartBatch("batch-1", DIN, "donor-1", "NK-ALLO", "olga")) == list(STARTED)


def test_start_refuses_unknown_product_type():
    with pytest.raises(InvalidArgument) as refused:
        when((), StartBatch("batch-1", DIN, "donor-1", "NK-AUTO", "olga"))
    assert refused.value.field == "product_type"


@pytest.mark.parametrize("din", ["G123426000001A", "O123426000001", "G1234"])
def test_start_refuses_malformed_din(din):
    with pytest.raises(InvalidArgument) as refused:
        when((), StartBatch("batch-1", din, "donor-1", "NK-ALLO", "olga"))
    assert refused.value.field == "din"


def test_start_requires_the_operator():
    with pytest.raises(InvalidArgument) as refused:
        when((), StartBatch("batch-1", DIN, "donor-1", "NK-ALLO", " "))
    assert refused.value.field == "operator"


def test_start_twice_refused():
    with pytest.raises(PreconditionFailed, match="already started"):
        when(STARTED, StartBatch("batch-1", DIN, "donor-1", "NK-ALLO", "olga"))


def test_commands_for_unstarted_batch_are_not_found():
    with pytest.raises(NotFound):
        when((), step())


# ---- process steps --------------------------------------------------------------------------


def test_step_records_operator_time_counts_and_viability():
    assert when(STARTED, step(Step.EXPANSION_DAY, by="pavel", day=7)) == [
        ProcessStepRecorded("EXPANSION_DAY", 7, "pavel", T0 + timedelta(days=1), 3e9, 92.0)
    ]


def test_every_step_operator_joins_the_batch_operators():
    state = given(*STARTED, *when(STARTED, step(by="pavel")))
    assert state.operators == frozenset({"olga", "pavel"})


@pytest.mark.parametrize("viability", [-0.1, 100.1, float("nan")])
def test_step_refuses_viability_outside_0_to_100(viability):
    with pytest.raises(InvalidArgument) as refused:
        when(STARTED, step(viability_pct=viability))
    assert refused.value.field == "viability_pct"


@pytest.mark.parametrize("viability", [0.0, 100.0])
def test_step_accepts_viability_at_the_bounds(viability):
    assert len(when(STARTED, step(viability_pct=viability))) == 1


@pytest.mark.parametrize("cells", [-1.0, float("nan"), float("inf")])
def test_step_refuses_negative_or_non_finite_viable_cells(cells):
    with pytest.raises(InvalidArgument) as refused:
        when(STARTED, step(viable_cells=cells))
    assert refused.value.field == "viable_cells"


@pytest.mark.parametrize("day", [0, 61])
def test_expansion_day_must_be_1_to_60(day):
    with pytest.raises(InvalidArgument) as refused:
        when(STARTED, step(Step.EXPANSION_DAY, day=day))
    assert refused.value.field == "day"


def test_step_requires_its_operator():
    with pytest.raises(InvalidArgument) as refused:
        when(STARTED, step(by=""))
    assert refused.value.field == "performed_by"


def test_steps_are_closed_after_release():
    with pytest.raises(PreconditionFailed, match="already released"):
        when(RELEASED, step())


# ---- QC -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "value", "text", "passed"),
    [
        ("viability", 70.0, "", True),
        ("viability", 69.9, "", False),
        ("purity_cd56_cd3neg", 70.0, "", True),
        ("purity_cd56_cd3neg", 69.0, "", False),
        ("cd3_content", 0.0, "", True),
        ("cd3_content", 9e6, "", True),  # recorded here, checked per kg at matching
        ("cd3_content", None, "", False),
        ("endotoxin", 4.99, "", True),
        ("endotoxin", 5.0, "", False),
        ("mycoplasma_pcr", None, "Negative", True),
        ("mycoplasma_pcr", None, "not detected", True),
        ("mycoplasma_pcr", None, "detected", False),
        ("gram_stain", None, "no organisms", True),
        ("gram_stain", None, "gram-positive cocci", False),
        ("preliminary_culture", None, "no growth", True),
        ("preliminary_culture", None, "growth", False),
        ("potency_k562_lysis", 20.1, "", True),
        ("potency_k562_lysis", 20.0, "", False),
        ("identity_hla_ab", None, "confirmed", True),
        ("identity_hla_ab", None, "not confirmed", False),
        ("viability", None, "", False),  # a numeric test without a value fails
    ],
)
def test_qc_result_is_judged_against_the_release_spec(test, value, text, passed):
    assert when(STARTED, qc(test, value, text)) == [
        QcResultRecorded(test, value, text, passed, T0 + timedelta(days=20))
    ]


def test_qc_refuses_test_not_in_the_release_spec():
    with pytest.raises(InvalidArgument) as refused:
        when(STARTED, qc("hemoglobin", 12.0))
    assert refused.value.field == "test"


def test_qc_refuses_sterility_follow_up_as_release_test():
    with pytest.raises(InvalidArgument, match="follow-up"):
        when(STARTED, qc("sterility_14d", text="negative"))


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_qc_refuses_negative_or_non_finite_value(value):
    with pytest.raises(InvalidArgument) as refused:
        when(STARTED, qc("endotoxin", value))
    assert refused.value.field == "value"


def test_qc_is_closed_after_release():
    with pytest.raises(PreconditionFailed, match="already released"):
        when(RELEASED, qc("viability", 90.0))


def test_latest_qc_result_per_test_counts():
    retested = with_qc(QC_PASSED, viability=(60.0, ""))
    retested = (*retested, *when(retested, qc("viability", 75.0)))
    assert given(*retested).qc["viability"].passed
    assert len(when(retested, release())) == 1


# ---- release refusals -----------------------------------------------------------------------


def test_release_refused_when_a_required_qc_result_is_missing():
    without_potency = tuple(
        e
        for e in QC_PASSED
        if not (isinstance(e, QcResultRecorded) and e.test == "potency_k562_lysis")
    )
    assert "QC potency_k562_lysis: no result" in refusal(without_potency, release())


def test_release_refused_when_a_qc_result_failed_naming_the_spec():
    failed = with_qc(QC_PASSED, endotoxin=(7.5, ""))
    assert "QC endotoxin: 7.5 does not meet < 5 EU/mL" in refusal(failed, release())


def test_release_refused_when_qualitative_qc_failed():
    failed = with_qc(QC_PASSED, mycoplasma_pcr=(None, "detected"))
    assert "QC mycoplasma_pcr: 'detected' does not meet negative" in refusal(failed, release())


@pytest.mark.parametrize("eligibility", ["PENDING", "INELIGIBLE"])
def test_release_refused_when_donor_not_eligible_without_urgent_request(eligibility):
    message = refusal(QC_PASSED, release(eligibility=eligibility))
    assert f"donor eligibility: donor is {eligibility}" in message


@pytest.mark.parametrize("signer", ["olga", "pavel"])
def test_release_refused_when_signer_ran_the_batch(signer):
    assert f"two-person rule: {signer} ran this batch" in refusal(QC_PASSED, release(name=signer))


def test_release_refused_when_signer_role_is_not_qa():
    assert "signing role" in refusal(QC_PASSED, release(role="operator"))


def test_release_refused_without_units():
    assert "units: at least one unit" in refusal(QC_PASSED, release(units=()))


def test_release_refused_without_signature_meaning():
    assert "meaning of the signature" in refusal(QC_PASSED, release(meaning=" "))


def test_release_refused_without_signer_name():
    assert "signer's name" in refusal(QC_PASSED, release(name=" "))


def test_release_refused_when_already_released():
    assert "batch already released" in refusal(RELEASED, release())


def test_release_refusal_names_every_failing_rule():
    message = refusal(
        STARTED, release(name="olga", role="operator", eligibility="PENDING", units=())
    )
    expected = [
        "signing role",
        "two-person rule",
        "donor eligibility",
        "units: at least one unit",
        *(f"QC {name}: no result" for name in PASSING_QC),
    ]
    assert [part for part in expected if part not in message] == []


@pytest.mark.parametrize(
    "unit",
    [
        UnitSpec(0.0, 1e5, 20.0),
        UnitSpec(1e9, -1.0, 20.0),
        UnitSpec(1e9, 1e5, 0.0),
        UnitSpec(float("nan"), 1e5, 20.0),
        UnitSpec(1e9, float("nan"), 20.0),
        UnitSpec(1e9, 1e5, float("inf")),
    ],
)
def test_release_refuses_malformed_unit_naming_its_index(unit):
    with pytest.raises(InvalidArgument) as refused:
        when(QC_PASSED, release(units=(UNITS[0], unit)))
    assert refused.value.field == "units[1]"


# ---- release ----------------------------------------------------------------------------------


def test_release_records_the_signature_and_donor_eligibility():
    (released,) = when(QC_PASSED, release())
    assert isinstance(released, BatchReleased)
    assert released.signature == Signature(
        "quinn", SIGNED_AT, "QA release: batch meets specification"
    )
    assert (released.donor_eligibility, released.urgent_physician_request) == ("ELIGIBLE", "")


def test_release_divides_the_batch_into_units_with_din_product_code_and_counts():
    units = released_units(when(QC_PASSED, release()))
    assert [(u.unit_id, u.din, u.product_code, u.division) for u in units] == [
        (f"{DIN}-S1001VA0", DIN, "S1001VA0", 1),
        (f"{DIN}-S1001VB0", DIN, "S1001VB0", 2),
        (f"{DIN}-S1001VC0", DIN, "S1001VC0", 3),
    ]
    assert [(u.viable_nk_cells, u.cd3_cells, u.volume_ml) for u in units] == [
        (s.viable_nk_cells, s.cd3_cells, s.volume_ml) for s in UNITS
    ]


def test_a_batch_made_into_one_unit_is_the_undivided_product_00():
    (unit,) = released_units(when(QC_PASSED, release(units=UNITS[:1])))
    assert (unit.unit_id, unit.product_code, unit.division) == (f"{DIN}-S1001V00", "S1001V00", 1)


def test_release_refuses_more_units_than_isbt_divisions_a0_to_z0():
    with pytest.raises(InvalidArgument) as refused:
        when(QC_PASSED, release(units=UNITS[:1] * 27))
    assert refused.value.field == "units"
    assert len(released_units(when(QC_PASSED, release(units=UNITS[:1] * 26)))) == 26


def test_every_released_product_code_is_a_valid_isbt_128_code():
    for count in (1, 2, 26):
        units = released_units(when(QC_PASSED, release(units=UNITS[:1] * count)))
        assert all(str(parse_product_code(u.product_code)) == u.product_code for u in units)
        assert len({u.unit_id for u in units}) == count


def test_units_expire_the_product_stability_after_cryopreservation():
    units = released_units(when(QC_PASSED, release()))
    expected = CRYOPRESERVED_AT.date() + timedelta(days=ALLOGENEIC_NK.stability_days)
    assert {u.expires_on for u in units} == {expected}


def test_a_slow_qa_release_does_not_lengthen_shelf_life():
    prompt = released_units(when(QC_PASSED, release()))
    slow = dataclasses.replace(
        release(), signature=Signature("quinn", SIGNED_AT + timedelta(days=90), "QA")
    )
    assert {u.expires_on for u in released_units(when(QC_PASSED, slow))} == {
        u.expires_on for u in prompt
    }


def test_the_first_cryopreservation_step_counts_when_several_were_recorded():
    again = steps(
        QC_PASSED, step(Step.CRYOPRESERVATION, by="pavel", at=CRYOPRESERVED_AT + timedelta(days=3))
    )
    units = released_units(when(again, release()))
    assert {u.expires_on for u in units} == {
        CRYOPRESERVED_AT.date() + timedelta(days=ALLOGENEIC_NK.stability_days)
    }


def test_expiry_counts_the_utc_day_of_cryopreservation():
    late_evening = datetime(2026, 3, 21, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 22nd UTC
    frozen = with_qc(steps(STARTED, step(Step.CRYOPRESERVATION, by="pavel", at=late_evening)))
    units = released_units(when(frozen, release()))
    assert {u.expires_on for u in units} == {date(2026, 3, 22) + timedelta(days=5 * 365)}


def test_release_refused_without_a_recorded_cryopreservation_step():
    not_frozen = with_qc(steps(STARTED, step(Step.FORMULATION, by="pavel")))
    message = refusal(not_frozen, release())
    assert "cryopreservation: no CRYOPRESERVATION step recorded" in message


def test_release_refused_once_the_stability_limit_has_passed():
    late = SIGNED_AT.replace(year=2031, month=3, day=21)  # 5 × 365 days after 2026-03-21 is 03-20
    message = refusal(
        QC_PASSED, dataclasses.replace(release(), signature=Signature("quinn", late, "QA"))
    )
    assert "stability: the units expired on 2031-03-20" in message


def test_release_on_the_last_day_of_stability_is_allowed():
    last_day = SIGNED_AT.replace(year=2031, month=3, day=20)
    signed = dataclasses.replace(release(), signature=Signature("quinn", last_day, "QA"))
    assert {u.expires_on for u in released_units(when(QC_PASSED, signed))} == {date(2031, 3, 20)}


def test_units_are_released_unlabelled_and_unsegregated_for_an_eligible_donor():
    units = released_units(when(QC_PASSED, release()))
    assert all((u.status, u.segregated, u.labels) == ("RELEASED", False, ()) for u in units)


@pytest.mark.parametrize("eligibility", ["PENDING", "INELIGIBLE"])
def test_urgent_release_labels_and_segregates_every_unit(eligibility):
    (released,) = when(QC_PASSED, release(eligibility=eligibility, urgent="Dr Roe: relapse"))
    assert isinstance(released, BatchReleased)
    assert released.urgent_physician_request == "Dr Roe: relapse"
    assert NOT_EVALUATED_LABELS == (
        "NOT EVALUATED FOR INFECTIOUS SUBSTANCES",
        "WARNING: Advise patient of communicable disease risks",
    )
    assert all(
        (u.status, u.segregated, u.labels) == ("RELEASED", True, NOT_EVALUATED_LABELS)
        for u in released.units
    )


def test_urgent_request_does_not_waive_failed_qc():
    failed = with_qc(QC_PASSED, potency_k562_lysis=(12.0, ""))
    message = refusal(failed, release(eligibility="PENDING", urgent="Dr Roe"))
    assert "QC potency_k562_lysis" in message
    assert "donor eligibility" not in message


def test_released_batch_holds_its_units():
    state = given(*RELEASED)
    assert state.status is BatchStatus.RELEASED
    assert [u.division for u in state.units] == [1, 2, 3]


# ---- sterility follow-up ----------------------------------------------------------------------


def test_sterility_before_release_refused():
    with pytest.raises(PreconditionFailed, match="after release"):
        when(QC_PASSED, RecordSterilityResult(False, date(2026, 3, 25)))


def test_negative_sterility_after_release_is_recorded():
    assert when(RELEASED, RecordSterilityResult(False, date(2026, 3, 25))) == [
        SterilityResultRecorded(False, date(2026, 3, 25))
    ]


def test_positive_sterility_after_release_recalls_every_unit_of_the_batch():
    assert when(RELEASED, RecordSterilityResult(True, date(2026, 3, 25))) == [
        SterilityResultRecorded(True, date(2026, 3, 25)),
        BatchSterilityFailed(DIN, (f"{DIN}-S1001VA0", f"{DIN}-S1001VB0", f"{DIN}-S1001VC0")),
    ]


# Units released before ISBT 128 product codes carried `S1001-01`: their stored events are read
# as they were written, and a recall still names them by those ids.
OLD_FORM_UNITS = tuple(
    UnitRecord(
        f"{DIN}-S1001-{n:02d}", DIN, f"S1001-{n:02d}", n, 1e9, 1e5, 20.0, date(2031, 3, 25),
        "RELEASED", False, (),
    )
    for n in (1, 2)
)  # fmt: skip
OLD_FORM_RELEASED = (
    *QC_PASSED,
    BatchReleased(Signature("quinn", SIGNED_AT, "QA release"), "ELIGIBLE", "", OLD_FORM_UNITS),
)


def test_a_stored_release_with_pre_isbt_product_codes_decodes_and_replays_as_written():
    stored = [CODEC.decode(*CODEC.encode(e)) for e in OLD_FORM_RELEASED]
    state = given(*stored)
    assert [(u.unit_id, u.product_code, u.division) for u in state.units] == [
        (f"{DIN}-S1001-01", "S1001-01", 1),
        (f"{DIN}-S1001-02", "S1001-02", 2),
    ]


def test_a_recall_of_a_pre_isbt_batch_names_its_units_by_their_stored_ids():
    assert when(OLD_FORM_RELEASED, RecordSterilityResult(True, date(2026, 3, 25)))[1] == (
        BatchSterilityFailed(DIN, (f"{DIN}-S1001-01", f"{DIN}-S1001-02"))
    )


def test_positive_sterility_is_kept_in_the_batch_state():
    events = when(RELEASED, RecordSterilityResult(True, date(2026, 3, 25)))
    assert given(*RELEASED, *events).sterility_positive is True


# ---- product types as configuration -----------------------------------------------------------


def test_release_spec_table_is_the_allogeneic_nk_default():
    spec = {t.name: (t.rule, t.limit, t.required_for_release) for t in ALLOGENEIC_NK.tests}
    assert spec == {
        "viability": (Rule.AT_LEAST, 70, True),
        "purity_cd56_cd3neg": (Rule.AT_LEAST, 70, True),
        "cd3_content": (Rule.RECORDED, 0.0, True),
        "endotoxin": (Rule.LESS_THAN, 5.0, True),
        "mycoplasma_pcr": (Rule.NEGATIVE, 0.0, True),
        "gram_stain": (Rule.NEGATIVE, 0.0, True),
        "preliminary_culture": (Rule.NEGATIVE, 0.0, True),
        "potency_k562_lysis": (Rule.MORE_THAN, 20, True),
        "identity_hla_ab": (Rule.CONFIRMED, 0.0, True),
        "sterility_14d": (Rule.NEGATIVE, 0.0, False),
    }
    assert ALLOGENEIC_NK.cd3_per_kg_limit == 2e5


VST = {
    "code": "VST-CMV",
    "description_code": "S2001",
    "stability_days": 730,
    "cd3_per_kg_limit": 0,
    "spec_version": "VST-CMV-2026.1",
    "tests": [
        {"name": "viability", "rule": "AT_LEAST", "limit": 80, "unit": "%"},
        {"name": "sterility_14d", "rule": "NEGATIVE", "required_for_release": False},
    ],
}


def test_product_types_load_from_json_beside_the_built_in_type(tmp_path):
    path = tmp_path / "product_types.json"
    path.write_text(json.dumps([VST]))
    types = load_product_types(path)
    assert set(types) == {"NK-ALLO", "VST-CMV"}
    vst = types["VST-CMV"]
    assert vst.tests == (
        ReleaseTest("viability", Rule.AT_LEAST, 80, "%"),
        ReleaseTest("sterility_14d", Rule.NEGATIVE, required_for_release=False),
    )
    assert (vst.stability_days, vst.product_code(2, of=3)) == (730, "S2001VB0")


def test_the_collection_type_is_product_type_configuration(tmp_path):
    path = tmp_path / "product_types.json"
    path.write_text(json.dumps([{**VST, "code": "NK-PAID", "collection_type": "P"}]))
    assert load_product_types(path)["NK-PAID"].product_code(1, of=1) == "S2001P00"
    assert (ALLOGENEIC_NK.collection_type, ALLOGENEIC_NK.product_code(1, of=2)) == ("V", "S1001VA0")


@pytest.mark.parametrize(
    "change",
    [{"description_code": "S1001-"}, {"description_code": "X1001"}, {"collection_type": "-"}],
)
def test_a_product_type_with_a_malformed_isbt_code_is_refused_when_loaded(tmp_path, change):
    path = tmp_path / "product_types.json"
    path.write_text(json.dumps([{**VST, **change}]))
    with pytest.raises(InvalidArgument) as refused:
        load_product_types(path)
    assert refused.value.field == "product_code"


def test_a_local_description_code_may_be_configured_where_iccbba_has_none(tmp_path):
    path = tmp_path / "product_types.json"
    path.write_text(json.dumps([{**VST, "code": "CAR-NK", "description_code": "A0042"}]))
    assert load_product_types(path)["CAR-NK"].product_code(3, of=3) == "A0042VC0"


def test_product_type_json_overrides_the_built_in_spec(tmp_path):
    path = tmp_path / "product_types.json"
    path.write_text(json.dumps([{**VST, "code": "NK-ALLO", "spec_version": "NK-ALLO-2027.1"}]))
    nk = load_product_types(path)["NK-ALLO"]
    assert nk.spec_version == "NK-ALLO-2027.1"
    assert nk.test("viability").passes(75.0, "") is False


def test_batch_is_judged_by_the_configured_spec(tmp_path):
    path = tmp_path / "product_types.json"
    path.write_text(json.dumps([VST]))
    types = load_product_types(path)
    started = decide(Batch(), StartBatch("batch-2", DIN, "donor-1", "VST-CMV", "olga"), types)
    assert isinstance(started[0], BatchStarted) and started[0].spec_version == "VST-CMV-2026.1"
    (result,) = decide(given(*started), qc("viability", 75.0), types)
    assert isinstance(result, QcResultRecorded) and result.passed is False


@pytest.mark.parametrize(
    ("test", "described"),
    [
        (ReleaseTest("viability", Rule.AT_LEAST, 70, "%"), "≥ 70 %"),
        (ReleaseTest("endotoxin", Rule.LESS_THAN, 5.0, "EU/mL"), "< 5 EU/mL"),
        (ReleaseTest("mycoplasma_pcr", Rule.NEGATIVE), "negative"),
    ],
)
def test_release_test_describes_its_pass_criterion(test, described):
    assert test.describe() == described


@pytest.mark.parametrize("signer", ["Olga", " olga ", "PAVEL"])
def test_two_person_rule_compares_people_not_spellings(signer):
    assert "two-person rule" in refusal(QC_PASSED, release(name=signer))


def test_command_on_a_batch_whose_product_type_is_no_longer_configured_is_refused():
    with pytest.raises(PreconditionFailed, match="product type not configured"):
        decide(given(*QC_PASSED), qc("viability", 90.0), {})
