"""Faust SLA monitor: `python -m services.delivery.entrypoints.sla_worker worker`.

Follows every site's shipments on cellbank.delivery.events.v1 and, on a timer, reports a
shipment in transit that will miss its promised delivery time to the owning site's delivery
service (FlagAtRisk → ShipmentAtRisk, which operators see). The rule is
services/delivery/domain/sla.py; this app only keeps the watches and sends the command.
Configuration (environment): CELLBANK_KAFKA_BOOTSTRAP, CELLBANK_DELIVERY_ENDPOINTS
("LON=host:port,…"), CELLBANK_OIDC_ISSUER, CELLBANK_OIDC_CLIENT_ID and CELLBANK_OIDC_CLIENT_SECRET (its client), CELLBANK_SLA_CHECK_S (10),
CELLBANK_SLA_MARGIN_MINUTES (15), CELLBANK_SLA_APP_ID, CELLBANK_SLA_DATADIR,
CELLBANK_TRUST_LIST_FILE (the network's trust list: a record it does not vouch for is
dead-lettered and counted, never followed), CELLBANK_DELIVERY_TOPIC (tests).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import grpc
from cellbank.delivery.v1 import delivery_service_pb2 as dpb
from cellbank.delivery.v1 import delivery_service_pb2_grpc as dpb_grpc

from services.delivery.adapters.codec import CODEC
from services.delivery.domain import model
from services.delivery.domain.sla import SlaWatch, at_risk
from shared.kafka_clients import KafkaSecurity
from shared.oidc import ClientCredentials
from shared.settings import parse_endpoints
from shared.topics import DEADLETTER, DELIVERY_EVENTS
from shared.trust import TrustList
from shared.untrusted import Refused, count, judge_one

SLA_CONSUMER = "sla"  # the consumer label of what this monitor refuses

log = logging.getLogger(__name__)


def follow(watch: SlaWatch | None, site_id: str, event: object) -> SlaWatch | None:
    """The watch after one shipment event (pure)."""
    match event:
        case model.ShipmentCreated(promised_at=promised, planned_transit_minutes=transit):
            return SlaWatch(site_id, promised, transit)
        case model.ShipmentDispatched(at) if watch is not None:
            return dataclasses.replace(watch, dispatched_at=at)
        case model.ShipmentDelivered() | model.ShipmentReturned() if watch is not None:
            return dataclasses.replace(watch, done=True)
        case model.ShipmentAtRisk() if watch is not None:
            return dataclasses.replace(watch, flagged=True)
    return watch


def _to_json(w: SlaWatch) -> dict[str, Any]:
    return {
        "site_id": w.site_id, "promised_at": w.promised_at.isoformat(),
        "planned_transit_minutes": w.planned_transit_minutes,
        "dispatched_at": w.dispatched_at.isoformat() if w.dispatched_at else None,
        "done": w.done, "flagged": w.flagged,
    }  # fmt: skip


def _from_json(raw: dict[str, Any]) -> SlaWatch:
    dispatched = raw["dispatched_at"]
    return SlaWatch(
        raw["site_id"], datetime.fromisoformat(raw["promised_at"]),
        raw["planned_transit_minutes"], datetime.fromisoformat(dispatched) if dispatched else None,
        raw["done"], raw["flagged"],
    )  # fmt: skip


app = faust.App(
    os.environ.get("CELLBANK_SLA_APP_ID", "cellbank-sla"),
    broker=f"kafka://{os.environ.get('CELLBANK_KAFKA_BOOTSTRAP', '127.0.0.1:9092')}",
    broker_credentials=KafkaSecurity.from_env().faust_credentials(),
    store="memory://",
    topic_replication_factor=int(os.environ.get("CELLBANK_TOPIC_REPLICATION_FACTOR", "1")),
    topic_partitions=int(os.environ.get("CELLBANK_TOPIC_PARTITIONS", "3")),
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    datadir=os.environ.get("CELLBANK_SLA_DATADIR")
    or os.path.join(tempfile.gettempdir(), "cellbank-sla-{conf.name}"),
)
delivery_topic = app.topic(
    os.environ.get("CELLBANK_DELIVERY_TOPIC", DELIVERY_EVENTS),
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
)  # fmt: skip
deadletters = app.topic(
    DEADLETTER, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)
watches = app.Table(
    "shipment_sla", default=None, key_type=bytes, partitions=app.conf.topic_partitions
)
endpoints = parse_endpoints(
    os.environ.get("CELLBANK_DELIVERY_ENDPOINTS", ""), "CELLBANK_DELIVERY_ENDPOINTS"
)
tokens = ClientCredentials.from_env()  # the monitor's own client (role monitor-sla)
margin = timedelta(minutes=float(os.environ.get("CELLBANK_SLA_MARGIN_MINUTES", "15")))


@functools.cache
def trust() -> TrustList:
    """The trust list, read once (the worker refuses to start without it: see __main__)."""
    return TrustList.from_env()


@app.agent(delivery_topic)
async def follow_shipments(stream: Any) -> None:
    async for record in stream.events():
        message = record.message
        key = record.key
        verdict = judge_one(trust(), message)
        if isinstance(verdict, Refused):  # never followed: it could raise a false alarm
            await deadletters.send(
                key=key, value=message.value,
                headers={
                    "error": verdict.error.encode(), "untrusted_reason": verdict.reason.encode(),
                    "projection": SLA_CONSUMER.encode(),
                    "original_topic": message.topic.encode(),
                    "original_partition": str(message.partition).encode(),
                    "original_offset": str(message.offset).encode(),
                },
            )  # fmt: skip
            count(SLA_CONSUMER, verdict)
            continue
        stored = verdict
        try:
            if stored.aggregate_type != "shipment":
                continue
            event = CODEC.decode(stored.event_type, stored.payload)
        except Exception as exc:  # a poison record never stops the monitor
            log.error("undecodable delivery event skipped", extra={"error": repr(exc)})
            continue
        raw = watches.get(key)
        before = _from_json(raw) if raw else None
        after = follow(before, stored.site_id, event)
        if after is not None and after != before:
            watches[key] = _to_json(after)


reported: set[bytes] = set()  # shipments flagged by this process


@app.timer(interval=float(os.environ.get("CELLBANK_SLA_CHECK_S", "10")))
async def check_promises() -> None:
    now = datetime.now(UTC)
    for key, raw in list(watches.items()):
        if not raw or key in reported:
            continue
        watch = _from_json(raw)
        risk = at_risk(watch, now, margin)
        if risk is None:
            continue
        expected, why = risk
        address = endpoints.get(watch.site_id)
        if address is None:
            log.error("no delivery endpoint for site", extra={"site": watch.site_id})
            continue
        request = dpb.FlagAtRiskRequest(shipment_id=key.decode(), why=why)
        request.expected_at.FromDatetime(expected)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                await dpb_grpc.DeliveryServiceStub(channel).FlagAtRisk(
                    request, metadata=await tokens.ametadata(), timeout=10
                )
        except grpc.aio.AioRpcError as err:
            log.warning(
                "at-risk report failed; next round retries",
                extra={"shipment": key.decode(), "code": err.code().name},
            )
            continue
        log.warning("shipment at risk", extra={"shipment": key.decode(), "why": why})
        # A table is written only inside stream iteration (Faust): remember the report here.
        # After a restart a shipment may be reported once more; FlagAtRisk is idempotent.
        reported.add(key)


if __name__ == "__main__":
    trust()  # no trust list, no monitor: the error names CELLBANK_TRUST_LIST_FILE
    app.main()
