"""Storage's units and tanks as an operator reads them as of a moment (GetStateAsOf records)."""

from __future__ import annotations

from services.storage.adapters.codec import TANK, UNIT
from services.storage.domain.model import StoredUnit, Tank, UnitStatus
from shared.state_as_of import Folded

_STATUS = {s: s.value for s in UnitStatus}  # Enum's .value is a slow descriptor (a hot path)


def unit_record(unit_id: str, unit: StoredUnit) -> dict[str, object]:
    """A unit's state with the inventory's stable keys (the read model's column names)."""
    facts, held = unit.facts, unit.reservation
    return {
        "unit_id": unit_id,
        "status": _STATUS[unit.status],
        "address": unit.address,
        "tank_id": unit.address.partition("/")[0],  # as the read model splits it
        "din": facts.din if facts else "",
        "product_code": facts.product_code if facts else "",
        "product_type": facts.product_type if facts else "",
        "expires_on": facts.expires_on.isoformat() if facts else "",
        "segregated": facts.segregated if facts else False,
        "reserved_for": held.order_id if held else "",
        "hold_until": held.hold_until.isoformat() if held else "",
        "quarantine_causes": list(unit.quarantine_causes),
        "picked_for": unit.picked_for,
    }


def tank_record(tank_id: str, tank: Tank) -> dict[str, object]:
    return {"tank_id": tank_id, "positions": len(tank.segregated), "occupied": len(tank.occupant)}


FOLDS = (Folded(UNIT, unit_record), Folded(TANK, tank_record))
