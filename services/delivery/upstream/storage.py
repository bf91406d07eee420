"""Storage's published unit events, as delivery's lookback keeps a unit: where it stands in
its owning site's stock, in which position, held for which order."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cellbank.storage.v1 import events_pb2 as pb

from services.delivery.upstream.published import Translator


class Stock(enum.StrEnum):
    """Where a unit stands at its owning site (lookback's unit status)."""

    STORED = "STORED"
    QUARANTINED = "QUARANTINED"
    EXPIRED = "EXPIRED"
    PICKED = "PICKED"
    DISCARDED = "DISCARDED"
    RECALLED = "RECALLED"


@dataclass(frozen=True, slots=True)
class UnitChanged:
    """What changed of a unit; None = unchanged, "" = cleared."""

    stock: Stock | None = None
    address: str | None = None
    reserved_for: str | None = None


_LEFT_STOCK = {"address": "", "reserved_for": ""}

translate: Translator[UnitChanged] = Translator(
    {
        pb.UnitStored: lambda m: UnitChanged(Stock.STORED, address=m.address),
        pb.UnitMoved: lambda m: UnitChanged(address=m.to_address),
        pb.UnitQuarantined: lambda m: UnitChanged(Stock.QUARANTINED),
        pb.QuarantineLifted: lambda m: UnitChanged(Stock.STORED),
        pb.UnitExpired: lambda m: UnitChanged(Stock.EXPIRED),
        pb.UnitPicked: lambda m: UnitChanged(Stock.PICKED, **_LEFT_STOCK),
        pb.UnitDiscarded: lambda m: UnitChanged(Stock.DISCARDED, **_LEFT_STOCK),
        pb.UnitRecalled: lambda m: UnitChanged(Stock.RECALLED),
        pb.UnitReserved: lambda m: UnitChanged(reserved_for=m.order_id),
        pb.ReservationReleased: lambda m: UnitChanged(reserved_for=""),
        pb.ReservationExpired: lambda m: UnitChanged(reserved_for=""),
    },
)
