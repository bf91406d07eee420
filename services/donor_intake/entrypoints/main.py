"""Composition root of donor_intake: `python -m services.donor_intake.entrypoints.main`."""

from __future__ import annotations

import os
from pathlib import Path

from services.donor_intake.app import DonorIntake
from services.donor_intake.domain.eligibility import EligibilityRules
from services.donor_intake.entrypoints.grpc_servicer import (
    DonorIntakeServicer,
    donor_intake_binding,
)
from services.donor_intake.projections.donors import DonorsProjection
from services.donor_intake.read_model import DonorReadModel
from shared.service_host import Components, ServiceContext, ServiceSpec, run

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# ISBT 128 facility identification numbers of the demo sites (CELLBANK_FACILITY_ID overrides).
DEFAULT_FACILITIES = {"LON": "G1001", "MAN": "G1002", "EDI": "G1003"}


def eligibility_rules() -> EligibilityRules:
    """The specimen window is configuration (e.g. up to 30 days before for apheresis donors)."""
    return EligibilityRules(
        days_before=int(os.environ.get("CELLBANK_SPECIMEN_DAYS_BEFORE", "7")),
        days_after=int(os.environ.get("CELLBANK_SPECIMEN_DAYS_AFTER", "7")),
    )


def build(ctx: ServiceContext) -> Components:
    facility = ctx.settings.facility_id or DEFAULT_FACILITIES.get(ctx.settings.site_id, "")
    app = DonorIntake(ctx.store, facility_id=facility, rules=eligibility_rules())
    servicer = DonorIntakeServicer(app, DonorReadModel(ctx.pool), ctx.clock)
    return Components([donor_intake_binding(servicer)], app)


SPEC = ServiceSpec("donor_intake", MIGRATIONS, build, projections=(DonorsProjection,))

if __name__ == "__main__":
    run(SPEC)
