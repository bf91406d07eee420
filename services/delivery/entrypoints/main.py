"""Composition root of delivery: `python -m services.delivery.entrypoints.main`.

Ships the units this site owns (picking them from its StorageService), keeps the network's
genealogy for lookback and trace, and raises and executes recalls (holding units back at every
site's storage: CELLBANK_STORAGE_ENDPOINTS, CELLBANK_OIDC_CLIENT_ID/_SECRET).
"""

from __future__ import annotations

from pathlib import Path

from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.storage.v1.client import StorageSites

from services.delivery.app import Delivery
from services.delivery.entrypoints.grpc_servicer import DeliveryServicer, delivery_binding
from services.delivery.policies.recall_triggers import RecallTriggers
from services.delivery.projections.lookback import LookbackProjection
from services.delivery.read_model import DeliveryReadModel
from shared.grpc_server import channel_credentials
from shared.kafka_admin import consumer_lag_by_prefix
from shared.oidc import ClientCredentials
from shared.service_host import Components, ServiceContext, ServiceSpec, run
from shared.untrusted import untrusted_counts

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def build(ctx: ServiceContext) -> Components:
    s = ctx.settings
    read_model = DeliveryReadModel(ctx.pool)
    sites = StorageSites(
        s.storage_endpoints,
        ClientCredentials(s.token_url, s.oidc_client_id, s.oidc_client_secret),
        credentials=channel_credentials(s.tls_ca_file, s.tls_client_cert_file, s.tls_client_key_file),
    )  # fmt: skip
    app = Delivery(
        ctx.store, read_model, sites, s.site_id, ctx.clock,
        recall_every=min(5.0, s.reconcile_seconds),
    )  # fmt: skip

    async def network_status() -> opb.NetworkStatus:
        sites = await read_model.network_status()
        lag = await consumer_lag_by_prefix(s.kafka_bootstrap, sites)
        out = opb.NetworkStatus()
        for site_id in sorted(sites):
            f = sites[site_id]
            out.sites.add(
                site_id=site_id, inventory_by_status=f["inventory"], open_orders=f["open_orders"],
                shipments_in_transit=f["in_transit"], shipments_at_risk=f["at_risk"],
                active_recalls=f["recalls"], consumer_lag=lag.get(site_id, 0),
                inventory_by_product=f["products"],
            )  # fmt: skip
            if (ref := f["hla_reference"]) is not None:
                status = out.sites[-1].hla_reference
                status.release, status.source = ref["release"], ref["source"]
                status.classification_version = ref["classification_version"]
                status.recorded_by = ref["recorded_by"]
                status.checksums.update(dict(c.split("=", 1) for c in ref["checksums"].split()))
                status.recorded_at.FromDatetime(ref["recorded_at"])
        # What this site's consumers refused (they read every topic of the network).
        for row in await untrusted_counts(ctx.pool):
            refused = out.untrusted.add(
                claimed_site=row["claimed_site"], reason=row["reason"], count=row["n"]
            )
            refused.last_at.FromDatetime(row["last_at"])
        out.as_of.FromDatetime(ctx.clock())
        return out

    return Components(
        [delivery_binding(DeliveryServicer(app, read_model, ctx.clock, s.signing_window_seconds))],
        app,
        [app.run_recalls],
        network_status=network_status,
        closers=[sites.close],
    )


SPEC = ServiceSpec(
    "delivery", MIGRATIONS, build, projections=(LookbackProjection,), policies=(RecallTriggers,)
)

if __name__ == "__main__":
    run(SPEC)
