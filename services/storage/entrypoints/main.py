"""Composition root of storage: `python -m services.storage.entrypoints.main`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from services.storage.adapters.as_of import FOLDS
from services.storage.app import Storage
from services.storage.entrypoints.grpc_servicer import StorageServicer, storage_binding
from services.storage.entrypoints.scheduler import DeadlineScheduler
from services.storage.entrypoints.telemetry import TelemetryPublisher
from services.storage.projections.read_models import InventoryProjection, NetworkFactsProjection
from services.storage.read_model import StorageReadModel
from shared.service_host import Components, ServiceContext, ServiceSpec, run

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def build(ctx: ServiceContext) -> Components:
    site = ctx.settings.site_id
    read_model = StorageReadModel(ctx.pool)
    app = Storage(ctx.store, read_model, site)
    telemetry = TelemetryPublisher(ctx.settings.kafka_bootstrap)
    scheduler = DeadlineScheduler(app, read_model, site, ctx.clock)
    servicer = StorageServicer(
        app, read_model, telemetry, site, ctx.clock, ctx.settings.signing_window_seconds,
        timedelta(seconds=ctx.settings.max_hold_seconds),
    )  # fmt: skip
    return Components([storage_binding(servicer)], app, [telemetry.run, scheduler.run])


SPEC = ServiceSpec(
    "storage", MIGRATIONS, build, projections=(NetworkFactsProjection, InventoryProjection),
    folds=FOLDS,
)  # fmt: skip

if __name__ == "__main__":
    run(SPEC)
