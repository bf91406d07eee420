"""Access: every RPC of every service refuses a call without a token or with a forged one;
a hospital reaches only the public API (and only its own orders); operators read streams but
cannot place orders. TLS, and mTLS for site-to-site calls, with generated test certificates."""

from __future__ import annotations

import dataclasses
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from cellbank.delivery.v1 import delivery_service_pb2
from cellbank.donor.v1 import donor_service_pb2
from cellbank.hospital.v1 import hospital_pb2
from cellbank.manufacturing.v1 import manufacturing_service_pb2
from cellbank.matching.v1 import hla_reference_service_pb2
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.storage.v1 import storage_service_pb2
from google.protobuf import symbol_database
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.demo import TOKENS, auth
from deploy.infra import Endpoints
from services.storage.client import StorageGateway
from services.storage.entrypoints.main import SPEC as STORAGE_SPEC
from shared.db import drop_database
from shared.grpc_server import channel_credentials
from shared.service_host import ServiceHost
from tests.e2e.bank_site import site_settings
from tests.e2e.network import NetworkSite, network

MODULES = (donor_service_pb2, manufacturing_service_pb2, storage_service_pb2, hospital_pb2,
           delivery_service_pb2, opb, hla_reference_service_pb2)  # fmt: skip
SERVICES = [s for m in MODULES for s in m.DESCRIPTOR.services_by_name.values()]
REFUSED = {
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
}  # fmt: skip
SERVICE_OF = {  # which process of a site serves each gRPC service
    "cellbank.donor.v1.DonorIntakeService": "donor_intake",
    "cellbank.manufacturing.v1.ManufacturingService": "manufacturing",
    "cellbank.storage.v1.StorageService": "storage",
    "cellbank.hospital.v1.HospitalService": "matching",
    "cellbank.delivery.v1.DeliveryService": "delivery",
    "cellbank.operator.v1.OperatorService": "storage",
    "cellbank.matching.v1.HlaReferenceService": "matching",
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site(endpoints: Endpoints):
    async with network(endpoints, sites=1) as running:
        yield running[0]


def port_of(site: NetworkSite, service: str) -> int:
    donor, manufacturing, storage = site.bank.hosts
    return {
        "donor_intake": donor, "manufacturing": manufacturing, "storage": storage,
        "matching": site.matching, "delivery": site.delivery_host,
    }[service].port  # fmt: skip


async def call(site: NetworkSite, service: str, method: str, metadata) -> grpc.StatusCode:
    descriptor = next(s for s in SERVICES if s.full_name == service).methods_by_name[method]
    request_cls = symbol_database.Default().GetSymbol(descriptor.input_type.full_name)
    path = f"/{service}/{method}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port_of(site, SERVICE_OF[service])}") as ch:
        try:
            if descriptor.server_streaming:
                stream = ch.unary_stream(path, request_serializer=lambda m: m.SerializeToString())(
                    request_cls(), metadata=metadata, timeout=10
                )
                await stream.read()
                stream.cancel()
            else:
                await ch.unary_unary(path, request_serializer=lambda m: m.SerializeToString())(
                    request_cls(), metadata=metadata, timeout=10
                )
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


RPCS = [(s.full_name, m.name) for s in SERVICES for m in s.methods]


@pytest.mark.parametrize(("service", "method"), RPCS)
async def test_no_token_or_a_forged_one_is_unauthenticated(site, service, method):
    assert await call(site, service, method, None) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        await call(site, service, method, auth("forged-token")) == grpc.StatusCode.UNAUTHENTICATED
    )
    assert await call(site, service, method, (("authorization", "Basic abc"),)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


STAFF_RPCS = [(s, m) for s, m in RPCS if s != "cellbank.hospital.v1.HospitalService"]


@pytest.mark.parametrize(("service", "method"), STAFF_RPCS)
async def test_a_hospital_token_reaches_no_staff_rpc(site, service, method):
    before = await site.matching_ops.GetStoreStatus(
        opb.GetStoreStatusRequest(), metadata=auth("op-alice")
    )
    code = await call(site, service, method, auth("hosp-h1"))
    assert code in REFUSED, f"{service}/{method} answered {code.name} to a hospital"
    after = await site.matching_ops.GetStoreStatus(
        opb.GetStoreStatusRequest(), metadata=auth("op-alice")
    )
    assert after.event_count == before.event_count


@pytest.mark.parametrize(
    "method",
    ["PlaceOrder", "CancelOrder", "ConfirmReceipt", "ConfirmInfusion", "ReportAdverseEvent"],
)
async def test_operators_read_streams_but_cannot_act_for_a_hospital(site, method):
    assert await call(site, "cellbank.hospital.v1.HospitalService", method, auth("op-alice")) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    watched = await call(
        site, "cellbank.operator.v1.OperatorService", "GetStoreStatus", auth("op-alice")
    )
    assert watched == grpc.StatusCode.OK


# ---- TLS and mTLS ---------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=cellbank-test-ca", cwd=tmp_path)  # fmt: skip
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN=cellbank-{name}", cwd=tmp_path)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext",
                cwd=tmp_path)  # fmt: skip
    return tmp_path


async def health(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = (
        grpc.aio.secure_channel(address, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(address)
    )
    async with channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


async def test_tls_and_mtls_between_sites(endpoints: Endpoints, certificates: Path):
    c = certificates
    settings = dataclasses.replace(
        site_settings(endpoints, "TLS", "storage", "G1009"),
        database_name=f"cellbank_t_tls_storage_{uuid.uuid4().hex[:6]}",
        tls_cert_file=str(c / "server.pem"), tls_key_file=str(c / "server.key"),
        tls_client_ca_file=str(c / "ca.pem"),  # mTLS: callers must present a certificate
    )  # fmt: skip
    host = ServiceHost(STORAGE_SPEC, settings)
    await host.start()
    try:
        address = f"127.0.0.1:{host.port}"
        mtls = channel_credentials(str(c / "ca.pem"), str(c / "client.pem"), str(c / "client.key"))
        tls_only = channel_credentials(str(c / "ca.pem"))
        assert await health(address, mtls) == grpc.StatusCode.OK
        assert await health(address, None) == grpc.StatusCode.UNAVAILABLE  # plaintext refused
        assert await health(address, tls_only) == grpc.StatusCode.UNAVAILABLE  # no client cert
        # A site-to-site call (matching → the owner's storage) over mTLS reaches the owner,
        # which answers (the unit is unknown there); without the certificate it cannot.
        hold = datetime.now(UTC) + timedelta(hours=1)
        gateway = StorageGateway({"TLS": address}, "svc-matching", credentials=mtls)
        answered = await gateway.reserve("TLS", "no-such-unit", "ORD-X", hold, None, "test")
        assert not answered.ok and answered.why.startswith("NOT_FOUND"), answered.why
        await gateway.close()
        stranger = StorageGateway({"TLS": address}, "svc-matching", credentials=tls_only)
        refused = await stranger.reserve("TLS", "no-such-unit", "ORD-X", hold, None, "test")
        assert refused.why.startswith("UNAVAILABLE"), refused.why
        await stranger.close()
        assert TOKENS["svc-matching"] == "service:matching"
    finally:
        await host.stop(grace=1)
        await drop_database(endpoints.database_url, settings.database_name)
