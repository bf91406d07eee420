"""Storage read models: released-unit and donor facts (any site), and every site's inventory."""

from __future__ import annotations

import asyncpg

from services.storage.adapters.codec import CODEC
from services.storage.domain import model
from services.storage.domain.tank import tank_of
from services.storage.upstream import donor, manufacturing
from shared.bulk_replay import NotNullViolation, Row, Tables
from shared.events import StoredEvent
from shared.topics import DONOR_EVENTS, MANUFACTURING_EVENTS, STORAGE_EVENTS


class NetworkFactsProjection:
    """What storage and network matching need from manufacturing and donor intake."""

    name = "network_facts"
    topics = (MANUFACTURING_EVENTS, DONOR_EVENTS)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)
    bulk_tables = ("batch_facts", "released_units", "donor_facts")  # fold: shared.bulk_replay

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        if event.aggregate_type == "batch":
            await self._batch(conn, event, manufacturing.translate(event))
        elif event.aggregate_type == "donor":
            await self._donor(conn, event, donor.translate(event))

    async def _batch(
        self, conn: asyncpg.Connection, event: StoredEvent, fact: manufacturing.Fact | None
    ) -> None:
        if isinstance(fact, manufacturing.BatchOrigin):
            await conn.execute(
                "INSERT INTO batch_facts VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                event.aggregate_id, fact.donor_id, fact.product_type,
            )  # fmt: skip
        elif isinstance(fact, manufacturing.UnitsReleased):
            # Donor and product type come from the batch's start (same aggregate, so always
            # written before). Written without a read, so a replay batches it (a missing start
            # leaves donor_id NULL: refused by its NOT NULL, the record is dead-lettered).
            await conn.executemany(
                "INSERT INTO released_units (unit_id, site_id, batch_id, donor_id, din,"
                " product_code, product_type, viable_nk_cells, cd3_cells, volume_ml, expires_on,"
                " segregated, restricting_allele)"
                " SELECT $1, $2, $3, b.donor_id, $4, $5, b.product_type, $6, $7, $8, $9, $10, $11"
                " FROM (SELECT 1) AS one LEFT JOIN batch_facts b ON b.batch_id = $3"
                " ON CONFLICT DO NOTHING",
                [
                    (u.unit_id, event.site_id, event.aggregate_id, u.din, u.product_code,
                     u.viable_nk_cells, u.cd3_cells, u.volume_ml, u.expires_on, u.segregated,
                     u.restricting_allele)
                    for u in fact.units
                ],
            )  # fmt: skip

    async def _donor(
        self, conn: asyncpg.Connection, event: StoredEvent, fact: donor.Fact | None
    ) -> None:
        value: object
        match fact:
            case donor.HlaAlleles(alleles):
                column, value = "hla", list(alleles)
            case donor.KirGenes(genes):
                column, value = "kir_genes", list(genes)
            case donor.CmvStatus(status):
                column, value = "cmv", status
            case donor.BloodGroup(abo, rh):
                await conn.execute(
                    "INSERT INTO donor_facts (donor_id, abo, rh) VALUES ($1, $2, $3)"
                    " ON CONFLICT (donor_id) DO UPDATE SET abo = $2, rh = $3",
                    event.aggregate_id, abo, rh,
                )  # fmt: skip
                return
            case _:
                return
        await conn.execute(
            f"INSERT INTO donor_facts (donor_id, {column}) VALUES ($1, $2)"
            f" ON CONFLICT (donor_id) DO UPDATE SET {column} = $2",
            event.aggregate_id, value,
        )  # fmt: skip

    def fold(self, tables: Tables, event: StoredEvent) -> None:
        """apply's rows, in memory (a replay into an empty database)."""
        if event.aggregate_type == "batch":
            fact = manufacturing.translate(event)
            batches = tables["batch_facts"]
            if isinstance(fact, manufacturing.BatchOrigin):
                batches.insert(
                    batch_id=event.aggregate_id, donor_id=fact.donor_id,
                    product_type=fact.product_type,
                )  # fmt: skip
            elif isinstance(fact, manufacturing.UnitsReleased):
                batch = batches.get(event.aggregate_id)
                if batch is None:  # as apply's join: donor_id NULL
                    raise NotNullViolation(f"no batch_facts for {event.aggregate_id}")
                for u in fact.units:
                    tables["released_units"].insert(
                        unit_id=u.unit_id, site_id=event.site_id, batch_id=event.aggregate_id,
                        donor_id=batch["donor_id"], din=u.din, product_code=u.product_code,
                        product_type=batch["product_type"], viable_nk_cells=u.viable_nk_cells,
                        cd3_cells=u.cd3_cells, volume_ml=u.volume_ml, expires_on=u.expires_on,
                        segregated=u.segregated, restricting_allele=u.restricting_allele,
                    )  # fmt: skip
        elif event.aggregate_type == "donor":
            sets: dict[str, object]
            match donor.translate(event):
                case donor.HlaAlleles(alleles):
                    sets = {"hla": list(alleles)}
                case donor.KirGenes(genes):
                    sets = {"kir_genes": list(genes)}
                case donor.CmvStatus(status):
                    sets = {"cmv": status}
                case donor.BloodGroup(abo, rh):
                    sets = {"abo": abo, "rh": rh}
                case _:
                    return
            tables["donor_facts"].upsert(donor_id=event.aggregate_id, **sets)


