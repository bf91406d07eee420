"""The one place mapping storage domain events to their protobuf messages."""

from __future__ import annotations

from cellbank.storage.v1 import events_pb2 as pb

from services.storage.domain import model, tank, unit
from shared.commands import Aggregate, ProtoEventCodec

CODEC = ProtoEventCodec(
    {
        model.TankRegistered: pb.TankRegistered,
        model.PositionOccupied: pb.PositionOccupied,
        model.PositionVacated: pb.PositionVacated,
        model.UnitStored: pb.UnitStored,
        model.UnitMoved: pb.UnitMoved,
        model.UnitQuarantined: pb.UnitQuarantined,
        model.QuarantineLifted: pb.QuarantineLifted,
        model.UnitReserved: pb.UnitReserved,
        model.ReservationReleased: pb.ReservationReleased,
        model.ReservationExpired: pb.ReservationExpired,
        model.UnitExpired: pb.UnitExpired,
        model.UnitPicked: pb.UnitPicked,
        model.UnitDiscarded: pb.UnitDiscarded,
        model.UnitRecalled: pb.UnitRecalled,
    }
)

TANK = Aggregate("tank", model.Tank(), tank.evolve, CODEC)
UNIT = Aggregate("unit", model.StoredUnit(), unit.evolve, CODEC)
