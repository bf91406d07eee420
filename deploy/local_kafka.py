"""A single-node Apache Kafka 4 broker in KRaft mode, run from Maven Central jars."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from deploy.kafka_principals import ADMIN
from deploy.kafka_provision import ensure_passwords
from deploy.processes import (
    CACHE_DIR,
    REPO_ROOT,
    InfraError,
    free_port,
    log_tail,
    port_is_open,
    run_async,
    stop_process,
    wait_until,
)
from shared.kafka_clients import KafkaSecurity, admin_client

POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
DEPENDENCY_PLUGIN = "3.8.1"  # pinned: the fetch must not change with Maven's newest plugin
MAVEN_TIMEOUT_S = 900

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={listener}://127.0.0.1:{port}
log.dirs={log_dir}
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""

PLAINTEXT_PROPERTIES = """\
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
"""


def security_properties(admin: str, password: str) -> str:
    """A node's listener security: clients and brokers on SASL_PLAINTEXT with SCRAM-SHA-512,
    the controller listener on SASL PLAIN (KRaft cannot use SCRAM there: the credentials live in
    the metadata the controllers serve), the StandardAuthorizer denying what no ACL allows.
    The admin is the super user the brokers themselves authenticate as; its SCRAM credential is
    added when the storage is formatted. The file holds the password: keep it 0600."""
    scram = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{admin}" password="{password}";'
    )
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{admin}" password="{password}" user_{admin}="{password}";'
    )
    return "\n".join(
        [
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512",
            f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram}",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.controller.plain.sasl.jaas.config={plain}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            f"super.users=User:{admin}",
            "",
        ]
    )


LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache
logger.apache.level = WARN
"""


def kafka_libs(cache_dir: Path = CACHE_DIR) -> Path:
    """The broker's jars, fetched once with Maven into the git-ignored cache."""
    libs = cache_dir / "kafka-libs" / _pom_version()
    if (libs / ".complete").exists():
        return libs
    if shutil.which("mvn") is None:
        raise InfraError("Maven (mvn) is required to fetch the Kafka broker jars; install it")
    print(f"[cellbank] fetching Apache Kafka jars with Maven into {libs} (once)", flush=True)
    libs.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(POM),
        f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=MAVEN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise InfraError(f"mvn did not fetch the Kafka jars within {MAVEN_TIMEOUT_S}s") from None
    if result.returncode != 0:
        raise InfraError(f"mvn could not fetch the Kafka jars:\n{result.stdout}\n{result.stderr}")
    (libs / ".complete").touch()
    return libs


def _pom_version() -> str:
    text = POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


class LocalKafka:
    """Owns one broker process: format storage once, start, readiness, stop, restart."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        heap_mb: int = 768,
        authenticated: bool = True,
    ) -> None:
        self.data_dir = data_dir
        # SASL/SCRAM + ACLs (the default), or the old open PLAINTEXT broker.
        self.authenticated = authenticated
        self.credentials = data_dir / "credentials"  # one 0600 password file per principal
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap_mb = heap_mb
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = data_dir / "server.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_security(self) -> KafkaSecurity:
        """How the admin (super user) authenticates; PLAINTEXT when not authenticated."""
        if not self.authenticated:
            return KafkaSecurity()
        password = ensure_passwords(self.credentials, [ADMIN])[ADMIN]
        return KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", ADMIN, password)

    def _configure(self, libs: Path) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        formatted = (self.data_dir / "log" / "meta.properties").exists()
        if self.authenticated and formatted and not (self.credentials / ADMIN).exists():
            raise InfraError(
                f"{self.data_dir} holds a Kafka log from before authentication (no admin "
                "credentials next to it): delete it (make clean) to start afresh"
            )
        props = self.data_dir / "server.properties"
        listener = "SASL_PLAINTEXT" if self.authenticated else "PLAINTEXT"
        security = (
            security_properties(ADMIN, self.admin_security.password)
            if self.authenticated
            else PLAINTEXT_PROPERTIES
        )
        text = SERVER_PROPERTIES.format(
            listener=listener,
            port=self.port,
            controller_port=self.controller_port,
            log_dir=self.data_dir / "log",
        )
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text + security)
        props.chmod(0o600)
        (self.data_dir / "log4j2.properties").write_text(LOG4J2.format(log_file=self.log_file))
        if not formatted:
            self._format_storage(libs, props)
        return props

    def _java_cmd(self, libs: Path, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise InfraError("Java 17+ is required to run the Kafka broker; install it")
        return [
            java, f"-Xms{self.heap_mb // 2}m", f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp", f"{libs}/*", main, *args,
        ]  # fmt: skip

    def _format_storage(
        self, libs: Path, props: Path, quorum: tuple[str, ...] = ("--standalone",)
    ) -> None:
        """Format the log dir once; quorum: how the controllers are named (a single broker is
        `--standalone`; a cluster node passes its cluster id and static-quorum arguments)."""
        # --cluster-id=<id>, not "-t <id>": a random id may start with "-".
        if not any(a.startswith("--cluster-id=") for a in quorum):
            quorum = (*quorum, f"--cluster-id={_cluster_id()}")
        cmd = self._java_cmd(libs, "kafka.tools.StorageTool", "format", *quorum, "-c", str(props))
        if self.authenticated:
            # The brokers authenticate to each other as the admin before anyone could add it.
            password = self.admin_security.password
            cmd += ["--add-scram", f"SCRAM-SHA-512=[name={ADMIN},password={password}]"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InfraError(
                f"formatting Kafka storage in {self.data_dir} failed:\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker and return once a metadata request succeeds."""
        libs = kafka_libs()
        props = self._configure(libs)
        print(f"[cellbank] starting Kafka broker on {self.bootstrap}", flush=True)
        with open(self.data_dir / "stdout.log", "ab") as out:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                self._java_cmd(libs, "kafka.Kafka", str(props)),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(self._ready, timeout=timeout, what=f"Kafka broker on {self.bootstrap}")
        except InfraError as exc:
            self.stop()
            raise InfraError(f"{exc}\n--- broker log ---\n{log_tail(self.log_file)}") from None

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise InfraError(
                f"Kafka broker exited with {self.proc.returncode}\n{log_tail(self.log_file)}"
            )
        return port_is_open("127.0.0.1", self.port) and run_async(
            lambda: metadata_ready(self.bootstrap, self.admin_security)
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM); SIGKILL after timeout."""
        if self.proc is not None:
            stop_process(self.proc, timeout=timeout, name="Kafka broker")
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


async def metadata_ready(bootstrap: str, security: KafkaSecurity | None = None) -> bool:
    """True when the broker answers a metadata request with itself as a live broker."""
    from aiokafka.errors import KafkaError

    admin = admin_client(bootstrap, security=security, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
        return bool(cluster.get("brokers"))
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


def _cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes, URL-safe base64 without padding.
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
