"""The network's genealogy for lookback, recall and trace, from the events of every context
and every site. Each event writes only its own columns (upserts), so the topics' relative
order does not matter; within one aggregate, Kafka keeps the order."""

from __future__ import annotations

import asyncpg
from cellbank.matching.v1 import events_pb2 as matching_pb

from services.delivery.adapters.codec import CODEC as DELIVERY_CODEC
from services.delivery.domain import model as delivery
from services.donor_intake.adapters.codec import CODEC as DONOR_CODEC
from services.donor_intake.domain import model as donor
from services.manufacturing.adapters.codec import CODEC as MANUFACTURING_CODEC
from services.manufacturing.domain import model as manufacturing
from services.matching.adapters.codec import CODEC as MATCHING_CODEC
from services.matching.domain import model as matching
from services.storage.adapters.codec import CODEC as STORAGE_CODEC
from services.storage.domain import model as storage
from shared.events import StoredEvent
from shared.topics import (
    DELIVERY_EVENTS,
    DONOR_EVENTS,
    MANUFACTURING_EVENTS,
    MATCHING_EVENTS,
    STORAGE_EVENTS,
)

_UNIT_STATUS = {
    storage.UnitStored: "STORED",
    storage.UnitQuarantined: "QUARANTINED",
    storage.QuarantineLifted: "STORED",
    storage.UnitExpired: "EXPIRED",
    storage.UnitPicked: "PICKED",
    storage.UnitDiscarded: "DISCARDED",
    storage.UnitRecalled: "RECALLED",
}

_DONOR_TYPES = DONOR_CODEC.names(donor.DonorRegistered, donor.CollectionRecorded)
_HLA_REFERENCE_LOADED = matching_pb.HlaReferenceLoaded.DESCRIPTOR.full_name


