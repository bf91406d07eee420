"""The batch aggregate: decide(state, command, product types) -> events; evolve(state, event)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, timedelta

from services.kernel.hla import parse_allele
from services.kernel.isbt128 import MAX_DIVISIONS, expired, validate_din
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
    StartBatch,
    Step,
    SterilityResultRecorded,
    UnitRecord,
)
from services.manufacturing.domain.product_types import ProductType
from shared.errors import InvalidArgument, NotFound, PreconditionFailed

Command = StartBatch | RecordProcessStep | RecordQcResult | ReleaseBatch | RecordSterilityResult


def decide(
    state: Batch, command: Command, product_types: Mapping[str, ProductType]
) -> Sequence[BatchEvent]:
    """The events a command causes, or a typed refusal naming the rule (nothing written)."""
    if isinstance(command, StartBatch):
        return start(state, command, product_types)
    if state.status is BatchStatus.NONE:
        raise NotFound("batch not started")
    product = product_types.get(state.product_type)
    if product is None:
        raise PreconditionFailed("product type not configured", state.product_type)
    match command:
        case RecordProcessStep():
            return record_step(state, command)
        case RecordQcResult():
            return record_qc(state, command, product)
        case ReleaseBatch():
            return release(state, command, product)
        case RecordSterilityResult():
            return record_sterility(state, command)
    raise TypeError(f"unknown command {command!r}")


def start(
    state: Batch, command: StartBatch, product_types: Mapping[str, ProductType]
) -> list[BatchEvent]:
    if state.status is not BatchStatus.NONE:
        raise PreconditionFailed("batch already started", command.batch_id)
    validate_din(command.din)
    if not command.operator.strip():
        raise InvalidArgument("operator", "the batch records who runs it (two-person rule)")
    product = product_types.get(command.product_type)
    if product is None:
        raise InvalidArgument("product_type", f"unknown; configured: {', '.join(product_types)}")
    return [
        BatchStarted(
            command.batch_id,
            command.din,
            command.donor_id,
            product.code,
            product.spec_version,
            command.operator,
        )
    ]


def record_step(state: Batch, command: RecordProcessStep) -> list[BatchEvent]:
    if state.status is BatchStatus.RELEASED:
        raise PreconditionFailed("batch already released", "process steps are closed")
    if not math.isfinite(command.viable_cells) or command.viable_cells < 0:
        raise InvalidArgument("viable_cells", "must be a number >= 0")
    if not 0 <= command.viability_pct <= 100:
        raise InvalidArgument("viability_pct", "must be 0–100")
    if command.step is Step.EXPANSION_DAY and not 1 <= command.day <= 60:
        raise InvalidArgument("day", "expansion days count 1–60")
    if not command.performed_by:
        raise InvalidArgument("performed_by", "every step records its operator")
    return [
        ProcessStepRecorded(
            command.step.value,
            command.day,
            command.performed_by,
            command.performed_at,
            command.viable_cells,
            command.viability_pct,
        )
    ]


def record_qc(state: Batch, command: RecordQcResult, product: ProductType) -> list[BatchEvent]:
    test = product.test(command.test)
    if not test.required_for_release:
        raise InvalidArgument(
            "test", f"{test.name} is a follow-up; record it with RecordSterilityResult"
        )
    if state.status is BatchStatus.RELEASED:
        raise PreconditionFailed("batch already released", "release QC is closed")
    if command.value is not None and (not math.isfinite(command.value) or command.value < 0):
        raise InvalidArgument("value", "must be a number >= 0")
    passed = test.passes(command.value, command.text)
    return [QcResultRecorded(test.name, command.value, command.text, passed, command.tested_at)]


def person(name: str) -> str:
    """People compare by name, ignoring case and surrounding space ("Olga " is "olga")."""
    return name.strip().casefold()


def expiry(state: Batch, product: ProductType) -> date | None:
    """The units' expiry: the product's stability counted from cryopreservation (never from
    release, so a slow QA signature does not lengthen shelf life); None if not cryopreserved.
    The first CRYOPRESERVATION step counts if several were recorded: the cells froze then."""
    frozen = [s.performed_at for s in state.steps if s.step == Step.CRYOPRESERVATION.value]
    if not frozen:
        return None
    return min(frozen).astimezone(UTC).date() + timedelta(days=product.stability_days)


def release_failures(state: Batch, command: ReleaseBatch, product: ProductType) -> list[str]:
    """Every release rule the batch breaks (empty = releasable)."""
    failures: list[str] = []
    if state.status is BatchStatus.RELEASED:
        failures.append("batch already released")
    if command.signer_role != "qa":
        failures.append(f"signing role: release needs a QA signature, not {command.signer_role!r}")
    signer = {person(command.signature.name), person(command.signer_username)} - {""}
    if not command.signature.name.strip():
        failures.append("signature: the signer's name is required")
    elif signer & {person(name) for name in state.operators}:
        failures.append(
            f"two-person rule: {command.signature.name} ran this batch and cannot release it"
        )
    if not command.signature.meaning.strip():
        failures.append("signature: the meaning of the signature is required")
    if command.donor_eligibility != "ELIGIBLE" and not command.urgent_physician_request.strip():
        failures.append(
            f"donor eligibility: donor is {command.donor_eligibility}"
            " (release needs ELIGIBLE, or a recorded urgent-need physician request)"
        )
    for test in product.tests:
        if not test.required_for_release:
            continue
        result = state.qc.get(test.name)
        if result is None:
            failures.append(f"QC {test.name}: no result")
        elif not result.passed:
            shown = f"{result.value:g}" if result.value is not None else repr(result.text)
            failures.append(f"QC {test.name}: {shown} does not meet {test.describe()}")
    expires_on = expiry(state, product)
    if expires_on is None:
        failures.append(
            "cryopreservation: no CRYOPRESERVATION step recorded (expiry counts from it)"
        )
    elif expired(expires_on, command.signature.signed_at.astimezone(UTC).date()):
        failures.append(f"stability: the units expired on {expires_on.isoformat()}")
    if not command.units:
        failures.append("units: at least one unit (dose) is required")
    return failures


def release(state: Batch, command: ReleaseBatch, product: ProductType) -> list[BatchEvent]:
    if len(command.units) > MAX_DIVISIONS:
        raise InvalidArgument(
            "units", f"a batch is divided into at most {MAX_DIVISIONS} units (A0…Z0)"
        )
    for i, unit in enumerate(command.units):
        nk, cd3, volume = unit.viable_nk_cells, unit.cd3_cells, unit.volume_ml
        if not all(map(math.isfinite, (nk, cd3, volume))) or nk <= 0 or volume <= 0 or cd3 < 0:
            raise InvalidArgument(
                f"units[{i}]", "viable NK cells and volume must be > 0, CD3+ cells >= 0"
            )
        if unit.restricting_allele:
            parse_allele(unit.restricting_allele, field=f"units[{i}].restricting_allele")
    failures = release_failures(state, command, product)
    expires = expiry(state, product)
    if failures or expires is None:  # no expiry: a failure names the missing cryopreservation
        raise PreconditionFailed("release refused", "; ".join(failures))
    urgent = command.donor_eligibility != "ELIGIBLE"
    count = len(command.units)
    units = tuple(
        UnitRecord(
            unit_id=f"{state.din}-{product.product_code(division, count)}",
            din=state.din,
            product_code=product.product_code(division, count),
            division=division,
            viable_nk_cells=spec.viable_nk_cells,
            cd3_cells=spec.cd3_cells,
            volume_ml=spec.volume_ml,
            expires_on=expires,
            status="RELEASED",
            segregated=urgent,
            labels=NOT_EVALUATED_LABELS if urgent else (),
            restricting_allele=spec.restricting_allele,
        )
        for division, spec in enumerate(command.units, start=1)
    )
    return [
        BatchReleased(
            command.signature,
            command.donor_eligibility,
            command.urgent_physician_request.strip() if urgent else "",
            units,
        )
    ]


def record_sterility(state: Batch, command: RecordSterilityResult) -> list[BatchEvent]:
    if state.status is not BatchStatus.RELEASED:
        raise PreconditionFailed(
            "sterility follow-up", "the 14-day sterility is recorded after release"
        )
    events: list[BatchEvent] = [SterilityResultRecorded(command.positive, command.specimen_date)]
    if command.positive:
        events.append(BatchSterilityFailed(state.din, tuple(u.unit_id for u in state.units)))
    return events


def evolve(state: Batch, event: BatchEvent) -> Batch:
    """Apply one event; total over every event type (replay must never fail)."""
    replace = dataclasses.replace
    match event:
        case BatchStarted():
            return replace(
                state,
                batch_id=event.batch_id,
                din=event.din,
                donor_id=event.donor_id,
                product_type=event.product_type,
                status=BatchStatus.IN_PROCESS,
                operators=frozenset({event.operator}),
            )
        case ProcessStepRecorded():
            return replace(
                state, steps=(*state.steps, event), operators=state.operators | {event.performed_by}
            )
        case QcResultRecorded():
            return replace(state, qc={**state.qc, event.test: event})
        case BatchReleased():
            return replace(state, status=BatchStatus.RELEASED, units=event.units)
        case SterilityResultRecorded():
            return replace(state, sterility_positive=event.positive)
        case BatchSterilityFailed():
            return state
    raise TypeError(f"unknown event {event!r}")
