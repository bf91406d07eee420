"""The bank services of every site as processes on one machine (used by `make run`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.chain_keys import ChainKeys
from deploy.identities import demo_realm
from deploy.infra import Endpoints
from deploy.kafka_principals import COLDCHAIN, SLA, TANK_SENSORS, service_principal
from deploy.processes import REPO_ROOT, InfraError, hla_reference_dir, stop_process
from deploy.trust_keys import TrustMaterial

# The services that exist so far, in start order (manufacturing consumes donor events).
SERVICE_MODULES = {
    "donor_intake": "services.donor_intake.entrypoints.main",
    "manufacturing": "services.manufacturing.entrypoints.main",
    "storage": "services.storage.entrypoints.main",
    "matching": "services.matching.entrypoints.main",  # serves the public HospitalService
    "delivery": "services.delivery.entrypoints.main",  # shipments, lookback, recalls
}
COLDCHAIN_MODULE = "services.storage.entrypoints.coldchain_worker"
SIMULATOR_MODULE = "deploy.tank_simulator"
SLA_MODULE = "services.delivery.entrypoints.sla_worker"  # shipments at risk of their promise


@dataclass
class ServiceProcess:
    site: str
    service: str
    grpc_port: int
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # service-specific settings

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, endpoints: Endpoints, log_dir: Path) -> None:
        """Start the process; its chain key is kept beside the logs (`<root>/chain-keys`)."""
        env = {
            **os.environ,
            "CELLBANK_SITE_ID": self.site,
            "CELLBANK_SERVICE": self.service,
            "CELLBANK_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
            **endpoints.kafka_env(service_principal(self.site, self.service)),
            "CELLBANK_DATABASE_URL": endpoints.database_url,
            "CELLBANK_GRPC_PORT": str(self.grpc_port),
            "CELLBANK_METRICS_PORT": str(self.metrics_port),
            **endpoints.identity.service_env(),
            # Least privilege: migrate as the owner role, run as the runtime role.
            **(endpoints.database_logins.service_env() if endpoints.database_logins else {}),
            **_client_env(demo_realm().service_client(self.site, self.service).client_id),
            "CELLBANK_HLA_REFERENCE": hla_reference_dir(),
            **ChainKeys(log_dir.parent / "chain-keys").env(self.site, self.service),
            **self.env,
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{self.site.lower()}-{self.service}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", SERVICE_MODULES[self.service]],
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_serving(self, timeout: float = 60.0) -> None:
        """Until the gRPC health check says SERVING (or the process died)."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise InfraError(
                        f"{self.site} {self.service} exited with {self.proc.returncode}"
                    )
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise InfraError(f"{self.site} {self.service} not serving after {timeout:.0f}s")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=20, name=f"{self.site} {self.service}")
            self.proc = None


def plan(
    sites: list[str], grpc_base: int, metrics_base: int, trust: TrustMaterial | None = None
) -> list[ServiceProcess]:
    """Ports: base + 10 × site index + service index, e.g. LON donor_intake 50100. `trust`:
    every process gets its site's signing key and the trust list (a service refuses to start
    without them; None only to list the processes)."""
    processes = [
        ServiceProcess(site, service, grpc_base + 10 * i + j, metrics_base + 10 * i + j)
        for i, site in enumerate(sites)
        for j, service in enumerate(SERVICE_MODULES)
    ]
    storage = ",".join(f"{p.site}={p.address}" for p in processes if p.service == "storage")
    for p in processes:
        if p.service in ("matching", "delivery"):  # reserve / pick / recall at the owning site
            p.env["CELLBANK_STORAGE_ENDPOINTS"] = storage
        if trust is not None:
            p.env.update(trust.env(p.site))
    return processes


def _client_env(client_id: str) -> dict[str, str]:
    """A process's own OIDC client (the demo realm's secret: local run only)."""
    client = demo_realm().clients[client_id]
    return {
        "CELLBANK_OIDC_CLIENT_ID": client.client_id,
        "CELLBANK_OIDC_CLIENT_SECRET": client.secret,
    }


@dataclass
class NetworkProcess:
    """A network-wide process (the cold-chain monitor, the demo tank sensors)."""

    name: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.args],
                env={**os.environ, **self.env},
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise InfraError(f"{self.name} exited with {self.proc.returncode}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30, name=self.name)
            self.proc = None


def cold_chain(
    endpoints: Endpoints,
    services: list[ServiceProcess],
    tanks: list[str],
    data_dir: Path,
    trust: TrustMaterial | None = None,
) -> list[NetworkProcess]:
    """The Faust monitor watching every site's tanks, and simulated sensors for the demo tanks.
    `trust`: the trust list the SLA monitor verifies delivery events with."""
    verifies = trust.env() if trust is not None else {}
    storage = ",".join(f"{s.site}={s.address}" for s in services if s.service == "storage")
    delivery = ",".join(f"{s.site}={s.address}" for s in services if s.service == "delivery")
    monitor = NetworkProcess(
        "coldchain",
        [COLDCHAIN_MODULE, "worker", "-l", "info", "--without-web"],
        {
            "CELLBANK_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
            **endpoints.kafka_env(COLDCHAIN),
            "CELLBANK_STORAGE_ENDPOINTS": storage,
            "CELLBANK_DELIVERY_ENDPOINTS": delivery,
            **endpoints.identity.service_env(),
            **_client_env("monitor-coldchain"),
            "CELLBANK_COLDCHAIN_DATADIR": str(data_dir / "coldchain"),
        },
    )
    sensors = NetworkProcess(
        "tank-sensors",
        [SIMULATOR_MODULE, *tanks],
        {
            "CELLBANK_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
            **endpoints.kafka_env(TANK_SENSORS),
        },
    )
    sla = NetworkProcess(
        "sla",
        [SLA_MODULE, "worker", "-l", "info", "--without-web"],
        {
            "CELLBANK_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
            **endpoints.kafka_env(SLA),
            "CELLBANK_DELIVERY_ENDPOINTS": delivery,
            **endpoints.identity.service_env(),
            **_client_env("monitor-sla"),
            "CELLBANK_SLA_DATADIR": str(data_dir / "sla"),
            **verifies,
        },
    )
    return [monitor, sensors, sla]


def dashboard_process(
    endpoints_file: Path,
    port: int,
    kafka_env: Mapping[str, str] | None = None,
    trust: TrustMaterial | None = None,
) -> NetworkProcess:
    """The operator dashboard (deploy/dashboard.py) on 127.0.0.1:port (as the dashboard
    principal: give it endpoints.kafka_env(DASHBOARD)); `trust`: the network's trust list its
    event stream verifies with (else the one the endpoints file names)."""
    return NetworkProcess(
        "dashboard",
        ["deploy.dashboard", "--endpoints", str(endpoints_file), "--port", str(port)],
        {**(kafka_env or {}), **(trust.env() if trust is not None else {})},
    )


def simulator_process(
    endpoints_file: Path, donors: int, interval: float, courier_minutes: float
) -> NetworkProcess:
    """The demo's bank activity and courier (deploy/simulator.py), through the APIs only."""
    return NetworkProcess(
        "simulator",
        [
            "deploy.simulator",
            "--endpoints",
            str(endpoints_file),
            "--donors",
            str(donors),
            "--interval",
            str(interval),
            "--courier-minutes",
            str(courier_minutes),
        ],
        {},
    )
