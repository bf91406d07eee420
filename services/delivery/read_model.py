"""Queries of delivery's read models: orders and units of the network (for shipments and
recalls), this site's shipments, and the lookback trace."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.delivery.domain.model import RecallNotice
from services.delivery.ports import OrderFacts

SHIPMENT_CREATED = "cellbank.delivery.v1.ShipmentCreated"
HOLDING = ("DISPATCHED", "DELIVERED", "RECEIVED", "INFUSED")  # the hospital has (had) the unit


_TRACE = """
SELECT c.donor_id, d.site_id AS donor_site, c.din, c.collected_at, b.batch_id, b.released_at,
       u.unit_id, u.status AS unit_status, u.address, u.reserved_for, u.site_id AS unit_site,
       s.shipment_id, s.status AS shipment_status, s.custodian, s.delivered_at,
       o.order_id, o.hospital_id, o.patient_ref, o.placed_at, o.received_at, o.infused_at,
       o.status AS order_status
FROM lb_collections c
LEFT JOIN lb_donors d ON d.donor_id = c.donor_id
LEFT JOIN lb_units u ON u.din = c.din
LEFT JOIN lb_batches b ON b.batch_id = u.batch_id OR (u.unit_id IS NULL AND b.din = c.din)
LEFT JOIN LATERAL (
    SELECT * FROM lb_shipments s WHERE u.unit_id = ANY(s.unit_ids)
    ORDER BY s.dispatched_at DESC NULLS LAST LIMIT 1) s ON true
LEFT JOIN LATERAL (
    SELECT * FROM lb_orders o WHERE u.unit_id = ANY(o.unit_ids) OR o.order_id = s.order_id
    ORDER BY (o.status NOT IN ('CANCELLED', 'REJECTED', 'PLACED')) DESC, o.placed_at DESC NULLS LAST
    LIMIT 1) o ON true
