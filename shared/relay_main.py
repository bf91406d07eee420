"""Runs one service's outbox relay as a process: `python -m shared.relay_main`."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from shared.db import SHARED_MIGRATIONS, database_name, migration_files, with_database
from shared.errors import InvalidArgument
from shared.logs import configure_logging
from shared.metrics import serve_metrics
from shared.outbox_relay import OutboxRelay
from shared.postgres_eventstore import PostgresEventStore
from shared.service_host import open_service_database
from shared.service_lock import hold_service_lock
from shared.settings import Settings
from shared.topics import SERVICE_TOPICS
from shared.tracing import configure_tracing
from shared.trust_settings import site_signer


async def main() -> None:
    settings = Settings.from_env(serves_calls=False)  # it takes no calls: no issuer needed
    configure_logging(settings.log_level, site=settings.site_id, service=settings.service)
    topic = settings.relay_topic or SERVICE_TOPICS.get(settings.service)
    if topic is None:
        raise InvalidArgument("CELLBANK_SERVICE", f"must be one of {', '.join(SERVICE_TOPICS)}")
    signer = site_signer(settings)  # no key, no relay: the error names the setting
    configure_tracing(f"{settings.service}.relay", settings.site_id)
    dbname = settings.database_name or database_name(settings.site_id, settings.service)
    if settings.metrics_port:
        serve_metrics(settings.metrics_port, settings.metrics_host)
    # As the service would: migrate as the owner role (if given), run as the runtime role, and
    # hold the service's lock (a restore refuses while it runs).
    pool = await open_service_database(
        settings, dbname, migration_files(SHARED_MIGRATIONS), max_size=4
    )
    lock = None
    try:
        lock = await hold_service_lock(
            with_database(settings.database_url, dbname), settings.site_id, settings.service
        )
        store = PostgresEventStore(
            pool, settings.site_id, service=settings.service,
            max_envelope_bytes=settings.max_envelope_bytes,
        )  # fmt: skip
        relay = OutboxRelay(
            store,
            signer=signer,
            topic=topic,
            bootstrap=settings.kafka_bootstrap,
            name=f"{settings.site_id}.{settings.service}.relay",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await relay.run(stop)
    finally:
        await pool.close()
        if lock is not None:
            with contextlib.suppress(Exception):  # a server restart may have closed it already
                await lock.close()


if __name__ == "__main__":
    asyncio.run(main())
