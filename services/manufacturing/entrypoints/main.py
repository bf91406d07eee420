"""Composition root of manufacturing: `python -m services.manufacturing.entrypoints.main`."""

from __future__ import annotations

import os
from pathlib import Path

from services.manufacturing.app import Manufacturing
from services.manufacturing.domain.product_types import load_product_types
from services.manufacturing.entrypoints.grpc_servicer import (
    ManufacturingServicer,
    manufacturing_binding,
)
from services.manufacturing.projections.read_models import BatchesProjection, DonorFactsProjection
from services.manufacturing.read_model import ManufacturingReadModel
from shared.service_host import Components, ServiceContext, ServiceSpec, run

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def build(ctx: ServiceContext) -> Components:
    configured = os.environ.get("CELLBANK_PRODUCT_TYPES_FILE")
    product_types = load_product_types(Path(configured) if configured else None)
    read_model = ManufacturingReadModel(ctx.pool)
    app = Manufacturing(ctx.store, read_model, product_types, ctx.settings.site_id)
    servicer = ManufacturingServicer(
        app, read_model, ctx.clock, ctx.settings.signing_window_seconds
    )
    return Components([manufacturing_binding(servicer)], app)


SPEC = ServiceSpec(
    "manufacturing", MIGRATIONS, build, projections=(DonorFactsProjection, BatchesProjection)
)

if __name__ == "__main__":
    run(SPEC)