WHERE ($1 = '' OR c.din = $1) AND ($2 = '' OR c.donor_id = $2) AND ($3 = '' OR b.batch_id = $3)
ORDER BY c.collected_at, c.din, u.unit_id
"""


class DeliveryReadModel:
    """The PostgreSQL reads of delivery (DeliveryRecords for the service layer, and the
    servicer's queries)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def order(self, order_id: str) -> OrderFacts | None:
        row = await self.pool.fetchrow("SELECT * FROM lb_orders WHERE order_id = $1", order_id)
        if row is None or not row["hospital_id"]:
            return None
        sites = await self.pool.fetch(
            "SELECT unit_id, site_id FROM lb_units WHERE unit_id = ANY($1::text[])", row["unit_ids"]
        )
        return OrderFacts(
            order_id, row["site_id"], row["hospital_id"], row["status"], tuple(row["unit_ids"]),
            row["placed_at"], {r["unit_id"]: r["site_id"] for r in sites},
        )  # fmt: skip

    # ---- this site's own event store (the same database) ------------------------------

    async def aggregate_ids(self, aggregate_type: str) -> list[str]:
        """This site's aggregates of a type, oldest first."""
        rows = await self.pool.fetch(
            "SELECT aggregate_id, min(position) AS first FROM events WHERE aggregate_type = $1"
            " GROUP BY aggregate_id ORDER BY first",
            aggregate_type,
        )
        return [r["aggregate_id"] for r in rows]

    async def shipments_created(self) -> list[tuple[str, str, bytes]]:
        """(shipment id, event type, payload) of every ShipmentCreated of this site."""
        rows = await self.pool.fetch(
            "SELECT aggregate_id, event_type, payload FROM events WHERE event_type = $1"
            " ORDER BY position",
            SHIPMENT_CREATED,
        )
        return [(r["aggregate_id"], r["event_type"], bytes(r["payload"])) for r in rows]

    # ---- the network's lookback model ----------------------------------------------------

    async def shipment_ids(self, site_id: str, status: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT shipment_id FROM lb_shipments WHERE site_id = $1 AND ($2 = '' OR status = $2)"
            " ORDER BY shipment_id",
            site_id, status,
        )  # fmt: skip
        return [r["shipment_id"] for r in rows]

    async def orders_to_ship(self, site_id: str) -> list[Any]:
        """Allocated orders whose units all belong to the site, without a shipment yet."""
        return list(
            await self.pool.fetch(
                "SELECT o.order_id, o.hospital_id, o.unit_ids, o.placed_at FROM lb_orders o"
                " WHERE o.status = 'ALLOCATED' AND cardinality(o.unit_ids) > 0"
                " AND NOT EXISTS (SELECT 1 FROM lb_shipments s WHERE s.order_id = o.order_id)"
                " AND NOT EXISTS (SELECT 1 FROM lb_units u WHERE u.unit_id = ANY(o.unit_ids)"
                "                 AND u.site_id <> $1)"
                " ORDER BY o.placed_at",
                site_id,
            )
        )

    async def units_of(self, dins: list[str], unit_ids: list[str]) -> dict[str, str]:
        """Every unit of the DINs (and the named units) → the site that owns it."""
        rows = await self.pool.fetch(
            "SELECT unit_id, site_id FROM lb_units WHERE din = ANY($1::text[])"
            " OR unit_id = ANY($2::text[]) ORDER BY unit_id",
            dins, unit_ids,
        )  # fmt: skip
        return {r["unit_id"]: r["site_id"] for r in rows}

    async def dins_of(self, donor_id: str = "", batch_id: str = "") -> list[str]:
        if batch_id:
            rows = await self.pool.fetch("SELECT din FROM lb_batches WHERE batch_id = $1", batch_id)
        else:
            rows = await self.pool.fetch(
                "SELECT din FROM lb_collections WHERE donor_id = $1", donor_id
            )
        return [r["din"] for r in rows if r["din"]]

    async def notices(self, unit_ids: list[str]) -> list[RecallNotice]:
        """Hospitals holding or having infused any of the units, one notice per order."""
        rows = await self.pool.fetch(
            "SELECT order_id, site_id, hospital_id, patient_ref, unit_ids FROM lb_orders"
            " WHERE unit_ids && $1::text[] AND status = ANY($2::text[]) ORDER BY order_id",
            unit_ids, list(HOLDING),
        )  # fmt: skip
        affected = set(unit_ids)
        return [
            RecallNotice(
                r["order_id"],
                r["site_id"],
                r["hospital_id"],
                tuple(u for u in r["unit_ids"] if u in affected),
                r["patient_ref"],
            )
            for r in rows
        ]

    async def unacknowledged(self, recall_id: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT hospital_id FROM lb_notifications WHERE recall_id = $1"
            " AND NOT acknowledged ORDER BY hospital_id",
            recall_id,
        )
        return [r["hospital_id"] for r in rows]

    async def trace(self, din: str, donor_id: str, batch_id: str) -> list[Any]:
        return list(await self.pool.fetch(_TRACE, din, donor_id, batch_id))

    async def network_status(self) -> dict[str, dict[str, Any]]:
        """Per site: units by status, available units by product type, open orders, shipments
        in transit and at risk, recalls (from the network's lookback model)."""
        sites: dict[str, dict[str, Any]] = {}

        def site(site_id: str) -> dict[str, Any]:
            return sites.setdefault(
                site_id,
                {"inventory": {}, "products": {}, "open_orders": 0, "in_transit": 0,
                 "at_risk": 0, "recalls": 0, "hla_reference": None},
            )  # fmt: skip

        for r in await self.pool.fetch(
            "SELECT site_id, CASE WHEN status = 'STORED' AND reserved_for <> '' THEN 'RESERVED'"
            " ELSE status END AS status, count(*) AS n FROM lb_units WHERE site_id <> ''"
            " GROUP BY 1, 2"
        ):
            site(r["site_id"])["inventory"][r["status"]] = r["n"]
        for r in await self.pool.fetch(
            "SELECT u.site_id, b.product_type, count(*) AS n FROM lb_units u"
            " JOIN lb_batches b USING (batch_id) WHERE u.status = 'STORED' AND u.reserved_for = ''"
            " AND u.site_id <> '' GROUP BY 1, 2"
        ):
            site(r["site_id"])["products"][r["product_type"]] = r["n"]
        for r in await self.pool.fetch(
            "SELECT site_id, count(*) AS n FROM lb_orders WHERE site_id <> '' AND status IN"
            " ('PLACED', 'ALLOCATED', 'DISPATCHED', 'DELIVERED', 'RECEIVED') GROUP BY 1"
        ):
            site(r["site_id"])["open_orders"] = r["n"]
        for r in await self.pool.fetch(
            "SELECT site_id, count(*) FILTER (WHERE status = 'IN_TRANSIT') AS moving,"
            " count(*) FILTER (WHERE status = 'IN_TRANSIT' AND at_risk) AS risky"
            " FROM lb_shipments WHERE site_id <> '' GROUP BY 1"
        ):
            site(r["site_id"])["in_transit"] = r["moving"]
            site(r["site_id"])["at_risk"] = r["risky"]
        for r in await self.pool.fetch("SELECT site_id, count(*) AS n FROM lb_recalls GROUP BY 1"):
            site(r["site_id"])["recalls"] = r["n"]
        for r in await self.pool.fetch("SELECT * FROM lb_hla_references"):
            site(r["site_id"])["hla_reference"] = dict(r)
        return sites
