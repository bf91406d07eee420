"""shared/redaction.py: what operators and QA see of patients and donors in the operator tools
(WatchEvents, GetAggregateHistory, the dashboard)."""

from __future__ import annotations

import json

import pytest

from shared.auth import OPERATOR, QA
from shared.redaction import REDACTED, redact_event

OP = frozenset({OPERATOR})
OP_QA = frozenset({OPERATOR, QA})


@pytest.mark.parametrize(
    ("event_type", "payload", "reason", "hidden", "kept"),
    [
        ("cellbank.storage.v1.ReservationReleased",
         {"order_id": "O-1", "why": "patient relapsed before infusion"},
         "order cancelled: patient relapsed", ["why"], ["order_id"]),
        ("cellbank.matching.v1.OrderAllocated",
         {"units": [{"unit_id": "U-1", "reasons": ["C1/C2: KIR2DL1 ligand missing in patient"]}]},
         "allocated", ["units.0.reasons"], ["units.0.unit_id"]),
        ("cellbank.matching.v1.AdverseEventReported",
         {"report_id": "AE-1", "description": "grade 3 CRS", "severity": "SEVERE"},
         "reported", ["description", "severity"], ["report_id"]),
        ("cellbank.matching.v1.OrderPlaced",
         {"patient": {"patient_ref": "PT-1", "hla_alleles": ["A*02:01"]}, "dose_min": 5e6},
         "order for PT-1", ["patient"], ["dose_min"]),
    ],
)  # fmt: skip
def test_patient_data_is_shown_to_nobody(event_type, payload, reason, hidden, kept):
    for roles in (OP, OP_QA):
        shown_json, shown_reason = redact_event(event_type, json.dumps(payload), reason, roles)
        shown = json.loads(shown_json)
        for path in hidden:
            assert _at(shown, path) == REDACTED, (roles, path)
        for path in kept:
            assert _at(shown, path) == _at(payload, path)
        if event_type.endswith(("ReservationReleased", "OrderPlaced")):
            assert shown_reason == REDACTED


@pytest.mark.parametrize(
    ("event_type", "payload", "field"),
    [
        ("cellbank.storage.v1.UnitRecalled", {"why": "donor D-1 positive for HIV"}, "why"),
        ("cellbank.donor.v1.EligibilityDetermined", {"status": "INELIGIBLE"}, "status"),
        ("cellbank.donor.v1.HlaTyped", {"hla": {"A": ["A*02:01"]}}, "hla"),
    ],
)
def test_donor_health_is_for_qa_only(event_type, payload, field):
    as_operator, _ = redact_event(event_type, json.dumps(payload), "", OP)
    as_qa, _ = redact_event(event_type, json.dumps(payload), "", OP_QA)
    assert json.loads(as_operator)[field] == REDACTED
    assert json.loads(as_qa)[field] == payload[field]


def _at(value, path: str):
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value
