"""Composition root of matching: `python -m services.matching.entrypoints.main`.

Serves the public HospitalService. Reads every site's inventory with storage's projections
(into its own database) and reserves units at their owning site's StorageService
(CELLBANK_STORAGE_ENDPOINTS, CELLBANK_SERVICE_TOKEN).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import timedelta
from pathlib import Path

import asyncpg

from services.matching.adapters.codec import HLA_REFERENCE
from services.matching.adapters.hla_release import ReleaseError, load_release
from services.matching.app import Matching, MatchingConfig
from services.matching.domain.kir_ligand import HlaReference
from services.matching.domain.ranking import Classification, LigandReference, Transit
from services.matching.domain.reference import RecordReference, decide, reference_id
from services.matching.entrypoints.grpc_servicer import HospitalServicer, hospital_binding
from services.matching.index import CandidateIndex
from services.matching.projections.delivery_policy import DeliveryPolicy
from services.matching.read_model import IndexFeed, MatchingReadModel
from services.storage.client import StorageGateway
from services.storage.projections.read_models import InventoryProjection, NetworkFactsProjection
from shared.commands import Meta, execute
from shared.errors import ConcurrencyConflict
from shared.grpc_server import channel_credentials
from shared.service_host import Components, ServiceContext, ServiceSpec, Worker, run

log = logging.getLogger(__name__)
# Health check name saying whether KIR ligands can be classified (NOT_SERVING: no reference).
HLA_REFERENCE_HEALTH = "cellbank.matching.v1.HlaReference"
HERE = Path(__file__).resolve().parent.parent
MIGRATIONS = HERE / "migrations"
STORAGE_MIGRATIONS = HERE.parent / "storage" / "migrations"
TABLES = HERE / "tables"
DEFAULT_CLASSIFICATION = TABLES / "ranking-2.json"
DEFAULT_TRANSIT = TABLES / "transit.json"


def load_tables(
    classification_file: str = "", transit_file: str = "", reference: LigandReference | None = None
) -> tuple[Classification, Transit]:
    table = Classification.from_dict(
        json.loads(Path(classification_file or DEFAULT_CLASSIFICATION).read_text()), reference
    )
    transit = Transit.from_dict(json.loads(Path(transit_file or DEFAULT_TRANSIT).read_text()))
    return table, transit


def load_reference(directory: str) -> tuple[HlaReference | None, str]:
    """The configured release, or None with the reason (logged loudly: no KIR-ligand points)."""
    if not directory:
        why = "no HLA reference configured (CELLBANK_HLA_REFERENCE): KIR-ligand points are off"
    else:
        try:
            reference = load_release(Path(directory))
        except (ReleaseError, OSError) as exc:
            why = f"HLA reference {directory} unusable ({exc}): KIR-ligand points are off"
        else:
            log.info("HLA reference IPD-IMGT/HLA %s from %s", reference.release, directory)
            return reference, directory
    log.error(why)
    return None, why


def reference_recorder(ctx: ServiceContext, table: Classification, source: str) -> Worker:
    """Records, once at start, which release classifies KIR ligands here (if it changed)."""

    async def record(stop: asyncio.Event) -> None:
        reference = table.reference
        command = RecordReference(
            release=getattr(reference, "release", ""),
            classification_version=table.version,
            checksums=dict(getattr(reference, "checksums", {})),
            source=source,
        )
        actor = f"{ctx.settings.site_id} matching (CELLBANK_HLA_REFERENCE)"
        reason = "HLA reference at start" if reference else "no HLA reference at start"
        delay = 0.5
        while not stop.is_set():
            try:
                await execute(
                    ctx.store, HLA_REFERENCE, reference_id(ctx.settings.site_id),
                    lambda state: decide(state, command), Meta(actor, reason, ctx.clock()),
                )  # fmt: skip
                break
            except (ConcurrencyConflict, OSError, asyncpg.PostgresError) as exc:
                # the database is briefly away, or another instance recorded first: try again
                log.warning("recording the HLA reference failed, retrying: %r", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)
        await stop.wait()  # a worker that returns would stop the service

    return record


def build(ctx: ServiceContext) -> Components:
    s = ctx.settings
    reference, source = load_reference(s.hla_reference)
    table, transit = load_tables(s.classification_file, s.transit_file, reference)
    index = CandidateIndex(table, transit)
    gateway = StorageGateway(
        s.storage_endpoints, s.service_token,
        credentials=channel_credentials(s.tls_ca_file, s.tls_client_cert_file, s.tls_client_key_file),
    )  # fmt: skip
    app = Matching(
        ctx.store, MatchingReadModel(ctx.pool), index, IndexFeed(ctx.pool, index), gateway,
        table, transit, s.site_id, ctx.clock,
        MatchingConfig(
            hold=timedelta(seconds=s.hold_seconds), reconcile_every=s.reconcile_seconds
        ),
    )  # fmt: skip
    return Components(
        [hospital_binding(HospitalServicer(app, ctx.clock))],
        [NetworkFactsProjection(), InventoryProjection(), DeliveryPolicy(app)],
        [reference_recorder(ctx, table, source), app.run_index, app.run_reconciler],
        health_details={HLA_REFERENCE_HEALTH: reference is not None},
    )


SPEC = ServiceSpec("matching", MIGRATIONS, build, borrowed_migrations=(STORAGE_MIGRATIONS,))

if __name__ == "__main__":
    run(SPEC)
