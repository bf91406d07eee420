"""Composition root of matching: `python -m services.matching.entrypoints.main`.

Serves the public HospitalService (and HlaReferenceService for operators). Builds its network
inventory with its own projections (from every site's published events, into its own
database) and reserves units at their owning site's StorageService through the storage port's
adapter (CELLBANK_STORAGE_ENDPOINTS, CELLBANK_OIDC_CLIENT_ID/_SECRET).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from cellbank.storage.v1.client import StorageSites

from services.kernel import hla as hla_nomenclature
from services.matching.app import Matching
from services.matching.dependencies import Dependencies, MatchingConfig
from services.matching.domain.ranking import Classification, LigandReference, Transit
from services.matching.entrypoints.grpc_servicer import HospitalServicer, hospital_binding
from services.matching.entrypoints.hla_reference_servicer import (
    HlaReferenceServicer,
    hla_reference_binding,
)
from services.matching.hla_references import HlaReferences
from services.matching.index import CandidateIndex
from services.matching.policies.delivery_policy import DeliveryPolicy
from services.matching.projections.network_inventory import (
    CandidateOriginsProjection,
    CandidateUnitsProjection,
)
from services.matching.read_model import IndexFeed, MatchingReadModel
from services.matching.search import CandidateSearch
from shared.grpc_server import channel_credentials
from shared.oidc import ClientCredentials
from shared.service_host import Components, ServiceContext, ServiceSpec, run

HERE = Path(__file__).resolve().parent.parent
MIGRATIONS = HERE / "migrations"
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


async def warm_hla_nomenclature() -> None:
    # The first hospital request would otherwise wait seconds for mhcgnomes' tables.
    await asyncio.to_thread(hla_nomenclature.warm_up)


def build(ctx: ServiceContext) -> Components:
    s = ctx.settings
    # No reference until `settle_at_start` has read the one on record (no KIR points before).
    table, transit = load_tables(s.classification_file, s.transit_file)
    index = CandidateIndex(table, transit)
    config = MatchingConfig(
        hold=timedelta(seconds=s.hold_seconds), reconcile_every=s.reconcile_seconds
    )
    sites = StorageSites(
        s.storage_endpoints,
        ClientCredentials(s.token_url, s.oidc_client_id, s.oidc_client_secret),
        credentials=channel_credentials(s.tls_ca_file, s.tls_client_cert_file, s.tls_client_key_file),
    )  # fmt: skip
    search = CandidateSearch(
        index, IndexFeed(ctx.pool, index), ctx.clock, max_age=config.index_max_age
    )
    deps = Dependencies(ctx.store, MatchingReadModel(ctx.pool), sites, s.site_id, ctx.clock, config)
    app = Matching(deps, search)
    references = HlaReferences(
        ctx.store, s.site_id, search, table, ctx.health, ctx.clock, configured=s.hla_reference
    )
    return Components(
        [
            hospital_binding(HospitalServicer(app, ctx.clock, s.signing_window_seconds)),
            hla_reference_binding(HlaReferenceServicer(references, ctx.clock)),
        ],
        app,
        app.workers,
        startup=[references.settle_at_start, warm_hla_nomenclature],
        closers=[sites.close],
    )


SPEC = ServiceSpec(
    "matching", MIGRATIONS, build,
    projections=(CandidateUnitsProjection, CandidateOriginsProjection),
    policies=(DeliveryPolicy,),
)  # fmt: skip

if __name__ == "__main__":
    run(SPEC)
