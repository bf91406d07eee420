"""Access over real Keycloak tokens: every RPC of every service × every role is allowed or
PERMISSION_DENIED exactly as the services' access tables say; no token, a forged, expired,
unsigned (alg=none) or foreign-key token, and a genuine token for another audience are
UNAUTHENTICATED. TLS, and mTLS for site-to-site calls, with generated test certificates."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import jwt
import pytest
import pytest_asyncio
from cellbank.delivery.v1 import delivery_service_pb2
from cellbank.donor.v1 import donor_service_pb2
from cellbank.hospital.v1 import hospital_pb2
from cellbank.manufacturing.v1 import manufacturing_service_pb2
from cellbank.matching.v1 import hla_reference_service_pb2
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.storage.v1 import storage_service_pb2
from cellbank.storage.v1.client import StorageSites
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import symbol_database
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.demo import auth
from deploy.identities import demo_realm
from deploy.infra import Endpoints
from services.delivery.entrypoints import grpc_servicer as delivery_servicer
from services.donor_intake.entrypoints import grpc_servicer as donor_servicer
from services.manufacturing.entrypoints import grpc_servicer as manufacturing_servicer
from services.matching.entrypoints import grpc_servicer as matching_servicer
from services.matching.entrypoints import hla_reference_servicer
from services.storage.entrypoints import grpc_servicer as storage_servicer
from services.storage.entrypoints.main import SPEC as STORAGE_SPEC
from shared import auth as auth_roles
from shared import operator_servicer
from shared.db import drop_database
from shared.errors import SiteRefused, SiteUnavailable
from shared.grpc_server import channel_credentials
from shared.oidc import ClientCredentials, request_token
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


CHANNELS: dict[int, grpc.aio.Channel] = {}  # one per service port, closed with the module


@pytest_asyncio.fixture(scope="module", loop_scope="session", autouse=True)
async def close_channels():
    yield
    for channel in CHANNELS.values():
        await channel.close()
    CHANNELS.clear()


async def call(site: NetworkSite, service: str, method: str, metadata) -> grpc.StatusCode:
    descriptor = next(s for s in SERVICES if s.full_name == service).methods_by_name[method]
    request_cls = symbol_database.Default().GetSymbol(descriptor.input_type.full_name)
    path = f"/{service}/{method}"
    port = port_of(site, SERVICE_OF[service])
    ch = CHANNELS.get(port) or CHANNELS.setdefault(
        port, grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    )
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


# One identity of the demo realm per role (deploy/keycloak/cellbank-realm.json).
IDENTITY_OF_ROLE = {
    auth_roles.HOSPITAL: "hosp-h1",
    auth_roles.CLINICIAN: "clin-h1",
    auth_roles.OPERATOR: "op-bob",  # bob holds only the operator role (alice is QA too)
    auth_roles.QA: "qa-quinn",
    auth_roles.COURIER: "courier",
    auth_roles.SERVICE_MATCHING: "lon-matching",
    auth_roles.SERVICE_DELIVERY: "lon-delivery",
    auth_roles.SERVICE_STORAGE: "lon-storage",
    auth_roles.SERVICE_MANUFACTURING: "lon-manufacturing",
    auth_roles.SERVICE_DONOR_INTAKE: "lon-donor-intake",
    auth_roles.MONITOR_COLDCHAIN: "monitor-coldchain",
    auth_roles.MONITOR_SLA: "monitor-sla",
}
ACCESS_OF = {  # the explicit tables the guard enforces, per gRPC service
    "cellbank.donor.v1.DonorIntakeService": donor_servicer.ACCESS,
    "cellbank.manufacturing.v1.ManufacturingService": manufacturing_servicer.ACCESS,
    "cellbank.storage.v1.StorageService": storage_servicer.ACCESS,
    "cellbank.hospital.v1.HospitalService": matching_servicer.ACCESS,
    "cellbank.delivery.v1.DeliveryService": delivery_servicer.ACCESS,
    "cellbank.operator.v1.OperatorService": operator_servicer.ACCESS,
    "cellbank.matching.v1.HlaReferenceService": hla_reference_servicer.ACCESS,
}
DENIED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


def test_every_rpc_of_every_service_has_an_access_rule_and_every_role_a_demo_identity():
    assert set(IDENTITY_OF_ROLE) == set(auth_roles.ROLES)
    for service, method in RPCS:
        assert method in ACCESS_OF[service], f"{service}/{method}: no access rule"
    for service, table in ACCESS_OF.items():
        known = {m for s, m in RPCS if s == service}
        assert set(table) <= known, f"{service}: rules for RPCs it does not have"


def test_the_policy_the_issue_asks_for():
    storage, delivery = ACCESS_OF["cellbank.storage.v1.StorageService"], delivery_servicer.ACCESS
    matching = auth_roles.SERVICE_MATCHING
    assert matching in storage["ReserveUnit"] and matching in storage["ReleaseReservation"]
    assert matching not in storage["PickUnit"] and matching not in storage["RecallUnit"]
    monitors = {auth_roles.MONITOR_COLDCHAIN, auth_roles.MONITOR_SLA}
    may_call = {
        (s, m) for s, table in ACCESS_OF.items() for m, roles in table.items() if roles & monitors
    }
    assert may_call == {  # the monitors only report
        ("cellbank.storage.v1.StorageService", "QuarantineTank"),
        ("cellbank.storage.v1.StorageService", "RecordTemperature"),
        ("cellbank.delivery.v1.DeliveryService", "ReportShipperExcursion"),
        ("cellbank.delivery.v1.DeliveryService", "FlagAtRisk"),
    }
    assert delivery["DeclareProductDefect"] == {auth_roles.QA}
    hospital = ACCESS_OF["cellbank.hospital.v1.HospitalService"]
    assert hospital["ConfirmReceipt"] == hospital["ConfirmInfusion"] == {auth_roles.CLINICIAN}


@pytest.mark.parametrize(("service", "method"), RPCS)
async def test_every_role_is_allowed_or_refused_exactly_as_the_table_says(site, service, method):
    """Each RPC × each role, with an empty request: a role the table names gets past the
    guard (the handler answers, usually INVALID_ARGUMENT for the empty request); any other
    role is PERMISSION_DENIED, and nothing is written."""
    before = await site.matching_ops.GetStoreStatus(
        opb.GetStoreStatusRequest(), metadata=auth("op-alice")
    )
    wrong = []
    for role, who in IDENTITY_OF_ROLE.items():
        code = await call(site, service, method, auth(who))
        allowed = role in ACCESS_OF[service][method]
        if (allowed and code in DENIED) or (
            not allowed and code != grpc.StatusCode.PERMISSION_DENIED
        ):
            wrong.append(
                f"{role} ({who}) → {code.name}, table says {'allowed' if allowed else 'refused'}"
            )
    assert not wrong, f"{service}/{method}: " + "; ".join(wrong)
    after = await site.matching_ops.GetStoreStatus(
        opb.GetStoreStatusRequest(), metadata=auth("op-alice")
    )
    assert after.event_count == before.event_count


def _forged(key: rsa.RSAPrivateKey, kid: str, issuer: str, **claims: object) -> str:
    now = int(time.time())
    payload = {"iss": issuer, "aud": "cellbank", "sub": "forger", "iat": now, "exp": now + 300,
               "realm_access": {"roles": ["operator", "qa"]}, "preferred_username": "mallory",
               **claims}  # fmt: skip
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def _unsigned(issuer: str, kid: str) -> str:
    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": issuer, "aud": "cellbank", "sub": "x", "iat": now, "exp": now + 300,
              "realm_access": {"roles": ["operator"]}}  # fmt: skip
    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64(claims)}."


@pytest.fixture(scope="module")
def bad_tokens(endpoints: Endpoints) -> dict[str, object]:
    issuer = endpoints.identity.issuer
    with urllib.request.urlopen(endpoints.identity.jwks_url) as reply:
        kid = next(k["kid"] for k in json.loads(reply.read())["keys"] if k["alg"] == "RS256")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "none": None,
        "not a JWT": "forged-token",
        "Basic scheme": (("authorization", "Basic abc"),),
        "signed by another key": _forged(key, kid, issuer),
        "alg=none": _unsigned(issuer, kid),
        "unknown key id": _forged(key, "not-a-key-of-the-issuer", issuer),
        "expired": _forged(key, kid, issuer, exp=int(time.time()) - 3600),
        "another issuer": _forged(key, kid, "https://idp.example/realms/cellbank"),
    }


@pytest.mark.parametrize(("service", "method"), RPCS)
async def test_no_token_or_a_bad_one_is_unauthenticated(site, bad_tokens, service, method):
    bad = bad_tokens
    for why, token in bad.items():
        metadata = token if token is None or isinstance(token, tuple) else bearer(token)
        code = await call(site, service, method, metadata)
        assert code == grpc.StatusCode.UNAUTHENTICATED, f"{why}: {code.name}"


async def test_a_real_token_for_another_audience_is_unauthenticated(site, endpoints):
    """Keycloak's own admin-cli client issues alice a genuine token, but not for `cellbank`."""
    token = request_token(endpoints.identity.token_url, {
        "grant_type": "password", "client_id": "admin-cli", "username": "alice",
        "password": demo_realm().users["alice"].password,
    })  # fmt: skip
    code = await call(
        site, "cellbank.operator.v1.OperatorService", "GetStoreStatus", token.metadata
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


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
        client = demo_realm().clients["lon-matching"]
        tokens = ClientCredentials(endpoints.identity.token_url, client.client_id, client.secret)
        sites = StorageSites({"TLS": address}, tokens, credentials=mtls)
        with pytest.raises(SiteRefused) as answered:
            await sites.reserve("TLS", "no-such-unit", "ORD-X", hold, None, "test")
        assert answered.value.why.startswith("NOT_FOUND"), answered.value.why
        await sites.close()
        stranger = StorageSites({"TLS": address}, tokens, credentials=tls_only)
        with pytest.raises(SiteUnavailable) as refused:
            await stranger.reserve("TLS", "no-such-unit", "ORD-X", hold, None, "test")
        assert refused.value.why.startswith("UNAVAILABLE"), refused.value.why
        await stranger.close()
    finally:
        await host.stop(grace=1)
        await drop_database(endpoints.database_url, settings.database_name)
