"""Runs one service's outbox relay as a process: `python -m shared.relay_main`."""

from __future__ import annotations

import asyncio
import signal

from shared.db import create_pool, database_name, ensure_database, migrate, with_database
from shared.errors import InvalidArgument
from shared.logs import configure_logging
from shared.metrics import serve_metrics
from shared.outbox_relay import OutboxRelay
from shared.postgres_eventstore import PostgresEventStore
from shared.settings import Settings
from shared.topics import SERVICE_TOPICS
from shared.trust_settings import site_signer


async def main() -> None:
    settings = Settings.from_env(serves_calls=False)  # it takes no calls: no issuer needed
    configure_logging(settings.log_level, site=settings.site_id, service=settings.service)
    topic = settings.relay_topic or SERVICE_TOPICS.get(settings.service)
    if topic is None:
        raise InvalidArgument("CELLBANK_SERVICE", f"must be one of {', '.join(SERVICE_TOPICS)}")
    signer = site_signer(settings)  # no key, no relay: the error names the setting
    dbname = settings.database_name or database_name(settings.site_id, settings.service)
    if settings.metrics_port:
        serve_metrics(settings.metrics_port, settings.metrics_host)
    await ensure_database(settings.database_url, dbname)
    pool = await create_pool(with_database(settings.database_url, dbname), max_size=4)
    try:
        await migrate(pool)
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


if __name__ == "__main__":
    asyncio.run(main())
