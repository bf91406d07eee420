"""Faust cold-chain worker: `python -m services.storage.entrypoints.coldchain_worker worker`.

Watches every tank's readings on cellbank.telemetry.v1 (key: tank id) and turns excursion and
silent-sensor facts into QuarantineTank commands to the owning site's storage service. Dry
shipper loggers (readings with device = "shipper") are watched the same way; their facts go to
the site's delivery service (ReportShipperExcursion: the shipment in transit is compromised).
Configuration (environment): CELLBANK_KAFKA_BOOTSTRAP, CELLBANK_STORAGE_ENDPOINTS
("LON=host:port,MAN=host:port"), CELLBANK_DELIVERY_ENDPOINTS (same form),
CELLBANK_OIDC_ISSUER, CELLBANK_OIDC_CLIENT_ID and CELLBANK_OIDC_CLIENT_SECRET (its client),
CELLBANK_COLDCHAIN_MAX_C, CELLBANK_COLDCHAIN_EXCURSION_MINUTES, CELLBANK_COLDCHAIN_SILENCE_MINUTES,
CELLBANK_COLDCHAIN_APP_ID.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from datetime import UTC, datetime
from typing import Any

import faust
import grpc
from cellbank.delivery.v1 import delivery_service_pb2 as dlv
from cellbank.delivery.v1 import delivery_service_pb2_grpc as dlv_grpc
from cellbank.storage.v1 import storage_service_pb2 as spb
from cellbank.storage.v1 import storage_service_pb2_grpc as spb_grpc

from services.storage.adapters.telemetry_codec import MESSAGE_TYPE, SHIPPER, decode_telemetry
from services.storage.coldchain.monitor import TankMonitor
from services.storage.coldchain.watch import ColdChainRules, Fact, Reading, TankWatch
from shared import metrics
from shared.kafka_clients import KafkaSecurity
from shared.oidc import ClientCredentials
from shared.settings import parse_endpoints
from shared.topics import TELEMETRY

log = logging.getLogger("cellbank.coldchain")


def rules_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> ColdChainRules:
    return ColdChainRules(
        max_celsius=float(env.get("CELLBANK_COLDCHAIN_MAX_C", "-150")),
        excursion_minutes=float(env.get("CELLBANK_COLDCHAIN_EXCURSION_MINUTES", "10")),
        silence_minutes=float(env.get("CELLBANK_COLDCHAIN_SILENCE_MINUTES", "15")),
    )


# Worth retrying: the site is down, busy or raced. Anything else (unknown tank, refused
# credentials, a rule) will not change by retrying and would stall the whole partition.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class QuarantineDispatcher:
    """Facts → QuarantineTank at the owning site (a shipper's: ReportShipperExcursion at the
    site's delivery service, which compromises the shipment in transit), retried until the
    site answers."""

    def __init__(
        self,
        endpoints: dict[str, str],
        tokens: ClientCredentials,
        delivery: dict[str, str] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.delivery = delivery or {}
        self.tokens = tokens  # the monitor's own client (role monitor-coldchain)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address) or grpc.aio.insecure_channel(address)
        self._channels[address] = channel
        return channel

    async def dispatch(self, fact: Fact) -> None:
        if fact.tank_id.startswith(SHIPPER):
            await self._shipper(fact)
            return
        address = self.endpoints.get(fact.site_id)
        if address is None:
            log.error(
                "no storage endpoint for site; fact dropped",
                extra={"site": fact.site_id, "cause": fact.cause},
            )
            return
        stub = spb_grpc.StorageServiceStub(self._channel(address))
        request = spb.QuarantineTankRequest(
            tank_id=fact.tank_id, cause=fact.cause, reason=f"cold chain: {type(fact).__name__}"
        )
        delay = 0.2
        while True:
            try:
                reply = await stub.QuarantineTank(
                    request, metadata=await self.tokens.ametadata(), timeout=10
                )
                log.warning(
                    "tank quarantined by the cold-chain monitor",
                    extra={"tank": fact.tank_id, "cause": fact.cause, "units": len(reply.unit_ids)},
                )
                return
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE:
                    log.error(
                        "quarantine refused; fact dropped",
                        extra={"cause": fact.cause, "error": err.details()},
                    )
                    return
                log.warning(
                    "storage unavailable; retrying",
                    extra={"cause": fact.cause, "error": err.details()},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _shipper(self, fact: Fact) -> None:
        address = self.delivery.get(fact.site_id)
        shipper_id = fact.tank_id.removeprefix(SHIPPER)
        if address is None:
            log.error(
                "no delivery endpoint for site; shipper fact dropped",
                extra={"site": fact.site_id, "cause": fact.cause},
            )
            return
        stub = dlv_grpc.DeliveryServiceStub(self._channel(address))
        request = dlv.ReportShipperExcursionRequest(
            shipper_id=shipper_id, cause=fact.cause, detail=f"cold chain: {type(fact).__name__}"
        )
        delay = 0.2
        while True:
            try:
                reply = await stub.ReportShipperExcursion(
                    request, metadata=await self.tokens.ametadata(), timeout=10
                )
                log.warning(
                    "shipper excursion reported",
                    extra={"shipper": shipper_id, "cause": fact.cause,
                           "shipments": list(reply.shipment_ids)},
                )  # fmt: skip
                return
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE:
                    log.error(
                        "shipper excursion refused; fact dropped",
                        extra={"cause": fact.cause, "error": err.details()},
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _watch_to_json(watch: TankWatch) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "site_id": watch.site_id,
        "last_reading_at": iso(watch.last_reading_at),
        "above_since": iso(watch.above_since),
        "max_celsius": watch.max_celsius,
        "excursion_reported": watch.excursion_reported,
        "silence_reported": watch.silence_reported,
    }


def _watch_from_json(raw: dict[str, Any]) -> TankWatch:
    def dt(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    return TankWatch(
        raw["site_id"], dt(raw["last_reading_at"]), dt(raw["above_since"]), raw["max_celsius"],
        raw["excursion_reported"], raw["silence_reported"],
    )  # fmt: skip


app = faust.App(
    os.environ.get("CELLBANK_COLDCHAIN_APP_ID", "cellbank-coldchain"),
    broker=f"kafka://{os.environ.get('CELLBANK_KAFKA_BOOTSTRAP', '127.0.0.1:9092')}",
    broker_credentials=KafkaSecurity.from_env().faust_credentials(),
    store="memory://",
    topic_replication_factor=int(os.environ.get("CELLBANK_TOPIC_REPLICATION_FACTOR", "1")),
    topic_partitions=int(os.environ.get("CELLBANK_TOPIC_PARTITIONS", "3")),
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=0.5,
    web_enabled=False,
    # Faust keeps local state in a folder; never in the working directory (the repository).
    datadir=os.environ.get("CELLBANK_COLDCHAIN_DATADIR")
    or os.path.join(tempfile.gettempdir(), "cellbank-coldchain-{conf.name}"),
)
telemetry_topic = app.topic(
    os.environ.get("CELLBANK_TELEMETRY_TOPIC", TELEMETRY),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
# Keys are the raw tank-id bytes, partitioned by the producer's partitioner exactly as the
# telemetry topic is: the changelog stays co-partitioned although the agent processes batches
# (outside a single event's context, where Faust cannot pick the partition itself).
watch_table = app.Table(
    "tank_watch",
    default=None,
    key_type=bytes,
    partitions=app.conf.topic_partitions,
    use_partitioner=True,
)

monitor = TankMonitor(
    rules_from_env(),
    persist=lambda tank_id, watch: watch_table.__setitem__(tank_id.encode(), _watch_to_json(watch)),
    restore=lambda tank_id: (
        _watch_from_json(raw) if (raw := watch_table.get(tank_id.encode())) else None
    ),
)


@watch_table.on_recover
async def restore_watches() -> None:
    """After a restart, every tank's last persisted watch: a tank that stays silent across the
    restart is still caught by the live check."""
    for key, raw in watch_table.items():
        if raw:
            monitor.adopt(key.decode(), _watch_from_json(raw))


dispatcher = QuarantineDispatcher(
    parse_endpoints(os.environ.get("CELLBANK_STORAGE_ENDPOINTS", "")),
    ClientCredentials.from_env(),
    parse_endpoints(
        os.environ.get("CELLBANK_DELIVERY_ENDPOINTS", ""), "CELLBANK_DELIVERY_ENDPOINTS"
    ),
)


@app.agent(telemetry_topic)
async def watch_tanks(stream: Any) -> None:
    # Batches of records: Faust's per-event await costs more than the watch itself at sensor
    # volumes; a record is one reading or (from a batching sensor) many.
    async for events in stream.take_events(1000, within=0.05):
        now = datetime.now(UTC)
        for event in events:
            try:
                record = decode_telemetry(event.value, event.headers.get(MESSAGE_TYPE), now)
            except Exception as exc:  # a poison record never stops the monitor
                metrics.TELEMETRY_SKIPPED.labels("coldchain").inc()
                log.error("undecodable telemetry record skipped", extra={"error": repr(exc)})
                continue
            partition = event.message.partition
            try:
                if isinstance(record, Reading):
                    facts = monitor.observe(record, partition)
                else:
                    facts = monitor.observe_batch(record, partition)
            except Exception as exc:  # nor does one the monitor fails to judge
                metrics.TELEMETRY_SKIPPED.labels("coldchain").inc()
                log.error("unjudgeable telemetry record skipped", extra={"error": repr(exc)})
                continue
            for fact in facts:
                await dispatcher.dispatch(fact)
                monitor.acknowledge(fact)


@app.timer(interval=float(os.environ.get("CELLBANK_COLDCHAIN_LIVE_CHECK_S", "30")))
async def live_silence_check() -> None:
    for fact in monitor.check_silence_live(datetime.now(UTC)):
        await dispatcher.dispatch(fact)  # acknowledged (persisted) with the tank's next reading


if __name__ == "__main__":
    app.main()
