"""docker-compose.yml, deploy/Dockerfile and deploy/k8s/ agree with the code they deploy.

Every service of shared.topics.SERVICES runs at every site either as its gRPC service process
(deploy/network.py SERVICE_MODULES; the process runs its own outbox relay) or, while it has none,
as a bare outbox relay (`python -m shared.relay_main`); never both, which would publish every
event twice. One network-wide Faust cold-chain monitor (deploy/network.py COLDCHAIN_MODULE) calls
every site's storage service; it reads its own CELLBANK_* variables, not Settings.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from concurrent import futures
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from deploy.demo import TOKENS as DEMO_TOKENS
from deploy.infra import DEFAULT_SITES
from deploy.network import COLDCHAIN_MODULE, SERVICE_MODULES, plan
from services.kernel.isbt128 import validate_fin
from shared.db import database_name, with_database
from shared.metrics import serve_metrics
from shared.settings import PRINCIPAL_KINDS, Settings, parse_tokens
from shared.topics import SERVICE_TOPICS, SERVICES, TELEMETRY, TOPICS

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
K8S = REPO / "deploy" / "k8s"
POM = REPO / "deploy" / "kafka" / "pom.xml"
CODE_DIRS = ("shared", "services", "deploy")
RELAY_COMMAND = ["python", "-m", "shared.relay_main"]
# The services with a gRPC process, and those that still run as a bare relay.
GRPC_SERVICES = tuple(SERVICE_MODULES)
RELAY_SERVICES = tuple(service for service in SERVICES if service not in SERVICE_MODULES)
SITE_SERVICES = [(site, service) for site in DEFAULT_SITES for service in SERVICES]
SITE_GRPC_SERVICES = [(site, service) for site in DEFAULT_SITES for service in GRPC_SERVICES]
SITE_RELAYS = [(site, service) for site in DEFAULT_SITES for service in RELAY_SERVICES]
# Host ports of the compose gRPC services: deploy/network.py's scheme from this base.
COMPOSE_GRPC_BASE_PORT = 50200
DEPENDS_ON_TOPICS_AND_DATABASES = {
    "kafka-init": {"condition": "service_completed_successfully"},
    "db-init": {"condition": "service_completed_successfully"},
    "postgres": {"condition": "service_healthy"},
}
# The cold-chain monitor: one compose service, calling each site's storage service.
COLDCHAIN = "coldchain"
COLDCHAIN_SERVICE = "storage"
COLDCHAIN_REQUIRED_ENV = {
    "CELLBANK_KAFKA_BOOTSTRAP",
    "CELLBANK_STORAGE_ENDPOINTS",
    "CELLBANK_COLDCHAIN_TOKEN",
}


def module_command(service: str) -> list[str]:
    return ["python", "-m", SERVICE_MODULES[service]]


# --- parsing helpers -------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def grpc_name(site: str, service: str) -> str:
    return f"{site.lower()}-{service.replace('_', '-')}"


def relay_name(site: str, service: str) -> str:
    return f"{grpc_name(site, service)}-relay"


def process_name(site: str, service: str) -> str:
    """The compose service that runs the event store (and so the relay) of site and service."""
    return grpc_name(site, service) if service in SERVICE_MODULES else relay_name(site, service)


def is_coldchain(command: list[str]) -> bool:
    return command[:3] == ["python", "-m", COLDCHAIN_MODULE]


SLA_MODULE = "services.delivery.entrypoints.sla_worker"


def is_network_worker(command: list[str]) -> bool:
    """A network-wide Faust worker (no event store of its own): cold chain or SLA."""
    return is_coldchain(command) or command[:3] == ["python", "-m", SLA_MODULE]


def served_service(command: list[str]) -> str | None:
    """Which service's event store a process command runs (None: not a service process)."""
    if command == RELAY_COMMAND:
        return None
    by_command = {tuple(module_command(service)): service for service in SERVICE_MODULES}
    return by_command.get(tuple(command))


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """What Compose makes of a value when no variable is set: ${X:-default} → default."""
    return _VARIABLE.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), value)


def process_env(environment: Mapping[str, Any]) -> dict[str, str]:
    """The environment the process sees; values must already be YAML strings (a bare `false`
    or `010` would reach the process as something else than what was written)."""
    for name, value in environment.items():
        assert isinstance(value, str), f"{name}: {value!r} must be a quoted string"
    return {name: interpolate(value) for name, value in environment.items()}


