"""The one place mapping delivery domain events to their protobuf messages."""

from __future__ import annotations

from cellbank.delivery.v1 import events_pb2 as pb

from services.delivery.domain import model, recall, shipment
from shared.commands import Aggregate, ProtoEventCodec

CODEC = ProtoEventCodec(
    {
        model.ShipmentCreated: pb.ShipmentCreated,
        model.ShipmentDispatched: pb.ShipmentDispatched,
        model.CustodyOffered: pb.CustodyOffered,
        model.CustodyAccepted: pb.CustodyAccepted,
        model.ShipmentDelivered: pb.ShipmentDelivered,
        model.ShipmentCompromised: pb.ShipmentCompromised,
        model.ShipmentDispositioned: pb.ShipmentDispositioned,
        model.ShipmentAtRisk: pb.ShipmentAtRisk,
        model.ShipmentReturned: pb.ShipmentReturned,
        model.RecallRaised: pb.RecallRaised,
        model.RecallUnitHeld: pb.RecallUnitHeld,
    }
)

SHIPMENT = Aggregate("shipment", model.Shipment(), shipment.evolve, CODEC)
RECALL = Aggregate("recall", model.Recall(), recall.evolve, CODEC)
