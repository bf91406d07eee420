"""The network's genealogy for lookback, recall and trace, from the events of every context
and every site. Each event writes only its own columns (upserts), so the topics' relative
order does not matter; within one aggregate, Kafka keeps the order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from services.delivery.adapters.codec import CODEC as DELIVERY_CODEC
from services.delivery.domain import model as delivery
from services.delivery.upstream import donor, manufacturing, matching, storage
from shared.bulk_replay import Tables
from shared.events import StoredEvent
from shared.topics import (
    DELIVERY_EVENTS,
    DONOR_EVENTS,
    MANUFACTURING_EVENTS,
    MATCHING_EVENTS,
    STORAGE_EVENTS,
)


class LookbackProjection:
    name = "lookback"
    topics = (DONOR_EVENTS, MANUFACTURING_EVENTS, STORAGE_EVENTS, MATCHING_EVENTS, DELIVERY_EVENTS)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)
    bulk_tables = (
        "lb_donors", "lb_collections", "lb_batches", "lb_units", "lb_orders", "lb_notifications",
        "lb_hla_references", "lb_shipments", "lb_recalls",
    )  # fold: a replay's bulk path (shared.bulk_replay)  # fmt: skip

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        kind = event.aggregate_type
        if kind == "donor":
            await self._donor(conn, event, donor.translate(event))
        elif kind == "batch":
            await self._batch(conn, event, manufacturing.translate(event))
        elif kind == "unit":
            await self._unit(conn, event, storage.translate(event))
        elif kind in ("order", "notification"):
            await self._order(conn, event, matching.translate(event))
        elif kind == "hla_reference":
            reference = matching.translate(event)
            if isinstance(reference, matching.HlaReference):
                await self._hla_reference(conn, event, reference)
        elif kind == "shipment":
            await self._shipment(
                conn, event, DELIVERY_CODEC.decode(event.event_type, event.payload)
            )
        elif kind == "recall":
            e = DELIVERY_CODEC.decode(event.event_type, event.payload)
            if isinstance(e, delivery.RecallRaised):
                await conn.execute(
                    "INSERT INTO lb_recalls VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    event.aggregate_id, event.site_id, e.trigger.value, e.subject,
                    list(e.unit_ids), event.occurred_at,
                )  # fmt: skip

    async def _hla_reference(
        self, conn: asyncpg.Connection, event: StoredEvent, e: matching.HlaReference
    ) -> None:
        checksums = " ".join(f"{file}={sha256}" for file, sha256 in e.checksums)
        # The newest record of the site wins, whatever order a redelivery brings them in.
        await conn.execute(
            "INSERT INTO lb_hla_references VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (site_id) DO UPDATE SET release = $2, classification_version = $3,"
            " checksums = $4, source = $5, recorded_by = $6, recorded_at = $7,"
            " aggregate_version = $8 WHERE lb_hla_references.aggregate_version < $8",
            event.site_id, e.release, e.classification_version, checksums, e.source,
            event.actor, event.occurred_at, event.aggregate_version,
        )  # fmt: skip

    async def _donor(
        self, conn: asyncpg.Connection, event: StoredEvent, e: donor.DonorFact | None
    ) -> None:
        if isinstance(e, donor.DonorRegistered):
            await conn.execute(
                "INSERT INTO lb_donors VALUES ($1, $2, $3) ON CONFLICT (donor_id)"
                " DO UPDATE SET site_id = $2, registered_at = $3",
                event.aggregate_id, event.site_id, event.occurred_at,
            )  # fmt: skip
        elif isinstance(e, donor.Collected):
            await conn.execute(
                "INSERT INTO lb_collections VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                e.din, event.aggregate_id, event.site_id, e.collected_at,
            )  # fmt: skip

    async def _batch(
        self, conn: asyncpg.Connection, event: StoredEvent, e: manufacturing.BatchFact | None
    ) -> None:
        if isinstance(e, manufacturing.BatchStarted):
            await conn.execute(
                "INSERT INTO lb_batches (batch_id, din, donor_id, site_id, product_type)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (batch_id) DO UPDATE"
                " SET din = $2, donor_id = $3, site_id = $4, product_type = $5",
                event.aggregate_id, e.din, e.donor_id, event.site_id, e.product_type,
            )  # fmt: skip
        elif isinstance(e, manufacturing.BatchReleased):
            await conn.execute(
                "INSERT INTO lb_batches (batch_id, released_at) VALUES ($1, $2)"
                " ON CONFLICT (batch_id) DO UPDATE SET released_at = $2",
                event.aggregate_id, event.occurred_at,
            )  # fmt: skip
            await conn.executemany(
                "INSERT INTO lb_units (unit_id, batch_id, din, site_id) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (unit_id) DO UPDATE SET batch_id = $2, din = $3, site_id = $4",
                [(u.unit_id, event.aggregate_id, u.din, event.site_id) for u in e.units],
            )

    async def _unit(
        self, conn: asyncpg.Connection, event: StoredEvent, e: storage.UnitChanged | None
    ) -> None:
        unit_id = event.aggregate_id
        await conn.execute(
            "INSERT INTO lb_units (unit_id, site_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            unit_id, event.site_id,
        )  # fmt: skip
        if e is None:
            return
        await _update(conn, "lb_units", "unit_id", unit_id, _unit_sets(e))

    async def _order(
        self, conn: asyncpg.Connection, event: StoredEvent, e: matching.MatchingFact | None
    ) -> None:
        order_id = event.aggregate_id
        match e:
            case matching.OrderPlaced(hospital_id, patient_ref):
                await conn.execute(
                    "INSERT INTO lb_orders (order_id, site_id, hospital_id, patient_ref, placed_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO UPDATE"
                    " SET site_id = $2, hospital_id = $3, patient_ref = $4, placed_at = $5",
                    order_id, event.site_id, hospital_id, patient_ref, event.occurred_at,
                )  # fmt: skip
            case matching.OrderProgressed(stage, unit_ids):
                units = None if unit_ids is None else list(unit_ids)
                await self._order_set(conn, order_id, stage.value, units)
                if stage is matching.OrderStage.RECEIVED:
                    await conn.execute(
                        "UPDATE lb_orders SET received_at = $2 WHERE order_id = $1",
                        order_id, event.occurred_at,
                    )  # fmt: skip
            case matching.UnitInfused(unit_id):
                await self._order_set(conn, order_id, matching.OrderStage.INFUSED.value, None)
                await conn.execute(
                    "UPDATE lb_orders SET infused_at = $2,"
                    " infused_unit_ids = array_append(infused_unit_ids, $3) WHERE order_id = $1",
                    order_id, event.occurred_at, unit_id,
                )  # fmt: skip
            case matching.HospitalNotified(hospital_id, recall_id, notice_order):
                await conn.execute(
                    "INSERT INTO lb_notifications VALUES ($1, $2, $3, $4, false)"
                    " ON CONFLICT DO NOTHING",
                    order_id, recall_id, notice_order, hospital_id,
                )  # fmt: skip
            case matching.NotificationAcknowledged():
                await conn.execute(
                    "UPDATE lb_notifications SET acknowledged = true WHERE notification_id = $1",
                    order_id,
                )

    async def _order_set(
        self, conn: asyncpg.Connection, order_id: str, status: str, units: list[str] | None
    ) -> None:
        await conn.execute(
            "INSERT INTO lb_orders (order_id, status, unit_ids)"
            " VALUES ($1, $2, coalesce($3::text[], '{}'::text[]))"
            " ON CONFLICT (order_id) DO UPDATE SET status = $2,"
            " unit_ids = coalesce($3::text[], lb_orders.unit_ids)",
            order_id, status, units,
        )  # fmt: skip

    async def _shipment(self, conn: asyncpg.Connection, event: StoredEvent, e: object) -> None:
        shipment_id = event.aggregate_id
        await conn.execute(
            "INSERT INTO lb_shipments (shipment_id, site_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            shipment_id, event.site_id,
        )  # fmt: skip
        await _update(conn, "lb_shipments", "shipment_id", shipment_id, _shipment_sets(e))

    def fold(self, tables: Tables, event: StoredEvent) -> None:
        """apply's rows, in memory (a replay into an empty database)."""
        kind, key, site = event.aggregate_type, event.aggregate_id, event.site_id
        if kind == "donor":
            d = donor.translate(event)
            if isinstance(d, donor.DonorRegistered):
                tables["lb_donors"].upsert(
                    donor_id=key, site_id=site, registered_at=event.occurred_at
                )
            elif isinstance(d, donor.Collected):
                tables["lb_collections"].insert(
                    din=d.din, donor_id=key, site_id=site, collected_at=d.collected_at
                )
        elif kind == "batch":
            b = manufacturing.translate(event)
            if isinstance(b, manufacturing.BatchStarted):
                tables["lb_batches"].upsert(
                    batch_id=key, din=b.din, donor_id=b.donor_id, site_id=site,
                    product_type=b.product_type,
                )  # fmt: skip
            elif isinstance(b, manufacturing.BatchReleased):
                tables["lb_batches"].upsert(batch_id=key, released_at=event.occurred_at)
                for u in b.units:
                    tables["lb_units"].upsert(
                        unit_id=u.unit_id, batch_id=key, din=u.din, site_id=site
                    )
        elif kind == "unit":
            changed = storage.translate(event)
            tables["lb_units"].insert(unit_id=key, site_id=site)
            if changed is not None:
                tables["lb_units"].update(key, **_unit_sets(changed))
        elif kind in ("order", "notification"):
            self._fold_order(tables, event, matching.translate(event))
        elif kind == "hla_reference":
            r = matching.translate(event)
            if isinstance(r, matching.HlaReference):
                references, version = tables["lb_hla_references"], event.aggregate_version
                row = references.get(site)
                values = {
                    "release": r.release, "classification_version": r.classification_version,
                    "checksums": " ".join(f"{file}={sha256}" for file, sha256 in r.checksums),
                    "source": r.source, "recorded_by": event.actor,
                    "recorded_at": event.occurred_at, "aggregate_version": version,
                }  # fmt: skip
                if row is None:
                    references.insert(site_id=site, **values)
                elif row["aggregate_version"] < version:
                    references.update(site, **values)
        elif kind == "shipment":
            shipments = tables["lb_shipments"]
            shipments.insert(shipment_id=key, site_id=site)
            e = DELIVERY_CODEC.decode(event.event_type, event.payload)
            shipments.update(key, **_shipment_sets(e))
        elif kind == "recall":
            e = DELIVERY_CODEC.decode(event.event_type, event.payload)
            if isinstance(e, delivery.RecallRaised):
                tables["lb_recalls"].insert(
                    recall_id=key, site_id=site, trigger=e.trigger.value, subject=e.subject,
                    unit_ids=list(e.unit_ids), raised_at=event.occurred_at,
                )  # fmt: skip

    def _fold_order(
        self, tables: Tables, event: StoredEvent, e: matching.MatchingFact | None
    ) -> None:
        orders, order_id = tables["lb_orders"], event.aggregate_id
        match e:
            case matching.OrderPlaced(hospital_id, patient_ref):
                orders.upsert(
                    order_id=order_id, site_id=event.site_id, hospital_id=hospital_id,
                    patient_ref=patient_ref, placed_at=event.occurred_at,
                )  # fmt: skip
            case matching.OrderProgressed(stage, unit_ids):
                _fold_order_set(tables, order_id, stage.value, unit_ids)
                if stage is matching.OrderStage.RECEIVED:
                    orders.update(order_id, received_at=event.occurred_at)
            case matching.UnitInfused(unit_id):
                _fold_order_set(tables, order_id, matching.OrderStage.INFUSED.value, None)
                row = orders.get(order_id)
                if row is not None:
                    infused = [*row["infused_unit_ids"], unit_id]
                    orders.update(order_id, infused_at=event.occurred_at, infused_unit_ids=infused)
            case matching.HospitalNotified(hospital_id, recall_id, notice_order):
                tables["lb_notifications"].insert(
                    notification_id=order_id, recall_id=recall_id, order_id=notice_order,
                    hospital_id=hospital_id, acknowledged=False,
                )  # fmt: skip
            case matching.NotificationAcknowledged():
                tables["lb_notifications"].update(order_id, acknowledged=True)


