"""Matching vocabulary: patients, orders, their events (past tense) and commands (imperative)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class ProductCategory(enum.StrEnum):
    """What a hospital orders; each maps to manufacturing product types by code prefix."""

    NK = "NK"
    CAR_NK = "CAR_NK"
    VST = "VST"


class Cmv(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    NEGATIVE = "NEGATIVE"
    POSITIVE = "POSITIVE"


class OrderStatus(enum.StrEnum):
    NONE = "NONE"
    PLACED = "PLACED"  # allocation in progress (or again, after a lost unit)
    ALLOCATED = "ALLOCATED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


LIVE = (OrderStatus.PLACED, OrderStatus.ALLOCATED)


@dataclass(frozen=True, slots=True)
class PatientSnapshot:
    patient_ref: str
    weight_kg: float
    hla_alleles: tuple[str, ...]
    abo: str  # A, B, AB, O or "" (unknown)
    cmv: Cmv


@dataclass(frozen=True, slots=True)
class AllocatedUnit:
    unit_id: str
    din: str
    site_id: str
    dose_cells_per_kg: float
    unit_version: int
    score: float
    reasons: tuple[str, ...]


# ---- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    hospital_id: str
    request_id: str
    patient: PatientSnapshot
    product_type: ProductCategory
    dose_min: float
    dose_max: float
    needed_by: datetime | None  # None: no date given (units must not be expired now)


@dataclass(frozen=True, slots=True)
class OrderAllocated:
    units: tuple[AllocatedUnit, ...]
    classification_version: str


@dataclass(frozen=True, slots=True)
class OrderRejected:
    reason: str
    classification_version: str


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    reason: str


@dataclass(frozen=True, slots=True)
class AllocationLost:
    unit_id: str
    why: str


OrderEvent = OrderPlaced | OrderAllocated | OrderRejected | OrderCancelled | AllocationLost


# ---- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    placed: OrderPlaced
    now: datetime


@dataclass(frozen=True, slots=True)
class RecordAllocation:
    units: tuple[AllocatedUnit, ...]
    classification_version: str


@dataclass(frozen=True, slots=True)
class RejectOrder:
    reason: str
    classification_version: str


@dataclass(frozen=True, slots=True)
class CancelOrder:
    reason: str
    hospital_id: str


@dataclass(frozen=True, slots=True)
class LoseAllocation:
    unit_id: str
    why: str


OrderCommand = PlaceOrder | RecordAllocation | RejectOrder | CancelOrder | LoseAllocation


# ---- state ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    status: OrderStatus = OrderStatus.NONE
    placed: OrderPlaced | None = None
    units: tuple[AllocatedUnit, ...] = ()
    status_reason: str = ""
    classification_version: str = ""
    released: tuple[AllocatedUnit, ...] = field(default=())  # units it held and gave back

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def holds(self, unit_id: str) -> bool:
        return self.live and any(u.unit_id == unit_id for u in self.units)