def kafka_topics_invocations() -> Iterator[dict[str, list[str]]]:
    """Each kafka-topics.sh line of kafka-init's script as {option: [values]}."""
    script = "\n".join(services()["kafka-init"]["command"])
    for line in script.splitlines():
        words = shlex.split(line)
        if not words or not words[0].endswith("kafka-topics.sh"):
            continue
        options: dict[str, list[str]] = {}
        current = ""
        for word in words[1:]:
            if word.startswith("--"):
                current = word
                options.setdefault(current, [])
            else:
                options[current].append(word)
        yield options


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                env[name] = value
    return env


@cache
def k8s_documents() -> list[dict[str, Any]]:
    docs = [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]
    assert docs, "deploy/k8s holds no manifests"
    return docs


def k8s_of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in k8s_documents() if doc["kind"] == kind]


def k8s_container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def k8s_env(deployment: Mapping[str, Any]) -> dict[str, str]:
    """The container's literal environment: its ConfigMaps, then its own `value`s."""
    configmaps = {cm["metadata"]["name"]: cm for cm in k8s_of_kind("ConfigMap")}
    container = k8s_container(deployment)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= configmaps[source["configMapRef"]["name"]]["data"]
    env |= {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
    return process_env(env)


def k8s_secret_env(deployment: Mapping[str, Any]) -> set[str]:
    """The container's variables that come from a Secret."""
    return {
        item["name"]
        for item in k8s_container(deployment).get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }


def k8s_grpc_deployments() -> list[tuple[str, dict[str, Any]]]:
    """(service, Deployment) of every Deployment that runs a gRPC service process."""
    found = []
    for deployment in k8s_of_kind("Deployment"):
        service = served_service(k8s_container(deployment)["command"])
        if service is not None:
            found.append((service, deployment))
    return found


def run_healthcheck(test: list[str], grpc_port: int) -> int:
    """Run a compose healthcheck (CMD form, python from this venv) against a port."""
    assert test[0] == "CMD" and test[1] == "python", f"{test[:2]}: expected CMD python"
    # A bare environment, as in the container: no proxy settings that gRPC would follow.
    env = {"CELLBANK_GRPC_PORT": str(grpc_port), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *test[2:]], env=env, timeout=60).returncode


def metrics_listen_on_loopback_only() -> bool:
    default = inspect.signature(serve_metrics).parameters["addr"].default
    return default in {"127.0.0.1", "localhost"}


def env_names_the_code_reads() -> set[str]:
    pattern = re.compile(r"""["'](CELLBANK_[A-Z0-9_]+)["']""")
    return {
        name
        for folder in CODE_DIRS
        for path in (REPO / folder).rglob("*.py")
        for name in pattern.findall(path.read_text())
    }


def coldchain_source() -> Path:
    spec = importlib.util.find_spec(COLDCHAIN_MODULE)
    assert spec is not None and spec.origin is not None, f"{COLDCHAIN_MODULE} does not exist"
    return Path(spec.origin)


def env_names_the_coldchain_reads() -> set[str]:
    """The CELLBANK_* names of the cold-chain worker's module (it does not use Settings)."""
    return set(re.findall(r"""["'](CELLBANK_[A-Z0-9_]+)["']""", coldchain_source().read_text()))


def parse_storage_endpoints(raw: str) -> list[tuple[str, str, int]]:
    """CELLBANK_STORAGE_ENDPOINTS, strictly: every entry SITE=host:port, nothing else."""
    entries = []
    for item in raw.split(","):
        site, sep, address = item.partition("=")
        host, colon, port = address.rpartition(":")
        assert sep and colon and host and port.isdigit(), f"{item!r}: expected SITE=host:port"
        entries.append((site, host, int(port)))
    return entries


def coldchain_config(env: Mapping[str, str]) -> dict[str, Any]:
    """What the worker module makes of an environment, imported in a clean process (the module
    builds its Faust app at import; nothing connects before `worker` runs)."""
    script = f"""
import importlib, json
worker = importlib.import_module({COLDCHAIN_MODULE!r})
conf = worker.app.conf
rules = worker.monitor.rules
print(json.dumps({{
    "app_id": conf.id,
    "brokers": [str(url) for url in conf.broker],
    "datadir": str(conf.datadir),
    "partitions": conf.topic_partitions,
    "replication_factor": conf.topic_replication_factor,
    "topics": sorted(worker.telemetry_topic.topics),
    "endpoints": worker.dispatcher.endpoints,
    "rules": [rules.max_celsius, rules.excursion_minutes, rules.silence_minutes],
}}))
"""
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{REPO / 'protos'}", **env}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=clean,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def first_party_imports() -> set[str]:
    """Top-level names imported by the deployed code that live in this repository."""
    roots: set[str] = set()
    for folder in CODE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    roots.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    roots.add(node.module.split(".")[0])
    return {name for name in roots if (REPO / name).is_dir() or (REPO / "protos" / name).is_dir()}


