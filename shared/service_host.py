"""Runs one bank service at one site: event store, outbox relay, projections, gRPC, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from shared.anchor_log import ANCHOR_HEALTH, AnchorPublisher
from shared.auth import JwtAuthenticator
from shared.chain_key import MissingChainKey
from shared.db import (
    SHARED_MIGRATIONS,
    create_pool,
    database_name,
    ensure_database,
    migrate,
    migration_files,
    with_database,
)
from shared.db_roles import DatabaseRoles, apply_grants, role_is_privileged, role_of
from shared.eventstore import Clock, utc_now
from shared.grpc_server import (
    RunningServer,
    ServiceBinding,
    server_credentials,
    start_server,
    wait_for_termination_signal,
)
from shared.metrics import serve_metrics
from shared.operator_servicer import NetworkStatusSource, OperatorServicer, operator_binding
from shared.outbox_relay import RELAY_HEALTH, OutboxRelay
from shared.postgres_eventstore import PostgresEventStore
from shared.projections import Projection, ProjectionRunner
from shared.service_lock import hold_service_lock
from shared.settings import Settings
from shared.state_as_of import Folded, Snapshots, snapshot_worker
from shared.topics import SERVICE_TOPICS
from shared.tracing import configure_tracing
from shared.trust_settings import site_signer, trust_list

log = logging.getLogger(__name__)


class HealthDetails:
    """Health of named parts beside the service's own (`grpc.health.v1.Health/Check` by name):
    a part NOT_SERVING degrades the service without stopping it. Set any time; the host shows
    it once its server runs."""

    def __init__(self) -> None:
        self._parts: dict[str, bool] = {}
        self._server: RunningServer | None = None

    def __getitem__(self, part: str) -> bool:
        return self._parts[part]

    async def set(self, part: str, *, serving: bool) -> None:
        self._parts[part] = serving
        if self._server is not None:
            await self._server.set_health(part, serving=serving)

    async def attach(self, server: RunningServer) -> None:
        self._server = server
        for part, serving in self._parts.items():
            await server.set_health(part, serving=serving)


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """What a service's composition root gets to build its servicers and projections."""

    settings: Settings
    pool: asyncpg.Pool
    store: PostgresEventStore
    clock: Clock
    health: HealthDetails = field(default_factory=HealthDetails)


Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Components:
    """What a service's build makes at start-up. Its projections and policies are not here:
    the service spec declares them, so the host, a replay and the benches see the same ones."""

    bindings: Sequence[ServiceBinding]
    # The object the spec's policies issue their commands to (the service layer).
    app: object = None
    workers: Sequence[Worker] = ()  # background loops (schedulers, publishers) run until stop
    network_status: NetworkStatusSource | None = None  # OperatorService.GetNetworkStatus
    # Run once, in order, after migrations and before the relay, projections, workers and the
    # server start (e.g. matching settling which HLA reference release it classifies with).
    startup: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    # Closed by the host, in order, once the server and workers stopped (e.g. the channels of
    # a port's adapter to other sites): the host owns lifecycles, not the service layer.
    closers: Sequence[Callable[[], Awaitable[None]]] = ()


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A service, declared: its read-model migrations, its projections (consumers that only
    fold events into its own tables: what a replay rebuilds), its policies (consumers that
    issue commands: never run by a replay), and the build of everything else."""

    name: str  # donor_intake, manufacturing, …
    migrations: Path  # the service's numbered SQL (read models)
    build: Callable[[ServiceContext], Components]
    projections: tuple[Callable[[], Projection], ...] = ()
    # Each called with the Components' app.
    policies: tuple[Callable[[Any], Projection], ...] = ()
    # The aggregates OperatorService.GetStateAsOf folds from the store as of a moment.
    folds: tuple[Folded, ...] = ()

    def read_models(self) -> list[Projection]:
        """The projections, built: what the host runs beside the policies, and a replay alone."""
        return [make() for make in self.projections]

    def subscriptions(self) -> dict[str, tuple[str, ...]]:
        """Each consumer's name → the topics it reads, policies included (a policy is a class
        whose name and topics are class attributes: listed without building the service)."""
        subscribed = {p.name: tuple(p.topics) for p in self.read_models()}
        for policy in self.policies:
            subscribed[policy.name] = tuple(policy.topics)  # type: ignore[attr-defined]
        return subscribed


@dataclass
class ServiceHost:
    spec: ServiceSpec
    settings: Settings
    clock: Clock = utc_now
    pool: asyncpg.Pool | None = None
    server: RunningServer | None = None
    runners: list[ProjectionRunner] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncpg.Connection | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    async def start(self) -> None:
        """Start everything; if any part fails, stop what already started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self) -> None:
        s, name = self.settings, self.spec.name
        if s.chain_key is None:
            raise MissingChainKey()
        # Refuse to start without the site's key or the trust list (the error names the
        # setting): a relay must not publish unsigned, nor a consumer apply unverified.
        signer, trust = site_signer(s), trust_list(s)
        configure_tracing(name, s.site_id)  # before the server and channels: they are traced
        dbname = s.database_name or database_name(s.site_id, name)
        spec = self.spec
        self.pool = await open_service_database(
            s,
            dbname,
            migration_files(SHARED_MIGRATIONS, spec.migrations),
        )
        # Held for the service's lifetime: `cellbank replay --restore` refuses while it is.
        self._lock = await hold_service_lock(with_database(s.database_url, dbname), s.site_id, name)
        store = PostgresEventStore(
            self.pool, s.site_id, service=name, clock=self.clock, chain_key=s.chain_key,
            max_envelope_bytes=s.max_envelope_bytes,
        )  # fmt: skip
        context = ServiceContext(s, self.pool, store, self.clock)
        components = self.spec.build(context)
        self._closers.extend(components.closers)
        for step in components.startup:
            await step()
        relay_name = f"{s.site_id}.{name}.relay"
        relay = OutboxRelay(
            store,
            signer=signer,
            topic=s.relay_topic or SERVICE_TOPICS[name],
            bootstrap=s.kafka_bootstrap,
            name=relay_name,
            # A parked record (one Kafka never takes) awaits an operator: say so on health.
            health=lambda serving: context.health.set(RELAY_HEALTH, serving=serving),
        )
        self._tasks.append(asyncio.create_task(relay.run(self._stop), name=relay_name))
        # Beside the relay: the chain head, signed, at an interval and as the service stops
        # (real time, not the service's clock: an anchor attests when it was made).
        anchors = AnchorPublisher(
            store, service=name, signer=signer, bootstrap=s.kafka_bootstrap,
            interval=s.anchor_interval_seconds,
            health=lambda serving: context.health.set(ANCHOR_HEALTH, serving=serving),
        )  # fmt: skip
        self._tasks.append(
            asyncio.create_task(anchors.run(self._stop), name=f"{s.site_id}.{name}.anchors")
        )
        policies = [make(components.app) for make in spec.policies]
        for projection in [*spec.read_models(), *policies]:
            group = f"{s.site_id}.{name}.{projection.name}"
            runner = ProjectionRunner(
                self.pool, projection, trust=trust, bootstrap=s.kafka_bootstrap, group_id=group
            )
            self.runners.append(runner)
            self._tasks.append(asyncio.create_task(runner.run(self._stop), name=group))
        for worker in components.workers:
            self._tasks.append(asyncio.create_task(worker(self._stop), name=f"{name}.worker"))
        if spec.folds:  # state as of a moment starts from the newest snapshot of the states
            Snapshots.of(spec.folds)  # a state type without a snapshot form fails the start
            snapshots = snapshot_worker(
                self.pool, spec.folds, self._stop, every=s.snapshot_every_events,
                interval=s.snapshot_interval_seconds,
            )  # fmt: skip
            self._tasks.append(asyncio.create_task(snapshots, name=f"{name}.snapshots"))
        operator = OperatorServicer(
            store, service=name, relay_name=relay_name, trust=trust, bootstrap=s.kafka_bootstrap,
            network_status=components.network_status, folds=spec.folds, clock=self.clock,
        )  # fmt: skip
        credentials = (
            server_credentials(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)
            if s.tls_cert_file
            else None
        )
        self.server = await start_server(
            [*components.bindings, operator_binding(operator)],
            authenticator=JwtAuthenticator(
                issuer=s.oidc_issuer,
                audience=s.oidc_audience,
                jwks_url=s.oidc_jwks_url,
                sign_in_clients=s.oidc_sign_in_clients,
            ),
            host=s.grpc_host,
            port=s.grpc_port,
            credentials=credentials,
            maximum_concurrent_rpcs=s.grpc_max_concurrent_rpcs,
        )
        await context.health.attach(self.server)
        if s.metrics_port:
            serve_metrics(s.metrics_port, s.metrics_host)
        log.info(
            "service started", extra={"service": name, "site": s.site_id, "grpc_port": self.port}
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking calls (health NOT_SERVING, in-flight calls finish), then the workers."""
        if self.server is not None:
            await self.server.stop(grace)
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 15)
        for close in self._closers:
            try:
                await close()
            except Exception as exc:  # one failing close must not keep the others open
                log.warning("closing a component failed", extra={"error": repr(exc)})
        self._closers.clear()
        if self.pool is not None:
            await self.pool.close()
        if self._lock is not None:
            with contextlib.suppress(Exception):  # a server restart may have closed it already
                await self._lock.close()
            self._lock = None

    def failed(self) -> BaseException | None:
        """The error of a worker that died (relay or projection), if any."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None


async def serve(spec: ServiceSpec, build_settings: Callable[[], Settings] | None = None) -> None:
    """A service process: start, run until SIGTERM/SIGINT — or until a worker (relay,
    projection, scheduler) dies, which exits non-zero so a supervisor restarts the service."""
    settings = (build_settings or (lambda: Settings.from_env(service=spec.name)))()
    host = ServiceHost(spec, settings)
    await host.start()
    try:
        signal_task = asyncio.create_task(wait_for_termination_signal())
        await asyncio.wait([signal_task, *host._tasks], return_when=asyncio.FIRST_COMPLETED)
        signal_task.cancel()
        died = host.failed() or next((t for t in host._tasks if t.done()), None)
        if died is not None:
            log.error("a worker of the service stopped; exiting", extra={"error": repr(died)})
            raise SystemExit(1)
    finally:
        await host.stop()


async def open_service_database(
    s: Settings, dbname: str, files: Sequence[Path], *, max_size: int = 12
) -> asyncpg.Pool:
    """Create and migrate the service's database, then the pool the service runs on.

    With an owner URL (CELLBANK_MIGRATION_DATABASE_URL) the owner migrates and grants, and the
    service connects as the runtime role, which must not be able to rewrite the event store
    (refused otherwise). Without one, the one URL migrates and runs: local tools and tests of
    one role; it says so in the log."""
    if not s.migration_database_url:
        await ensure_database(s.database_url, dbname)
        pool = await create_pool(
            with_database(s.database_url, dbname), min_size=2, max_size=max_size
        )
        try:
            await migrate(pool, files)
        except BaseException:
            await pool.close()
            raise
        log.warning(
            "one database role migrates and runs the service: it owns the event store "
            "(set CELLBANK_MIGRATION_DATABASE_URL for least privilege)",
            extra={"service": s.service, "database": dbname},
        )
        return pool
    roles = DatabaseRoles(
        owner=role_of(s.migration_database_url, "CELLBANK_MIGRATION_DATABASE_URL"),
        runtime=role_of(s.database_url, "CELLBANK_DATABASE_URL"),
        reader=s.database_reader_role,
    )
    await ensure_database(s.migration_database_url, dbname)
    owner = await create_pool(with_database(s.migration_database_url, dbname), max_size=1)
    try:
        await migrate(owner, files, grants=lambda conn: apply_grants(conn, roles))
    finally:
        await owner.close()
    pool = await create_pool(with_database(s.database_url, dbname), min_size=2, max_size=max_size)
    try:
        async with pool.acquire() as conn:
            why = await role_is_privileged(conn)
        if why:
            raise PermissionError(
                f"CELLBANK_DATABASE_URL connects as {roles.runtime}, which could rewrite the "
                f"event store: {why}; give the service a runtime role (README, Database roles)"
            )
    except BaseException:
        await pool.close()
        raise
    log.info(
        "database roles: migrated as owner, running as runtime",
        extra={"service": s.service, "owner": roles.owner, "runtime": roles.runtime},
    )
    return pool


def run(spec: ServiceSpec) -> None:
    from shared.logs import configure_logging

    settings = Settings.from_env(service=spec.name)
    configure_logging(settings.log_level, site=settings.site_id, service=spec.name)
    asyncio.run(serve(spec, lambda: settings))