class InventoryProjection:
    """Every site's stored units, from cellbank.storage.events.v1 (the site is in the envelope)."""

    name = "inventory"
    topics = (STORAGE_EVENTS,)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)
    bulk_tables = ("inventory",)  # fold: shared.bulk_replay

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        if event.aggregate_type != "unit":
            return
        e = CODEC.decode(event.event_type, event.payload)
        unit_id, version = event.aggregate_id, event.aggregate_version
        if isinstance(e, model.UnitStored):
            f = e.facts
            await conn.execute(
                "INSERT INTO inventory (unit_id, site_id, din, product_code, product_type, status,"
                " address, tank_id, segregated, expires_on, viable_nk_cells, cd3_cells, version)"
                " VALUES ($1, $2, $3, $4, $5, 'STORED', $6, $7, $8, $9, $10, $11, $12)"
                " ON CONFLICT DO NOTHING",
                unit_id, event.site_id, f.din, f.product_code, f.product_type, e.address,
                tank_of(e.address), f.segregated, f.expires_on, f.viable_nk_cells, f.cd3_cells, version,
            )  # fmt: skip
            return
        sets, values = _changes(e)
        n = len(values)
        assignments = ", ".join(
            [*(f"{s.format(f'${i}')}" for i, s in enumerate(sets, 1)), f"version = ${n + 2}"]
        )
        await conn.execute(
            f"UPDATE inventory SET {assignments} WHERE unit_id = ${n + 1}",
            *values,
            unit_id,
            version,
        )

    def fold(self, tables: Tables, event: StoredEvent) -> None:
        """apply's rows, in memory (a replay into an empty database)."""
        if event.aggregate_type != "unit":
            return
        e = CODEC.decode(event.event_type, event.payload)
        unit_id, version, inventory = (
            event.aggregate_id,
            event.aggregate_version,
            tables["inventory"],
        )
        if isinstance(e, model.UnitStored):
            f = e.facts
            inventory.insert(
                unit_id=unit_id, site_id=event.site_id, din=f.din, product_code=f.product_code,
                product_type=f.product_type, status="STORED", address=e.address,
                tank_id=tank_of(e.address), segregated=f.segregated, expires_on=f.expires_on,
                viable_nk_cells=f.viable_nk_cells, cd3_cells=f.cd3_cells, version=version,
            )  # fmt: skip
            return
        row = inventory.get(unit_id)
        if row is not None:
            inventory.update(unit_id, **_folded(e, row), version=version)


def _folded(e: object, row: Row) -> dict[str, object]:
    """_changes's assignments, evaluated against the unit's row (the bulk fold)."""
    gone = {"address": "", "reserved_for": "", "hold_until": None}
    match e:
        case model.UnitMoved(_, to):
            return {"address": to, "tank_id": to.split("/", 1)[0]}
        case model.UnitQuarantined(cause):
            return {
                "status": "QUARANTINED",
                "quarantine_causes": [*row["quarantine_causes"], cause],
            }
        case model.QuarantineLifted():
            return {"status": "STORED"}
        case model.UnitReserved(order_id, hold_until):
            return {"reserved_for": order_id, "hold_until": hold_until}
        case model.ReservationReleased() | model.ReservationExpired():
            return {"reserved_for": "", "hold_until": None}
        case model.UnitExpired():
            return {"status": "EXPIRED"}
        case model.UnitPicked():
            return {"status": "PICKED", **gone}
        case model.UnitDiscarded():
            return {"status": "DISCARDED", **gone}
        case model.UnitRecalled():
            return {"status": "RECALLED"}
    return {}


def _changes(e: object) -> tuple[list[str], list[object]]:
    """SQL assignments (with {} for the placeholder) and their values for one unit event."""
    match e:
        case model.UnitMoved(_, to):
            return ["address = {}", "tank_id = split_part({}, '/', 1)"], [to, to]
        case model.UnitQuarantined(cause):
            return [
                "status = 'QUARANTINED', quarantine_causes = array_append(quarantine_causes, {})"
            ], [cause]
        case model.QuarantineLifted():
            return ["status = 'STORED'"], []
        case model.UnitReserved(order_id, hold_until):
            return ["reserved_for = {}", "hold_until = {}"], [order_id, hold_until]
        case model.ReservationReleased() | model.ReservationExpired():
            return ["reserved_for = '', hold_until = NULL"], []
        case model.UnitExpired():
            return ["status = 'EXPIRED'"], []
        case model.UnitPicked():
            return ["status = 'PICKED', address = '', reserved_for = '', hold_until = NULL"], []
        case model.UnitDiscarded():
            return ["status = 'DISCARDED', address = '', reserved_for = '', hold_until = NULL"], []
        case model.UnitRecalled():
            return ["status = 'RECALLED'"], []
    return [], []