# --- docker-compose.yml ------------------------------------------------------------------------


def test_compose_runs_the_kafka_version_the_local_broker_uses() -> None:
    version = ET.parse(POM).getroot().findtext("{*}properties/{*}kafka.version")
    assert version
    assert services()["kafka"]["image"] == f"apache/kafka:{version}"
    assert services()["kafka-init"]["image"] == f"apache/kafka:{version}"


def test_compose_kafka_is_a_single_kraft_node_that_never_auto_creates_topics() -> None:
    env = process_env(services()["kafka"]["environment"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")


def test_compose_creates_every_topic_the_code_publishes_to() -> None:
    created = [options["--topic"][0] for options in kafka_topics_invocations()]
    assert sorted(created) == sorted(spec.name for spec in TOPICS)
    assert set(SERVICE_TOPICS.values()) <= set(created)


def test_compose_topics_get_the_retention_and_configs_the_code_defines() -> None:
    specs = {spec.name: spec for spec in TOPICS}
    for options in kafka_topics_invocations():
        spec = specs[options["--topic"][0]]
        replication_factor = int(options["--replication-factor"][0])
        configs = dict(item.partition("=")[::2] for item in options["--config"])
        assert configs["retention.ms"] == str(spec.retention_ms), spec.name
        assert configs == spec.config(replication_factor), spec.name
        assert int(options["--partitions"][0]) >= 1
        assert "--create" in options and "--if-not-exists" in options
        assert options["--bootstrap-server"] == ["kafka:9092"]


def test_service_modules_are_services_of_the_network() -> None:
    assert GRPC_SERVICES, "deploy/network.py SERVICE_MODULES is empty"
    assert set(GRPC_SERVICES) <= set(SERVICES)
    for service, module in SERVICE_MODULES.items():
        assert importlib.import_module(module).SPEC.name == service


def test_compose_runs_every_event_store_exactly_once() -> None:
    """One relay per site and service: a process and a relay of one store would double-publish."""
    runs: dict[tuple[str, str], list[str]] = {}
    for name, service in services().items():
        command: list[str] = service.get("command") or []
        if command != RELAY_COMMAND and served_service(command) is None:
            continue
        env = process_env(service["environment"])
        served = served_service(command) or env["CELLBANK_SERVICE"]
        runs.setdefault((env["CELLBANK_SITE_ID"], served), []).append(name)
    assert runs == {pair: [process_name(*pair)] for pair in SITE_SERVICES}


def test_compose_has_one_relay_per_site_and_service_without_a_process() -> None:
    relays = {name for name in services() if name.endswith("-relay")}
    assert relays == {relay_name(site, service) for site, service in SITE_RELAYS}


# --- docker-compose.yml: the gRPC service processes ---------------------------------------------


def test_compose_has_one_grpc_process_per_site_and_service_module() -> None:
    processes = {
        name
        for name, service in services().items()
        if served_service(service.get("command") or []) is not None
    }
    assert processes == {grpc_name(site, service) for site, service in SITE_GRPC_SERVICES}


@pytest.mark.parametrize(("site", "service"), SITE_GRPC_SERVICES)
def test_compose_grpc_process_runs_its_module_after_topics_and_databases_exist(
    site: str, service: str
) -> None:
    process = services()[grpc_name(site, service)]
    assert process["command"] == module_command(service)
    assert importlib.util.find_spec(SERVICE_MODULES[service]) is not None
    assert process["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert process["depends_on"] == DEPENDS_ON_TOPICS_AND_DATABASES
    assert process["restart"] == "unless-stopped"


@pytest.mark.parametrize(("site", "service"), SITE_GRPC_SERVICES)
def test_compose_grpc_process_environment_is_accepted_by_settings(site: str, service: str) -> None:
    env = process_env(services()[grpc_name(site, service)]["environment"])
    settings = Settings.from_env(env, service=service)  # as shared.service_host.run reads it
    assert (settings.site_id, settings.service) == (site, service)
    assert env.get("CELLBANK_SERVICE", service) == service
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.grpc_host == "0.0.0.0"  # reachable through the published port
    assert settings.grpc_port > 0 and settings.metrics_port > 0  # fixed, not picked at random
    assert settings.tokens, "no bearer token: every call would be refused"
    assert {principal.partition(":")[0] for principal in settings.tokens.values()} <= set(
        PRINCIPAL_KINDS
    )
    validate_fin(settings.facility_id)
    database_name(settings.site_id, settings.service)


def test_compose_tokens_come_from_the_environment_with_the_demo_tokens_as_local_default() -> None:
    for site, service in SITE_GRPC_SERVICES:
        raw = services()[grpc_name(site, service)]["environment"]["CELLBANK_TOKENS"]
        assert raw.startswith("${CELLBANK_TOKENS:-"), f"{site} {service}: not overridable"
        assert parse_tokens(interpolate(raw)) == DEMO_TOKENS  # what deploy/demo.py sends


def test_compose_each_site_has_one_valid_facility_id_of_its_own() -> None:
    fins: dict[str, set[str]] = {}
    for site, service in SITE_SERVICES:
        env = process_env(services()[process_name(site, service)]["environment"])
        if "CELLBANK_FACILITY_ID" in env or service == "donor_intake":
            fins.setdefault(site, set()).add(validate_fin(env["CELLBANK_FACILITY_ID"]))
    assert set(fins) >= {site for site, service in SITE_GRPC_SERVICES if service == "donor_intake"}
    assert all(len(site_fins) == 1 for site_fins in fins.values()), fins
    per_site = [next(iter(site_fins)) for site_fins in fins.values()]
    assert len(set(per_site)) == len(per_site), f"two sites share a FIN: {fins}"


def test_compose_grpc_healthcheck_asks_the_grpc_health_service() -> None:
    checks = {
        tuple(services()[grpc_name(site, service)]["healthcheck"]["test"])
        for site, service in SITE_GRPC_SERVICES
    }
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        for check in checks:
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            assert run_healthcheck(list(check), port) == 0, "healthy server reported unhealthy"
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            assert run_healthcheck(list(check), port) != 0, "NOT_SERVING reported healthy"
    finally:
        server.stop(None).wait()
    for check in checks:
        assert run_healthcheck(list(check), port) != 0, "no server reported healthy"


def test_compose_grpc_processes_are_published_on_loopback_by_a_per_site_scheme() -> None:
    expected = {
        (p.site, p.service): p.grpc_port
        for p in plan(list(DEFAULT_SITES), COMPOSE_GRPC_BASE_PORT, 0)
    }
    for site, service in SITE_GRPC_SERVICES:
        process = services()[grpc_name(site, service)]
        env = process_env(process["environment"])
        (mapping,) = process["ports"]
        host_ip, host_port, container_port = mapping.split(":")
        assert host_ip == "127.0.0.1"
        assert container_port == env["CELLBANK_GRPC_PORT"]
        assert int(host_port) == expected[(site, service)], f"{site} {service}"


def test_compose_host_ports_are_unique_and_loopback_only() -> None:
    published = [mapping for service in services().values() for mapping in service.get("ports", [])]
    assert all(mapping.startswith("127.0.0.1:") for mapping in published), published
    host_ports = [mapping.split(":")[1] for mapping in published]
    assert len(host_ports) == len(set(host_ports)), f"a host port is published twice: {published}"


def test_relay_module_exists() -> None:
    assert importlib.util.find_spec(RELAY_COMMAND[-1]) is not None


def test_compose_database_url_reaches_the_postgres_service_with_its_credentials() -> None:
    postgres = services()["postgres"]
    assert postgres["image"] == "postgres:18"
    pg_env = process_env(postgres["environment"])
    for site, service in SITE_SERVICES:
        url = process_env(services()[process_name(site, service)]["environment"])
        parts = urlsplit(url["CELLBANK_DATABASE_URL"])
        assert (parts.scheme, parts.hostname, parts.port) == ("postgresql", "postgres", 5432)
        assert parts.username == pg_env.get("POSTGRES_USER", "postgres")
        assert parts.password == pg_env["POSTGRES_PASSWORD"]
        # A server URL: relay_main and service_host swap in the site's database for the path.
        target = with_database(url["CELLBANK_DATABASE_URL"], database_name(site, service))
        assert urlsplit(target).path == f"/{database_name(site, service)}"


def test_compose_creates_the_database_every_process_connects_to() -> None:
    db_init = services()["db-init"]
    assert "ensure_site_databases(" in " ".join(db_init["command"])
    # ensure_site_databases defaults to DEFAULT_SITES x SERVICES: exactly the processes' pairs.
    sites = {
        services()[process_name(site, service)]["environment"]["CELLBANK_SITE_ID"]
        for site, service in SITE_SERVICES
    }
    assert sites == set(DEFAULT_SITES)
    for site, service in SITE_SERVICES:
        url = services()[process_name(site, service)]["environment"]["CELLBANK_DATABASE_URL"]
        assert db_init["environment"]["CELLBANK_DATABASE_URL"] == url
    assert db_init["depends_on"] == {"postgres": {"condition": "service_healthy"}}


# --- docker-compose.yml: the cold-chain monitor ------------------------------------------------


def coldchain_env() -> dict[str, str]:
    return process_env(services()[COLDCHAIN]["environment"])


def test_compose_runs_one_coldchain_worker_of_the_module_that_exists() -> None:
    monitors = [
        name for name, service in services().items() if is_coldchain(service.get("command") or [])
    ]
    assert monitors == [COLDCHAIN]
    coldchain = services()[COLDCHAIN]
    coldchain_source()
    assert coldchain["command"][3] == "worker"  # the Faust CLI command that consumes
    assert coldchain["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert coldchain["restart"] == "unless-stopped"
    assert "ports" not in coldchain  # it serves nothing


def test_compose_coldchain_sets_the_variables_the_worker_reads_and_no_others() -> None:
    env = coldchain_env()
    cellbank = {name for name in env if name.startswith("CELLBANK_")}
    read = env_names_the_coldchain_reads()
    assert COLDCHAIN_REQUIRED_ENV <= read, "the worker no longer reads a required variable"
    assert COLDCHAIN_REQUIRED_ENV <= cellbank
    assert cellbank <= read, f"not read by the worker: {sorted(cellbank - read)}"


def test_compose_coldchain_calls_every_site_s_storage_service_in_compose() -> None:
    entries = parse_storage_endpoints(coldchain_env()["CELLBANK_STORAGE_ENDPOINTS"])
    sites = [site for site, _, _ in entries]
    assert sorted(sites) == sorted(DEFAULT_SITES), "one endpoint per site, every site"
    for site, host, port in entries:
        storage = grpc_name(site, COLDCHAIN_SERVICE)
        assert host == storage, f"{site}: {host} is not its storage service"
        env = process_env(services()[storage]["environment"])
        assert env["CELLBANK_SITE_ID"] == site
        assert port == int(env["CELLBANK_GRPC_PORT"]), f"{site}: the container's gRPC port"


def test_compose_coldchain_token_is_a_service_token_every_storage_service_accepts() -> None:
    raw = services()[COLDCHAIN]["environment"]["CELLBANK_COLDCHAIN_TOKEN"]
    assert raw.startswith("${CELLBANK_COLDCHAIN_TOKEN:-"), "not overridable"
    token = interpolate(raw)
    assert DEMO_TOKENS[token].partition(":")[0] == "service"  # what deploy/demo.py declares
    for site in DEFAULT_SITES:
        storage = process_env(services()[grpc_name(site, COLDCHAIN_SERVICE)]["environment"])
        principal = parse_tokens(storage["CELLBANK_TOKENS"]).get(token, "")
        assert principal.partition(":")[0] == "service", f"{site} storage refuses it"


def test_compose_coldchain_starts_after_the_topics_and_the_storage_services() -> None:
    expected = {"kafka-init": {"condition": "service_completed_successfully"}} | {
        grpc_name(site, COLDCHAIN_SERVICE): {"condition": "service_healthy"}
        for site in DEFAULT_SITES
    }
    assert services()[COLDCHAIN]["depends_on"] == expected


def test_compose_coldchain_worker_reads_its_environment_as_intended() -> None:
    env = coldchain_env()
    config = coldchain_config(env)
    storage = process_env(services()[grpc_name(DEFAULT_SITES[0], COLDCHAIN_SERVICE)]["environment"])
    assert config["brokers"] == [f"kafka://{storage['CELLBANK_KAFKA_BOOTSTRAP']}"]
    assert config["endpoints"] == {
        site: f"{host}:{port}"
        for site, host, port in parse_storage_endpoints(env["CELLBANK_STORAGE_ENDPOINTS"])
    }
    (topic,) = config["topics"]
    created = {options["--topic"][0]: options for options in kafka_topics_invocations()}
    assert topic == TELEMETRY and topic in created
    # Its table's changelog is co-partitioned with the telemetry topic, on the same broker(s).
    assert config["partitions"] == int(created[topic]["--partitions"][0])
    assert config["replication_factor"] == int(created[topic]["--replication-factor"][0])
    max_celsius, excursion_minutes, silence_minutes = config["rules"]
    assert max_celsius < -135  # below water's glass transition: cryogenic, not a freezer
    assert excursion_minutes > 0 and silence_minutes > 0
    # The image's user cannot write to its working directory (root's /app): Faust's data
    # directory must be elsewhere.
    assert Path(config["datadir"]).is_absolute()
    assert Path(config["datadir"]).parts[:2] == ("/", "tmp"), config["datadir"]


def test_compose_dependencies_exist_and_healthy_ones_have_a_healthcheck() -> None:
    assert "pg_isready" in " ".join(services()["postgres"]["healthcheck"]["test"])
    for name, service in services().items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services(), f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services()[dependency], f"{dependency} has none"


def test_no_deployment_sets_a_cellbank_variable_the_code_never_reads() -> None:
    known = env_names_the_code_reads()
    configured = (
        {name for service in services().values() for name in service.get("environment", {})}
        | {name for cm in k8s_of_kind("ConfigMap") for name in cm["data"]}
        | {
            item["name"]
            for deployment in k8s_of_kind("Deployment")
            for item in k8s_container(deployment).get("env", [])
        }
    )
    unknown = {name for name in configured if name.startswith("CELLBANK_")} - known
    assert not unknown, f"typo or stale name: {sorted(unknown)}"
    assert env_names_the_coldchain_reads() <= known  # the worker's own names count as read


# --- deploy/Dockerfile -------------------------------------------------------------------------


def test_dockerfile_builds_on_the_python_version_the_project_targets() -> None:
    assert dockerfile_instructions()[0] == ("FROM", "python:3.11-slim")


def test_dockerfile_installs_the_pinned_requirements() -> None:
    instructions = dockerfile_instructions()
    assert ("COPY", "requirements.txt ./") in instructions
    assert any(k == "RUN" and "pip install -r requirements.txt" in a for k, a in instructions)


def test_dockerfile_copies_every_package_the_code_imports() -> None:
    copied = {
        args.split()[0].rstrip("/")
        for keyword, args in dockerfile_instructions()
        if keyword == "COPY"
    }
    needed = {
        "protos" if (REPO / "protos" / name).is_dir() else name for name in first_party_imports()
    }
    needed |= set(CODE_DIRS) | {"protos"}
    assert needed <= copied, f"not copied: {sorted(needed - copied)}"


def test_dockerfile_generates_protos_after_copying_them_and_puts_them_on_the_path() -> None:
    instructions = dockerfile_instructions()
    generate = next(
        i for i, (k, a) in enumerate(instructions) if k == "RUN" and "python -m deploy.protos" in a
    )
    copies = [i for i, (k, a) in enumerate(instructions) if k == "COPY"]
    assert max(copies) < generate
    workdir = next(a for k, a in instructions if k == "WORKDIR")
    path = dockerfile_env()["PYTHONPATH"].split(":")
    assert workdir in path and f"{workdir}/protos" in path


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it


# --- deploy/k8s --------------------------------------------------------------------------------


def test_k8s_manifests_live_in_the_declared_site_namespace() -> None:
    (namespace,) = k8s_of_kind("Namespace")
    for doc in k8s_documents():
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"]


def test_k8s_configmap_env_is_accepted_by_settings() -> None:
    for configmap in k8s_of_kind("ConfigMap"):
        env = process_env(configmap["data"])
        assert all(name.startswith("CELLBANK_") for name in env)
        settings = Settings.from_env(env, service=SERVICES[0])
        database_name(settings.site_id, settings.service)
        if settings.facility_id:
            validate_fin(settings.facility_id)


def test_k8s_configmap_holds_no_database_password() -> None:
    for configmap in k8s_of_kind("ConfigMap"):
        assert urlsplit(configmap["data"]["CELLBANK_DATABASE_URL"]).password is None


def test_k8s_deployments_run_one_relay_per_event_store() -> None:
    deployments = k8s_of_kind("Deployment")
    assert deployments
    stores: list[tuple[str, str]] = []
    for deployment in deployments:
        # One replica, replaced not rolled: two relays of one event store would double-publish.
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        command = k8s_container(deployment)["command"]
        if is_network_worker(command):
            continue  # no event store (test_k8s_coldchain_deployment_is_consistent)
        env = k8s_env(deployment)
        service = served_service(command) or env["CELLBANK_SERVICE"]
        assert command == RELAY_COMMAND or served_service(command) is not None, command
        stores.append((env["CELLBANK_SITE_ID"], service))
    assert len(stores) == len(set(stores)), f"an event store runs twice: {stores}"


def test_k8s_relay_deployment_gets_settings_from_the_site_configmap() -> None:
    relays = [d for d in k8s_of_kind("Deployment") if k8s_container(d)["command"] == RELAY_COMMAND]
    assert bool(relays) == bool(RELAY_SERVICES)  # only services without a process need one
    for deployment in relays:
        settings = Settings.from_env(k8s_env(deployment))
        assert settings.service in RELAY_SERVICES  # the others run their own relay


def test_k8s_runs_donor_intake_as_a_grpc_service() -> None:
    served = {
        (k8s_env(deployment)["CELLBANK_SITE_ID"], service)
        for service, deployment in k8s_grpc_deployments()
    }
    assert ("LON", "donor_intake") in served


def test_k8s_grpc_deployment_is_consistent() -> None:
    for service, deployment in k8s_grpc_deployments():
        container = k8s_container(deployment)
        assert container["command"] == module_command(service)
        env = k8s_env(deployment)
        assert env.get("CELLBANK_SERVICE", service) == service
        # Bearer tokens come from a Secret, never from a manifest.
        assert "CELLBANK_TOKENS" in k8s_secret_env(deployment)
        assert "CELLBANK_TOKENS" not in env
        settings = Settings.from_env(env, service=service)
        assert settings.grpc_host == "0.0.0.0"  # the kubelet probes the pod IP
        assert settings.grpc_port > 0
        validate_fin(settings.facility_id)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["cellbank.network/service"] == service
        assert labels["cellbank.network/site"] == settings.site_id
        assert deployment["spec"]["selector"]["matchLabels"] == labels
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["grpc"] == settings.grpc_port
        assert container["readinessProbe"]["grpc"]["port"] == settings.grpc_port
        for probe in ("startupProbe", "livenessProbe"):
            if "grpc" in container.get(probe, {}):
                assert container[probe]["grpc"]["port"] == settings.grpc_port, probe


def test_k8s_every_grpc_deployment_has_a_service_that_selects_only_it() -> None:
    deployments = k8s_of_kind("Deployment")
    for service, deployment in k8s_grpc_deployments():
        container = k8s_container(deployment)
        grpc_port = next(p for p in container["ports"] if p["name"] == "grpc")["containerPort"]
        namespace = deployment["metadata"]["namespace"]
        matching = []
        for svc in k8s_of_kind("Service"):
            selector = svc["spec"]["selector"].items()
            selected = [
                d
                for d in deployments
                if d["metadata"]["namespace"] == svc["metadata"]["namespace"]
                and selector <= d["spec"]["template"]["metadata"]["labels"].items()
            ]
            if deployment in selected:
                assert selected == [deployment], f"{svc['metadata']['name']} selects several"
                matching.append(svc)
        assert len(matching) == 1, f"{service}: {len(matching)} Services"
        (svc,) = matching
        assert svc["metadata"]["namespace"] == namespace
        assert any(port["targetPort"] in {"grpc", grpc_port} for port in svc["spec"]["ports"]), (
            "no Service port reaches the gRPC port"
        )


def test_k8s_probes_do_not_reach_for_a_loopback_only_endpoint() -> None:
    """The kubelet's httpGet/tcpSocket probes go to the pod IP, not to the pod's loopback."""
    if not metrics_listen_on_loopback_only():
        pytest.skip("metrics listen on all interfaces")
    for deployment in k8s_of_kind("Deployment"):
        container = k8s_container(deployment)
        metrics = {"metrics", int(k8s_env(deployment).get("CELLBANK_METRICS_PORT", "0"))}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            for action in ("httpGet", "tcpSocket"):
                target = container.get(probe, {}).get(action)
                if target is not None:
                    assert target["port"] not in metrics, f"{probe} {action} of the metrics port"


def test_k8s_runs_as_the_dockerfile_user() -> None:
    uid = next(a for k, a in reversed(dockerfile_instructions()) if k == "USER").split(":")[0]
    for deployment in k8s_of_kind("Deployment"):
        security = deployment["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == int(uid)


def test_k8s_coldchain_deployment_is_consistent() -> None:
    monitors = [d for d in k8s_of_kind("Deployment") if is_coldchain(k8s_container(d)["command"])]
    assert len(monitors) <= 1, "one cold-chain monitor for the network"
    if not monitors:
        pytest.skip("no cold-chain Deployment in the sketch")
    (deployment,) = monitors
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = k8s_container(deployment)
    assert container["command"] == services()[COLDCHAIN]["command"]
    items = {item["name"]: item for item in container.get("env", [])}
    cellbank = {name for name in items if name.startswith("CELLBANK_")}
    assert COLDCHAIN_REQUIRED_ENV <= cellbank <= env_names_the_coldchain_reads()
    # The bearer token comes from a Secret, never from a manifest.
    assert "CELLBANK_COLDCHAIN_TOKEN" in k8s_secret_env(deployment)
    # Kafka: the one the sites use.
    ref = items["CELLBANK_KAFKA_BOOTSTRAP"]["valueFrom"]["configMapKeyRef"]
    configmaps = {cm["metadata"]["name"]: cm for cm in k8s_of_kind("ConfigMap")}
    assert ref["key"] in configmaps[ref["name"]]["data"]
    # Each site's storage Service, named as the site's gRPC Services are (donor-intake.yaml).
    grpc_ports = {
        next(p for p in k8s_container(d)["ports"] if p["name"] == "grpc")["containerPort"]
        for _, d in k8s_grpc_deployments()
    }
    (grpc_port,) = grpc_ports
    (namespace,) = k8s_of_kind("Namespace")
    site_namespace = namespace["metadata"]["name"].removesuffix(DEFAULT_SITES[0].lower())
    entries = parse_storage_endpoints(k8s_env(deployment)["CELLBANK_STORAGE_ENDPOINTS"])
    assert sorted(site for site, _, _ in entries) == sorted(DEFAULT_SITES)
    service_name = COLDCHAIN_SERVICE.replace("_", "-")
    for site, host, port in entries:
        assert host == f"{service_name}.{site_namespace}{site.lower()}.svc", site
        assert port == grpc_port, site
    # A read-only root filesystem: Faust's data directory must be on a mounted volume.
    datadir = Path(k8s_env(deployment)["CELLBANK_COLDCHAIN_DATADIR"])
    mounts = [Path(mount["mountPath"]) for mount in container.get("volumeMounts", [])]
    assert any(datadir.is_relative_to(mount) for mount in mounts), datadir


# --- the SLA monitor ------------------------------------------------------------------------------


def sla_env_names_read() -> set[str]:
    spec = importlib.util.find_spec(SLA_MODULE)
    assert spec is not None and spec.origin is not None, f"{SLA_MODULE} does not exist"
    source = Path(spec.origin)
    return set(re.findall(r"""["'](CELLBANK_[A-Z0-9_]+)["']""", source.read_text()))


def test_compose_sla_worker_runs_the_module_and_sets_only_variables_it_reads() -> None:
    sla = services()["sla"]
    assert sla["command"][:4] == ["python", "-m", SLA_MODULE, "worker"]
    env = process_env(sla["environment"])
    assert set(env) <= sla_env_names_read()
    entries = parse_storage_endpoints(env["CELLBANK_DELIVERY_ENDPOINTS"])
    assert {site for site, _, _ in entries} == set(DEFAULT_SITES)
    for site, host, _ in entries:
        assert host == grpc_name(site, "delivery") and host in services()


def test_k8s_sla_worker_is_consistent() -> None:
    (deployment,) = [
        d
        for d in k8s_of_kind("Deployment")
        if k8s_container(d)["command"][:3] == ["python", "-m", SLA_MODULE]
    ]
    names = {e["name"] for e in k8s_container(deployment)["env"]}
    assert names <= sla_env_names_read()
    assert deployment["spec"]["replicas"] == 1