class LookbackProjection:
    name = "lookback"
    topics = (DONOR_EVENTS, MANUFACTURING_EVENTS, STORAGE_EVENTS, MATCHING_EVENTS, DELIVERY_EVENTS)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        kind = event.aggregate_type
        if kind == "donor":
            if event.event_type not in _DONOR_TYPES:
                return
            await self._donor(conn, event, DONOR_CODEC.decode(event.event_type, event.payload))
        elif kind == "batch":
            await self._batch(
                conn, event, MANUFACTURING_CODEC.decode(event.event_type, event.payload)
            )
        elif kind == "unit":
            await self._unit(conn, event, STORAGE_CODEC.decode(event.event_type, event.payload))
        elif kind in ("order", "notification"):
            await self._order(conn, event, MATCHING_CODEC.decode(event.event_type, event.payload))
        elif kind == "hla_reference" and event.event_type == _HLA_REFERENCE_LOADED:
            # read from the published message itself, not matching's domain classes
            loaded = matching_pb.HlaReferenceLoaded.FromString(event.payload)
            await self._hla_reference(conn, event, loaded)
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
        self, conn: asyncpg.Connection, event: StoredEvent, e: matching_pb.HlaReferenceLoaded
    ) -> None:
        checksums = " ".join(f"{c.file}={c.sha256}" for c in e.checksums)
        # The newest record of the site wins, whatever order a redelivery brings them in.
        await conn.execute(
            "INSERT INTO lb_hla_references VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (site_id) DO UPDATE SET release = $2, classification_version = $3,"
            " checksums = $4, source = $5, recorded_by = $6, recorded_at = $7,"
            " aggregate_version = $8 WHERE lb_hla_references.aggregate_version < $8",
            event.site_id, e.release, e.classification_version, checksums, e.source,
            event.actor, event.occurred_at, event.aggregate_version,
        )  # fmt: skip

    async def _donor(self, conn: asyncpg.Connection, event: StoredEvent, e: object) -> None:
        if isinstance(e, donor.DonorRegistered):
            await conn.execute(
                "INSERT INTO lb_donors VALUES ($1, $2, $3) ON CONFLICT (donor_id)"
                " DO UPDATE SET site_id = $2, registered_at = $3",
                event.aggregate_id, event.site_id, event.occurred_at,
            )  # fmt: skip
        elif isinstance(e, donor.CollectionRecorded):
            await conn.execute(
                "INSERT INTO lb_collections VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                e.din, event.aggregate_id, event.site_id, e.collected_at,
            )  # fmt: skip

    async def _batch(self, conn: asyncpg.Connection, event: StoredEvent, e: object) -> None:
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

    async def _unit(self, conn: asyncpg.Connection, event: StoredEvent, e: object) -> None:
        unit_id = event.aggregate_id
        await conn.execute(
            "INSERT INTO lb_units (unit_id, site_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            unit_id, event.site_id,
        )  # fmt: skip
        status = _UNIT_STATUS.get(type(e))
        if status is not None:
            await conn.execute(
                "UPDATE lb_units SET status = $2 WHERE unit_id = $1", unit_id, status
            )
        match e:
            case storage.UnitStored(address) | storage.UnitMoved(_, address):
                await conn.execute(
                    "UPDATE lb_units SET address = $2 WHERE unit_id = $1", unit_id, address
                )
            case storage.UnitPicked() | storage.UnitDiscarded():
                await conn.execute(
                    "UPDATE lb_units SET address = '', reserved_for = '' WHERE unit_id = $1",
                    unit_id,
                )
            case storage.UnitReserved(order_id):
                await conn.execute(
                    "UPDATE lb_units SET reserved_for = $2 WHERE unit_id = $1", unit_id, order_id
                )
            case storage.ReservationReleased() | storage.ReservationExpired():
                await conn.execute(
                    "UPDATE lb_units SET reserved_for = '' WHERE unit_id = $1", unit_id
                )

    async def _order(self, conn: asyncpg.Connection, event: StoredEvent, e: object) -> None:
        order_id = event.aggregate_id
        match e:
            case matching.OrderPlaced(hospital_id, _, patient):
                await conn.execute(
                    "INSERT INTO lb_orders (order_id, site_id, hospital_id, patient_ref, placed_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO UPDATE"
                    " SET site_id = $2, hospital_id = $3, patient_ref = $4, placed_at = $5",
                    order_id, event.site_id, hospital_id, patient.patient_ref, event.occurred_at,
                )  # fmt: skip
            case matching.OrderAllocated(units):
                await self._order_set(conn, order_id, "ALLOCATED", [u.unit_id for u in units])
            case matching.AllocationLost():
                await self._order_set(conn, order_id, "PLACED", [])
            case matching.OrderRejected():
                await self._order_set(conn, order_id, "REJECTED", None)
            case matching.OrderCancelled():
                await self._order_set(conn, order_id, "CANCELLED", None)
            case matching.OrderDispatched():
                await self._order_set(conn, order_id, "DISPATCHED", None)
            case matching.OrderDelivered():
                await self._order_set(conn, order_id, "DELIVERED", None)
            case matching.OrderReceived():
                await self._order_set(conn, order_id, "RECEIVED", None)
                await conn.execute(
                    "UPDATE lb_orders SET received_at = $2 WHERE order_id = $1",
                    order_id, event.occurred_at,
                )  # fmt: skip
            case matching.OrderInfused(unit_id):
                await self._order_set(conn, order_id, "INFUSED", None)
                await conn.execute(
                    "UPDATE lb_orders SET infused_at = $2,"
                    " infused_unit_ids = array_append(infused_unit_ids, $3) WHERE order_id = $1",
                    order_id, event.occurred_at, unit_id,
                )  # fmt: skip
            case matching.NotificationIssued(hospital_id, recall_id, notice_order):
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
        sets: dict[str, object] = {}
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
        if sets:
            columns = ", ".join(f"{k} = ${i}" for i, k in enumerate(sets, 2))
            await conn.execute(
                f"UPDATE lb_shipments SET {columns} WHERE shipment_id = $1",
                shipment_id,
                *sets.values(),
            )
