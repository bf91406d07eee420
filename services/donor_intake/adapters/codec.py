"""The one place mapping donor-intake domain events to their protobuf messages."""

from __future__ import annotations

from cellbank.donor.v1 import events_pb2 as pb

from services.donor_intake.domain import din_sequence, donor, model
from shared.commands import Aggregate, ProtoEventCodec

CODEC = ProtoEventCodec(
    {
        model.DonorRegistered: pb.DonorRegistered,
        model.ConsentGiven: pb.ConsentGiven,
        model.ConsentWithdrawn: pb.ConsentWithdrawn,
        model.ScreeningResultRecorded: pb.ScreeningResultRecorded,
        model.QuestionnaireRecorded: pb.QuestionnaireRecorded,
        model.EligibilityDetermined: pb.EligibilityDetermined,
        model.DonorDeferred: pb.DonorDeferred,
        model.HlaTyped: pb.HlaTyped,
        model.KirGenotyped: pb.KirGenotyped,
        model.BloodGroupRecorded: pb.BloodGroupRecorded,
        model.CmvSerostatusRecorded: pb.CmvSerostatusRecorded,
        model.CollectionRecorded: pb.CollectionRecorded,
        model.PositiveResultAfterCollection: pb.PositiveResultAfterCollection,
        din_sequence.DinAllocated: pb.DinAllocated,
    }
)

DONOR = Aggregate("donor", model.Donor(), donor.evolve, CODEC)
DIN_SEQUENCE = Aggregate("din_sequence", din_sequence.DinSequence(), din_sequence.evolve, CODEC)
