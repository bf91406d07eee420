"""Kafka principals on a cluster: passwords kept in 0600 files, SCRAM users and ACLs applied in
one JVM start (deploy/kafka/Provision.java, Kafka's own Admin client).

Against an external cluster, with admin credentials in CELLBANK_KAFKA_* (see shared/kafka_clients):
    python -m deploy.kafka_provision --bootstrap HOST:PORT --sites LON,MAN,EDI --credentials DIR
creates every principal (reusing the passwords already in DIR) and sets its ACLs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from deploy.kafka_principals import ADMIN, Grant, acl_table, plan_lines, principals, service_reads
from deploy.processes import CACHE_DIR, REPO_ROOT, InfraError
from shared.kafka_clients import KafkaSecurity

PROVISION_SOURCE = REPO_ROOT / "deploy" / "kafka" / "Provision.java"
PROVISION_TIMEOUT_S = 120


def ensure_passwords(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """Each principal's password, generated once into DIR/<name> (0600, DIR 0700)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    passwords = {}
    for name in names:
        path = directory / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
        passwords[name] = path.read_text().strip()
    return passwords


def principal_env(credentials: Path, principal: str, *, local: bool = True) -> dict[str, str]:
    """The CELLBANK_KAFKA_* a process runs with as this principal (the password by file; an
    inherited inline password is blanked so the file counts). For the local broker also its
    protocol; an external cluster's protocol and CA come from the caller's environment."""
    env = {
        "CELLBANK_KAFKA_USERNAME": principal,
        "CELLBANK_KAFKA_PASSWORD": "",
        "CELLBANK_KAFKA_PASSWORD_FILE": str(credentials / principal),
    }
    if local:
        env["CELLBANK_KAFKA_SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
        env["CELLBANK_KAFKA_SASL_MECHANISM"] = "SCRAM-SHA-512"
    return env


def jaas(security: KafkaSecurity) -> str:
    module = (
        "org.apache.kafka.common.security.plain.PlainLoginModule"
        if security.mechanism == "PLAIN"
        else "org.apache.kafka.common.security.scram.ScramLoginModule"
    )
    return f'{module} required username="{security.username}" password="{security.password}";'


def admin_config(bootstrap: str, admin: KafkaSecurity) -> list[str]:
    """The Admin client's properties, as plan directives."""
    lines = [f"config bootstrap.servers={bootstrap}", f"config security.protocol={admin.protocol}"]
    if admin.protocol != "PLAINTEXT":
        lines += [
            f"config sasl.mechanism={admin.mechanism}",
            f"config sasl.jaas.config={jaas(admin)}",
        ]
    if admin.protocol == "SASL_SSL" and admin.ca_file:
        lines += [
            "config ssl.truststore.type=PEM",
            f"config ssl.truststore.location={admin.ca_file}",
        ]
    return lines


def provision(
    libs: Path,
    bootstrap: str,
    admin: KafkaSecurity,
    passwords: Mapping[str, str],
    table: Mapping[str, Iterable[Grant]],
) -> float:
    """Upsert the users' SCRAM credentials and make the principals' ACLs exactly the table's;
    one JVM start. Returns the seconds it took."""
    java = shutil.which("java")
    if java is None:
        raise InfraError("Java 17+ is required to provision Kafka principals; install it")
    plan = "\n".join([*admin_config(bootstrap, admin), *plan_lines(passwords, table)]) + "\n"
    started = time.monotonic()
    cmd = [
        java, "-Xmx192m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto",
        *_program(libs),
    ]  # fmt: skip
    try:
        result = subprocess.run(
            cmd, input=plan, capture_output=True, text=True, timeout=PROVISION_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise InfraError(f"Kafka provisioning took over {PROVISION_TIMEOUT_S}s") from None
    if result.returncode != 0:
        # stdin carried the secrets; stdout/stderr never echo it.
        raise InfraError(f"Kafka provisioning failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def _program(libs: Path) -> list[str]:
    """The tool's class path and main: compiled once into the cache (javac), else run from
    source (Java 11+ single-file launch, a second slower)."""
    source = PROVISION_SOURCE.read_bytes()
    compiled = CACHE_DIR / "kafka-provision" / hashlib.sha256(source).hexdigest()[:16]
    javac = shutil.which("javac")
    if not (compiled / "Provision.class").exists() and javac is not None:
        building = compiled.with_name(compiled.name + f".{os.getpid()}")
        result = subprocess.run(
            [javac, "-cp", f"{libs}/*", "-d", str(building), str(PROVISION_SOURCE)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise InfraError(f"javac could not compile {PROVISION_SOURCE}:\n{result.stderr}")
        try:
            building.rename(compiled)
        except OSError:  # another process compiled it meanwhile
            shutil.rmtree(building, ignore_errors=True)
    if (compiled / "Provision.class").exists():
        return ["-cp", f"{compiled}{os.pathsep}{libs}/*", "Provision"]
    return ["-cp", f"{libs}/*", str(PROVISION_SOURCE)]


def provision_network(
    libs: Path, bootstrap: str, admin: KafkaSecurity, credentials: Path, sites: Sequence[str]
) -> float:
    """Every principal of the network (passwords from/into the credentials directory)."""
    names = [p for p in principals(sites) if p != ADMIN]
    passwords = ensure_passwords(credentials, names)
    return provision(libs, bootstrap, admin, passwords, acl_table(sites, service_reads()))


def main(argv: list[str] | None = None) -> int:
    from deploy.local_kafka import kafka_libs

    parser = argparse.ArgumentParser(prog="python -m deploy.kafka_provision", description=__doc__)
    parser.add_argument("--bootstrap", default=os.environ.get("CELLBANK_KAFKA_BOOTSTRAP", ""))
    parser.add_argument("--sites", default="LON,MAN,EDI")
    parser.add_argument("--credentials", type=Path, required=True, help="password files (0600)")
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error("--bootstrap or CELLBANK_KAFKA_BOOTSTRAP is required")
    admin = KafkaSecurity.from_env()
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    seconds = provision_network(kafka_libs(), args.bootstrap, admin, args.credentials, sites)
    print(f"provisioned {len(principals(sites)) - 1} principals in {seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
