"""Which HLA reference release matching classifies KIR ligands with: a site adopts its first
configured release (recorded by the service), keeps the release on record across restarts,
moves to another only by an operator's approval (recorded: who, when, why), and says loudly
when it has none."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
import pytest
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.hospital.v1 import hospital_pb2_grpc as hpb_grpc
from cellbank.matching.v1 import hla_reference_service_pb2 as rpb
from cellbank.matching.v1 import hla_reference_service_pb2_grpc as rpb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy import cli
from deploy.demo import auth, random_fin
from deploy.processes import hla_reference_dir
from services.matching.adapters.codec import HLA_REFERENCE
from services.matching.domain.ranking import Classification
from services.matching.domain.reference import HlaReferenceLoaded, reference_id
from services.matching.entrypoints.main import SPEC as MATCHING_SPEC
from services.matching.entrypoints.main import load_tables
from services.matching.hla_references import HLA_REFERENCE_HEALTH, HlaReferences
from services.matching.tests.test_hla_release_files import write_release
from shared.chain_key import ChainKey
from shared.commands import Meta
from shared.db import drop_database
from shared.errors import PreconditionFailed
from shared.postgres_eventstore import PostgresEventStore
from shared.service_host import HealthDetails, ServiceHost
from tests.e2e.bank_site import site_settings

pytestmark = pytest.mark.infra
SITE = "HRF"
DEV = hla_reference_dir()
OP = auth("op-alice")


class Ranker:
    def __init__(self, table: Classification) -> None:
        self.table = table

    def use_table(self, table: Classification) -> None:
        self.table = table


def references(pool: asyncpg.Pool, configured: str) -> HlaReferences:
    table, _ = load_tables()
    store = PostgresEventStore(pool, SITE, service="matching", chain_key=ChainKey.generate())
    return HlaReferences(
        store, SITE, Ranker(table), table, HealthDetails(), lambda: datetime.now(UTC), configured
    )


async def history(pool: asyncpg.Pool) -> list[HlaReferenceLoaded]:
    events = await PostgresEventStore(pool, SITE, service="matching").load(reference_id(SITE))
    return [HLA_REFERENCE.codec.decode(e.event_type, e.payload) for e in events]


async def start(pool: asyncpg.Pool, configured: str) -> HlaReferences:
    """A start of matching with this CELLBANK_HLA_REFERENCE."""
    refs = references(pool, configured)
    await refs.settle_at_start()
    return refs


async def test_a_start_without_a_reference_is_recorded_and_logged_loudly(pool, caplog):
    with caplog.at_level(logging.ERROR):
        refs = await start(pool, "")
    (loaded,) = await history(pool)
    assert loaded.release == "" and loaded.checksums == ()
    assert loaded.classification_version == "no-hla-reference+kir-ligand-2+rank-2"
    assert "KIR-ligand points are off" in loaded.source
    assert any("no HLA reference configured" in r.getMessage() for r in caplog.records)
    assert refs.reference is None and not refs.health[HLA_REFERENCE_HEALTH]


async def test_an_unusable_directory_is_said_and_recorded_as_none(pool, tmp_path):
    await start(pool, str(tmp_path))
    (loaded,) = await history(pool)
    assert loaded.release == ""
    assert "unusable" in loaded.source and "missing" in loaded.source


async def test_the_first_release_is_adopted_and_a_restart_records_nothing(pool):
    await start(pool, "")
    refs = await start(pool, DEV)
    assert [e.release for e in await history(pool)] == ["", "3.58.0"]
    assert refs.reference is not None and refs.health[HLA_REFERENCE_HEALTH]
    assert refs.app.table.version == "ipd-imgt-hla-3.58.0+kir-ligand-2+rank-2"
    await start(pool, DEV)
    loaded = await history(pool)
    assert len(loaded) == 2  # a restart with the same release: nothing
    assert {c.file for c in loaded[1].checksums} >= {"A_prot.fasta", "Allelelist.txt"}
    stored = await PostgresEventStore(pool, SITE, service="matching").load(reference_id(SITE))
    assert stored[1].actor == f"{SITE} matching (CELLBANK_HLA_REFERENCE)"
    assert stored[1].reason == "HLA reference at start"


async def test_another_configured_release_is_not_used_without_an_operator(pool, tmp_path):
    await start(pool, DEV)
    other = write_release(tmp_path / "9.99.0")
    refs = await start(pool, str(other))  # the configuration now names another release
    assert refs.reference is not None and refs.reference.release == "3.58.0"  # still on record
    assert len(await history(pool)) == 1


async def test_an_operator_approves_another_release_which_stays_in_use(pool, tmp_path):
    refs = await start(pool, DEV)
    other = str(write_release(tmp_path / "9.99.0"))
    meta = Meta("operator:alice", "validated against our 2027 test panel", datetime.now(UTC))
    with pytest.raises(PreconditionFailed, match=r"holds IPD-IMGT/HLA 9\.99\.0, not 3\.59\.0"):
        await refs.approve(other, "3.59.0", meta)
    await refs.approve(other, "9.99.0", meta)
    assert refs.app.table.version == "ipd-imgt-hla-9.99.0+kir-ligand-2+rank-2"
    stored = await PostgresEventStore(pool, SITE, service="matching").load(reference_id(SITE))
    assert (stored[-1].actor, stored[-1].reason) == (meta.actor, meta.reason)
    again = await start(pool, DEV)  # restart, configuration unchanged: the approved one stays
    assert again.reference is not None and again.reference.release == "9.99.0"


async def test_an_approved_release_whose_files_changed_is_not_used(pool, tmp_path):
    refs = await start(pool, DEV)
    other = write_release(tmp_path / "r")
    meta = Meta("operator:alice", "validated", datetime.now(UTC))
    await refs.approve(str(other), "9.99.0", meta)
    (other / "hla_nom_p.txt").write_text("C*;03:04:01:01;03:04P\nC*;03:07;03:07P\n")
    again = await start(pool, DEV)
    assert again.reference is None and "cellbank hla approve" in again.source
    assert not again.health[HLA_REFERENCE_HEALTH]


async def test_approval_over_grpc_is_operators_only_and_names_refused_fields(
    endpoints, tmp_path, monkeypatch
):
    """And a matching without a reference serves: health detail NOT_SERVING (the service
    SERVING), every search notes it; once approved, all of that turns."""
    settings = dataclasses.replace(
        site_settings(endpoints, "HRN", "matching", random_fin()), hla_reference=""
    )
    host = ServiceHost(MATCHING_SPEC, settings)
    await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            hla = rpb_grpc.HlaReferenceServiceStub(channel)
            hospital = hpb_grpc.HospitalServiceStub(channel)

            async def part() -> int:
                request = health_pb2.HealthCheckRequest(service=HLA_REFERENCE_HEALTH)
                return (await health.Check(request)).status

            assert await part() == health_pb2.HealthCheckResponse.NOT_SERVING
            whole = await health.Check(health_pb2.HealthCheckRequest())
            assert whole.status == health_pb2.HealthCheckResponse.SERVING
            found = await hospital.SearchInventory(search_request(), metadata=auth("hosp-h1"))
            assert found.classification_version == "no-hla-reference+kir-ligand-2+rank-2"
            assert found.notes == [
                "KIR-ligand points are off: no HLA reference release is configured at this site"
                " (CELLBANK_HLA_REFERENCE)"
            ]

            approve = rpb.ApproveHlaReferenceRequest(
                directory=DEV, release="3.58.0", reason="validated"
            )
            for request, metadata, code in [
                (approve, auth("hosp-h1"), grpc.StatusCode.PERMISSION_DENIED),
                (approve, auth("qa-quinn"), grpc.StatusCode.PERMISSION_DENIED),
                (rpb.ApproveHlaReferenceRequest(directory=DEV, release="3.58.0"), OP,
                 grpc.StatusCode.INVALID_ARGUMENT),
                (rpb.ApproveHlaReferenceRequest(directory=DEV, release="three", reason="x"), OP,
                 grpc.StatusCode.INVALID_ARGUMENT),
                (rpb.ApproveHlaReferenceRequest(directory=str(tmp_path), release="3.58.0",
                 reason="x"), OP, grpc.StatusCode.FAILED_PRECONDITION),
            ]:  # fmt: skip
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await hla.ApproveHlaReference(request, metadata=metadata)
                assert refused.value.code() == code, refused.value.details()
            assert (
                await hla.GetHlaReference(rpb.GetHlaReferenceRequest(), metadata=OP)
            ).release == ""

            in_use = await hla.ApproveHlaReference(approve, metadata=OP)
            assert (in_use.release, in_use.recorded_by, in_use.reason) == (
                "3.58.0", "operator:alice", "validated",
            )  # fmt: skip
            assert in_use.classification_version == "ipd-imgt-hla-3.58.0+kir-ligand-2+rank-2"
            assert {c.file for c in in_use.checksums} >= {"C_prot.fasta", "Allelelist.txt"}
            assert await part() == health_pb2.HealthCheckResponse.SERVING
            found = await hospital.SearchInventory(search_request(), metadata=auth("hosp-h1"))
            assert found.classification_version == in_use.classification_version
            assert not found.notes

        # The same through the operator CLI: show, a refused approval, an approval, show.
        endpoints_file = tmp_path / "endpoints.json"
        endpoints_file.write_text(
            json.dumps({"sites": {"HRN": {"matching": f"127.0.0.1:{host.port}"}},
                        "identity": endpoints.identity.as_json()})
        )  # fmt: skip
        base = ["--endpoints", str(endpoints_file)]
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # its own token cache
        signed_in = await cellbank(
            "login", "--username", "alice", "--password", "demo-alice", *base
        )
        assert signed_in[0] == 0, signed_in[2]
        shown = await cellbank("hla", "show", "--json", *base)
        assert shown[0] == 0, shown[2]
        assert json.loads(shown[1])["release"] == "3.58.0"
        other = write_release(tmp_path / "next")
        wrong = await cellbank(
            "hla", "approve", "--site", "HRN", "--directory", str(other), "--release", "3.59.0",
            "--reason", "new release", *base,
        )  # fmt: skip
        assert wrong[0] == 1 and "holds IPD-IMGT/HLA 9.99.0, not 3.59.0" in wrong[2]
        approved = await cellbank(
            "hla", "approve", "--site", "HRN", "--directory", str(other), "--release", "9.99.0",
            "--reason", "validated on our panel", *base,
        )  # fmt: skip
        assert approved[0] == 0, approved[2]
        assert "IPD-IMGT/HLA 9.99.0" in approved[1] and "operator:alice" in approved[1]
        shown = await cellbank("hla", "show", "--site", "HRN", *base)
        assert shown[0] == 0 and "validated on our panel" in shown[1]
    finally:
        await host.stop(grace=0)
        await drop_database(endpoints.database_url, settings.database_name)


async def cellbank(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def search_request() -> hpb.SearchInventoryRequest:
    alleles = ["A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*07:01"]
    return hpb.SearchInventoryRequest(
        patient=hpb.PatientProfile(patient_ref="PT-1", weight_kg=70, hla_alleles=alleles),
        product_type=hpb.PRODUCT_TYPE_NK, dose_cells_per_kg_min=1e6, dose_cells_per_kg_max=1e7,
    )  # fmt: skip


def test_the_dev_release_is_there():
    assert DEV and Path(DEV).is_dir()
