"""The one place mapping manufacturing domain events to their protobuf messages."""

from __future__ import annotations

from cellbank.manufacturing.v1 import events_pb2 as pb

from services.manufacturing.domain import batch, model
from shared.commands import Aggregate, ProtoEventCodec

CODEC = ProtoEventCodec(
    {
        model.BatchStarted: pb.BatchStarted,
        model.ProcessStepRecorded: pb.ProcessStepRecorded,
        model.QcResultRecorded: pb.QcResultRecorded,
        model.BatchReleased: pb.BatchReleased,
        model.SterilityResultRecorded: pb.SterilityResultRecorded,
        model.BatchSterilityFailed: pb.BatchSterilityFailed,
    }
)

BATCH = Aggregate("batch", model.Batch(), batch.evolve, CODEC)
