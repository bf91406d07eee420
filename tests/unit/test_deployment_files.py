"""docker-compose.yml, deploy/Dockerfile and deploy/k8s/ agree with the code they deploy."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from deploy.infra import DEFAULT_SITES
from shared.db import database_name, with_database
from shared.settings import Settings
from shared.topics import SERVICE_TOPICS, SERVICES, TOPICS

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
K8S = REPO / "deploy" / "k8s"
POM = REPO / "deploy" / "kafka" / "pom.xml"
CODE_DIRS = ("shared", "services", "deploy")
RELAY_COMMAND = ["python", "-m", "shared.relay_main"]
SITE_SERVICES = [(site, service) for site in DEFAULT_SITES for service in SERVICES]


# --- parsing helpers -------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def relay_name(site: str, service: str) -> str:
    return f"{site.lower()}-{service.replace('_', '-')}-relay"


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
    docs = [yaml.safe_load(path.read_text()) for path in sorted(K8S.glob("*.yaml"))]
    assert docs, "deploy/k8s holds no manifests"
    return docs


def k8s_of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in k8s_documents() if doc["kind"] == kind]


def env_names_the_code_reads() -> set[str]:
    pattern = re.compile(r"""["'](CELLBANK_[A-Z0-9_]+)["']""")
    return {
        name
        for folder in CODE_DIRS
        for path in (REPO / folder).rglob("*.py")
        for name in pattern.findall(path.read_text())
    }


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


def test_compose_has_one_relay_per_site_and_service() -> None:
    relays = {name for name in services() if name.endswith("-relay")}
    assert relays == {relay_name(site, service) for site, service in SITE_SERVICES}


@pytest.mark.parametrize(("site", "service"), SITE_SERVICES)
def test_compose_relay_environment_is_accepted_by_settings(site: str, service: str) -> None:
    relay = services()[relay_name(site, service)]
    env = process_env(relay["environment"])
    assert {"CELLBANK_SITE_ID", "CELLBANK_KAFKA_BOOTSTRAP", "CELLBANK_DATABASE_URL"} <= set(env)
    settings = Settings.from_env(env)  # as shared.relay_main reads it
    assert (settings.site_id, settings.service) == (site, service)
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.service in SERVICE_TOPICS  # relay_main picks its topic here
    database_name(settings.site_id, settings.service)


@pytest.mark.parametrize(("site", "service"), SITE_SERVICES)
def test_compose_relay_runs_the_relay_process_after_topics_and_databases_exist(
    site: str, service: str
) -> None:
    relay = services()[relay_name(site, service)]
    assert relay["command"] == RELAY_COMMAND
    assert relay["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert relay["depends_on"] == {
        "kafka-init": {"condition": "service_completed_successfully"},
        "db-init": {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
    }


def test_relay_module_exists() -> None:
    assert importlib.util.find_spec(RELAY_COMMAND[-1]) is not None


def test_compose_database_url_reaches_the_postgres_service_with_its_credentials() -> None:
    postgres = services()["postgres"]
    assert postgres["image"] == "postgres:18"
    pg_env = process_env(postgres["environment"])
    for site, service in SITE_SERVICES:
        url = process_env(services()[relay_name(site, service)]["environment"])
        parts = urlsplit(url["CELLBANK_DATABASE_URL"])
        assert (parts.scheme, parts.hostname, parts.port) == ("postgresql", "postgres", 5432)
        assert parts.username == pg_env.get("POSTGRES_USER", "postgres")
        assert parts.password == pg_env["POSTGRES_PASSWORD"]
        # A server URL: relay_main swaps in the site's database for the path.
        target = with_database(url["CELLBANK_DATABASE_URL"], database_name(site, service))
        assert urlsplit(target).path == f"/{database_name(site, service)}"


def test_compose_creates_the_database_every_relay_connects_to() -> None:
    db_init = services()["db-init"]
    assert "ensure_site_databases(" in " ".join(db_init["command"])
    # ensure_site_databases defaults to DEFAULT_SITES x SERVICES: exactly the relays' pairs.
    relay_sites = {
        services()[relay_name(site, service)]["environment"]["CELLBANK_SITE_ID"]
        for site, service in SITE_SERVICES
    }
    assert relay_sites == set(DEFAULT_SITES)
    relay_url = services()[relay_name(*SITE_SERVICES[0])]["environment"]["CELLBANK_DATABASE_URL"]
    assert db_init["environment"]["CELLBANK_DATABASE_URL"] == relay_url
    assert db_init["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_compose_dependencies_exist_and_healthy_ones_have_a_healthcheck() -> None:
    assert "pg_isready" in " ".join(services()["postgres"]["healthcheck"]["test"])
    for name, service in services().items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services(), f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services()[dependency], f"{dependency} has none"


def test_no_deployment_sets_a_cellbank_variable_the_code_never_reads() -> None:
    known = env_names_the_code_reads()
    configured = {
        name for service in services().values() for name in service.get("environment", {})
    } | {name for cm in k8s_of_kind("ConfigMap") for name in cm["data"]}
    unknown = {name for name in configured if name.startswith("CELLBANK_")} - known
    assert not unknown, f"typo or stale name: {sorted(unknown)}"


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


def test_k8s_configmap_holds_no_database_password() -> None:
    for configmap in k8s_of_kind("ConfigMap"):
        assert urlsplit(configmap["data"]["CELLBANK_DATABASE_URL"]).password is None


def test_k8s_relay_deployment_gets_settings_from_the_site_configmap() -> None:
    configmaps = {cm["metadata"]["name"]: cm for cm in k8s_of_kind("ConfigMap")}
    deployments = k8s_of_kind("Deployment")
    assert deployments
    for deployment in deployments:
        assert deployment["spec"]["replicas"] == 1  # one relay per event store
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == RELAY_COMMAND
        env: dict[str, str] = {}
        for source in container["envFrom"]:
            env |= configmaps[source["configMapRef"]["name"]]["data"]
        env |= {item["name"]: item["value"] for item in container["env"] if "value" in item}
        settings = Settings.from_env(process_env(env))
        assert settings.service in SERVICES


def test_k8s_runs_as_the_dockerfile_user() -> None:
    uid = next(a for k, a in reversed(dockerfile_instructions()) if k == "USER").split(":")[0]
    for deployment in k8s_of_kind("Deployment"):
        security = deployment["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == int(uid)
