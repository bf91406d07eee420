"""Patient and donor data in events, shown to no one who need not see it.

Redaction rule (what a signed-in user of the operator tools — WatchEvents, GetAggregateHistory, the dashboard — sees of an event):
- Everyone allowed in (the `operator` role) sees the event's metadata — topic, partition,
  offset, site, type, aggregate, version, time, actor, event id — and every payload field that
  says nothing about a patient or a donor as a person: units, DINs, batches, tanks and
  positions, shipments, custody, orders' product and dose, QC results of the product, staff
  signatures.
- Personal fields are replaced by "[redacted]", by class:
  - IDENTITY (patient snapshot and reference, donor reference, names, dates of birth, contact
    details): nobody, whatever the role — the dashboard never needs who a person is.
  - PATIENT_HEALTH (an order's free-text reasons, adverse-event descriptions): nobody; the
    hospital holds them.
  - DONOR_HEALTH (HLA and KIR typing, ABO/Rh, CMV, infectious-marker results and their specimen
    dates, eligibility reasons, deferrals, questionnaire outcome, recall reasons naming a
    marker): only people who also hold the `qa` role, who review exactly these to release units.
  A field is classified by its name at any depth (`hla_alleles`, `abo`, `patient_ref`, …) and,
  for names that are personal only in some events (`status` of a CMV result, `result` of a
  screening test, the envelope's free-text `reason`), by the event's type. The one-line summary
  is rebuilt from the redacted payload, so it cannot leak what the payload hides.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from shared.auth import QA

if TYPE_CHECKING:  # event_watch builds on aggregate_history, which redacts with this module
    from shared.event_watch import Watched

REDACTED = "[redacted]"
IDENTITY = "identity"
PATIENT_HEALTH = "patient-health"
DONOR_HEALTH = "donor-health"
VISIBLE_TO: dict[str, frozenset[str]] = {
    IDENTITY: frozenset(),
    PATIENT_HEALTH: frozenset(),
    DONOR_HEALTH: frozenset({QA}),
}

# Personal wherever they appear (any event, any depth).
FIELD_CLASSES: dict[str, str] = {
    **dict.fromkeys(
        ("patient", "patient_ref", "patient_name", "donor_ref", "donor_name", "name_of_donor",
         "date_of_birth", "birth_date", "dob", "first_name", "last_name", "full_name",
         "nhs_number", "mrn", "email", "phone", "postcode", "home_address",
         "undecodable"),  # a payload of a type unknown here: its bytes could hold anything
        IDENTITY,
    ),
    **dict.fromkeys(
        ("hla", "hla_alleles", "loci", "alleles", "genes", "kir", "abo", "rh", "cmv", "marker",
         "markers", "restricting_allele", "donor_eligibility", "infectious_markers"),
        DONOR_HEALTH,
    ),
}  # fmt: skip

# Personal only in these events (short type name → field → class); "" is the envelope reason.
EVENT_FIELD_CLASSES: dict[str, dict[str, str]] = {
    "ScreeningResultRecorded": {"result": DONOR_HEALTH, "specimen_date": DONOR_HEALTH},
    "PositiveResultAfterCollection": {"specimen_date": DONOR_HEALTH, "": DONOR_HEALTH},
    "CmvSerostatusRecorded": {"status": DONOR_HEALTH},
    "EligibilityDetermined": {"reasons": DONOR_HEALTH, "status": DONOR_HEALTH, "": DONOR_HEALTH},
    "DonorDeferred": {"until": DONOR_HEALTH, "reason": DONOR_HEALTH, "": DONOR_HEALTH},
    "QuestionnaireRecorded": {"passed": DONOR_HEALTH, "": DONOR_HEALTH},
    "HlaTyped": {"resolution": DONOR_HEALTH},
    "ConsentGiven": {"consent_form": IDENTITY},
    "RecallRaised": {"reason": DONOR_HEALTH, "": DONOR_HEALTH},
    "NotificationIssued": {"message": DONOR_HEALTH},
    "OrderPlaced": {"": PATIENT_HEALTH},
    "OrderRejected": {"reason": PATIENT_HEALTH, "": PATIENT_HEALTH},
    "OrderCancelled": {"reason": PATIENT_HEALTH, "": PATIENT_HEALTH},
    "AdverseEventReported": {
        "description": PATIENT_HEALTH,
        "severity": PATIENT_HEALTH,
        "": PATIENT_HEALTH,
    },
    # Matching's reasons for a unit quote the patient's typing (HLA, KIR ligands, CMV).
    "OrderAllocated": {"reasons": PATIENT_HEALTH},
    # Storage copies the hospital's cancel reason, and a recall the donor's marker, into these.
    "ReservationReleased": {"why": PATIENT_HEALTH, "": PATIENT_HEALTH},
    "UnitRecalled": {"why": DONOR_HEALTH, "": DONOR_HEALTH},
    "CollectionRecorded": {
        "eligibility": DONOR_HEALTH,
        "urgent_physician_request": DONOR_HEALTH,
    },
}


def visible(kind: str, roles: frozenset[str]) -> bool:
    return bool(VISIBLE_TO[kind] & roles)


def _redact(value: Any, per_event: dict[str, str], roles: frozenset[str]) -> Any:
    if isinstance(value, list):
        return [_redact(v, per_event, roles) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        kind = FIELD_CLASSES.get(key.lower()) or per_event.get(key)
        out[key] = (
            REDACTED if kind and not visible(kind, roles) else _redact(item, per_event, roles)
        )
    return out


def redact_event(
    event_type: str, payload_json: str, reason: str, roles: frozenset[str]
) -> tuple[str, str]:
    """The payload (JSON) and envelope reason of an event as a caller with `roles` sees them."""
    per_event = EVENT_FIELD_CLASSES.get(event_type.rsplit(".", 1)[-1], {})
    try:
        payload = json.loads(payload_json)
    except ValueError:
        payload = {"undecodable": payload_json}
    shown = json.dumps(_redact(payload, per_event, roles))
    reason_kind = per_event.get("")
    if reason and reason_kind and not visible(reason_kind, roles):
        reason = REDACTED
    return shown, reason


def redact_watched(watched: Watched, roles: frozenset[str]) -> Watched:
    """A watched event with its personal fields (payload and reason) replaced."""
    payload_json, reason = redact_event(
        watched.event.event_type, watched.payload_json, watched.event.reason, roles
    )
    return dataclasses.replace(
        watched,
        event=dataclasses.replace(watched.event, reason=reason),
        payload_json=payload_json,
    )