def _fold_order_set(
    tables: Tables, order_id: str, status: str, units: tuple[str, ...] | None
) -> None:
    """_order_set, in memory."""
    orders = tables["lb_orders"]
    if orders.get(order_id) is None:
        orders.insert(order_id=order_id, status=status, unit_ids=list(units or ()))
    elif units is None:
        orders.update(order_id, status=status)
    else:
        orders.update(order_id, status=status, unit_ids=list(units))


def _unit_sets(e: storage.UnitChanged) -> dict[str, Any]:
    """The lb_units columns a unit's event sets (the others stay)."""
    sets = {"status": None if e.stock is None else e.stock.value, "address": e.address,
            "reserved_for": e.reserved_for}  # fmt: skip
    return {column: value for column, value in sets.items() if value is not None}


def _shipment_sets(e: object) -> dict[str, Any]:
    """The lb_shipments columns a shipment's event sets (the others stay)."""
    sets: dict[str, Any] = {}
    match e:
        case delivery.ShipmentCreated():
            sets = {
                "order_id": e.order_id, "hospital_id": e.hospital_id,
                "unit_ids": list(e.unit_ids), "shipper_id": e.shipper.shipper_id,
                "promised_at": e.promised_at,
                "planned_transit_minutes": e.planned_transit_minutes,
            }  # fmt: skip
        case delivery.ShipmentDispatched(at, custodian):
            sets = {"status": "IN_TRANSIT", "dispatched_at": at, "custodian": custodian}
        case delivery.CustodyAccepted(party):
            sets = {"custodian": party}
        case delivery.ShipmentDelivered(at):
            sets = {"status": "DELIVERED", "delivered_at": at}
        case delivery.ShipmentCompromised():
            sets = {"compromised": True}
        case delivery.ShipmentAtRisk():
            sets = {"at_risk": True}
        case delivery.ShipmentReturned(outcome):
            sets = {"status": outcome.value}
    return sets


async def _update(
    conn: asyncpg.Connection, table: str, key: str, key_value: str, sets: Mapping[str, object]
) -> None:
    """Set these columns of the row (none: nothing to do)."""
    if sets:
        columns = ", ".join(f"{k} = ${i}" for i, k in enumerate(sets, 2))
        await conn.execute(
            f"UPDATE {table} SET {columns} WHERE {key} = $1", key_value, *sets.values()
        )
