"""Matching records which HLA reference release classifies KIR ligands at its site — once per
change of release, files or rules (restarts with the same release record nothing) — and says
loudly when it has none."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.hospital.v1 import hospital_pb2_grpc as hpb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.demo import auth, random_fin
from deploy.processes import hla_reference_dir
from services.matching.adapters.codec import HLA_REFERENCE
from services.matching.domain.reference import HlaReferenceLoaded, reference_id
from services.matching.entrypoints.main import (
    HLA_REFERENCE_HEALTH,
    load_reference,
    load_tables,
    reference_recorder,
)
from services.matching.entrypoints.main import (
    SPEC as MATCHING_SPEC,
)
from shared.db import drop_database
from shared.postgres_eventstore import PostgresEventStore
from shared.service_host import ServiceContext, ServiceHost
from shared.settings import Settings
from tests.e2e.bank_site import site_settings

pytestmark = pytest.mark.infra
SITE = "HRF"


def context(pool: asyncpg.Pool) -> ServiceContext:
    settings = Settings(site_id=SITE, service="matching", kafka_bootstrap="-", database_url="-")
    store = PostgresEventStore(pool, SITE, service="matching")
    return ServiceContext(settings, pool, store, lambda: datetime.now(UTC))


async def start(pool: asyncpg.Pool, directory: str) -> list[HlaReferenceLoaded]:
    """What a start of matching with this CELLBANK_HLA_REFERENCE leaves in its store."""
    reference, source = load_reference(directory)
    table, _ = load_tables(reference=reference)
    ctx = context(pool)
    stopped = asyncio.Event()
    stopped.set()  # the recorder records, then waits for the service to stop
    await asyncio.wait_for(reference_recorder(ctx, table, source)(stopped), 30)
    events = await ctx.store.load(reference_id(SITE))
    return [HLA_REFERENCE.codec.decode(e.event_type, e.payload) for e in events]


async def test_a_start_without_a_reference_is_recorded_and_logged_loudly(pool, caplog):
    with caplog.at_level(logging.ERROR):
        (loaded,) = await start(pool, "")
    assert loaded.release == "" and loaded.checksums == ()
    assert loaded.classification_version == "no-hla-reference+kir-ligand-2+rank-2"
    assert "KIR-ligand points are off" in loaded.source
    assert any("no HLA reference configured" in r.getMessage() for r in caplog.records)


async def test_an_unusable_directory_is_said_and_recorded_as_none(pool, tmp_path):
    (loaded,) = await start(pool, str(tmp_path))
    assert loaded.release == ""
    assert "unusable" in loaded.source and "missing" in loaded.source


async def test_each_change_of_release_is_recorded_once(pool):
    directory = hla_reference_dir()
    assert directory, "the tests read ../shared/reference (or CELLBANK_HLA_REFERENCE)"
    await start(pool, "")
    history = await start(pool, directory)
    assert [e.release for e in history] == ["", "3.58.0"]
    assert history[1].classification_version == "ipd-imgt-hla-3.58.0+kir-ligand-2+rank-2"
    assert {c.file for c in history[1].checksums} >= {"A_prot.fasta", "Allelelist.txt"}
    assert await start(pool, directory) == history  # a restart with the same release: nothing
    stored = await context(pool).store.load(reference_id(SITE))
    assert stored[1].actor == f"{SITE} matching (CELLBANK_HLA_REFERENCE)"
    assert stored[1].reason == "HLA reference at start"


async def test_matching_without_a_reference_serves_and_says_so_everywhere(endpoints):
    """Health detail NOT_SERVING (the service itself SERVING), every search notes it, the
    version says it, and a candidate's KIR-ligand reason says why it scored nothing."""
    settings = dataclasses.replace(
        site_settings(endpoints, "HRN", "matching", random_fin()), hla_reference=""
    )
    host = ServiceHost(MATCHING_SPEC, settings)
    await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            part = await health.Check(health_pb2.HealthCheckRequest(service=HLA_REFERENCE_HEALTH))
            whole = await health.Check(health_pb2.HealthCheckRequest())
            assert part.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert whole.status == health_pb2.HealthCheckResponse.SERVING
            found = await hpb_grpc.HospitalServiceStub(channel).SearchInventory(
                hpb.SearchInventoryRequest(
                    patient=hpb.PatientProfile(
                        patient_ref="PT-1", weight_kg=70,
                        hla_alleles=["A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02",
                                     "C*07:01"],
                    ),
                    product_type=hpb.PRODUCT_TYPE_NK, dose_cells_per_kg_min=1e6,
                    dose_cells_per_kg_max=1e7,
                ),
                metadata=auth("hosp-h1"),
            )  # fmt: skip
        assert found.classification_version == "no-hla-reference+kir-ligand-2+rank-2"
        assert found.notes == [
            "KIR-ligand points are off: no HLA reference release is configured at this site"
            " (CELLBANK_HLA_REFERENCE)"
        ]
    finally:
        await host.stop(grace=0)
        await drop_database(endpoints.database_url, settings.database_name)
