"""The demo's resume counts the tank's available units by the system's rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cellbank.storage.v1 import storage_service_pb2 as spb
from google.protobuf.timestamp_pb2 import Timestamp

from deploy.demo import available_units

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def unit(unit_id: str, *, status: str = "STORED", reserved_for: str = "", hold: timedelta = timedelta(0),
         expires: timedelta = timedelta(days=365)) -> spb.InventoryUnit:  # fmt: skip
    hold_until = Timestamp()
    hold_until.FromDatetime(NOW + hold)
    return spb.InventoryUnit(
        unit_id=unit_id, status=status, reserved_for=reserved_for,
        hold_until=hold_until if reserved_for else None,
        expires_on=(NOW + expires).date().isoformat(),
    )  # fmt: skip


def test_available_units_are_stored_unreserved_or_lapsed_and_not_expired() -> None:
    stock = [
        unit("free"),
        unit("held", reserved_for="ORD-1", hold=timedelta(hours=1)),
        unit("lapsed", reserved_for="ORD-2", hold=-timedelta(minutes=1)),
        unit("lapsing-now", reserved_for="ORD-3"),
        unit("expires-today", expires=timedelta(0)),
        unit("expired", expires=-timedelta(days=1)),
        unit("picked", status="PICKED"),
    ]
    assert available_units(stock, NOW) == ["free", "lapsed", "lapsing-now", "expires-today"]
