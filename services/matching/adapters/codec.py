"""The one place mapping matching domain events to their protobuf messages."""

from __future__ import annotations

from cellbank.matching.v1 import events_pb2 as pb

from services.matching.domain import model, order, reference
from shared.commands import Aggregate, ProtoEventCodec

CODEC = ProtoEventCodec(
    {
        model.OrderPlaced: pb.OrderPlaced,
        model.OrderAllocated: pb.OrderAllocated,
        model.OrderRejected: pb.OrderRejected,
        model.OrderCancelled: pb.OrderCancelled,
        model.AllocationLost: pb.AllocationLost,
        model.OrderDispatched: pb.OrderDispatched,
        model.OrderDelivered: pb.OrderDelivered,
        model.OrderShipmentCompromised: pb.OrderShipmentCompromised,
        model.OrderShipmentDispositioned: pb.OrderShipmentDispositioned,
        model.OrderShipmentReturned: pb.OrderShipmentReturned,
        model.OrderReceived: pb.OrderReceived,
        model.OrderInfused: pb.OrderInfused,
        model.AdverseEventReported: pb.AdverseEventReported,
        model.NotificationIssued: pb.NotificationIssued,
        model.NotificationAcknowledged: pb.NotificationAcknowledged,
        reference.HlaReferenceLoaded: pb.HlaReferenceLoaded,
    }
)

ORDER = Aggregate("order", model.Order(), order.evolve, CODEC)
NOTIFICATION = Aggregate("notification", model.Notification(), order.evolve_notification, CODEC)
HLA_REFERENCE = Aggregate("hla_reference", reference.ReferenceState(), reference.evolve, CODEC)
