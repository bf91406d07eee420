"""Donor-intake command handling: load → decide → append (the domain decides)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from services.donor_intake.adapters.codec import DIN_SEQUENCE, DONOR
from services.donor_intake.domain import din_sequence, donor
from services.donor_intake.domain.eligibility import EligibilityRules
from services.donor_intake.domain.model import Donor, RecordCollection, RegisterDonor
from services.kernel.isbt128 import din_check_character, din_type3_flag, make_din, validate_fin
from shared.commands import Meta, Outcome, commit, execute, prepare
from shared.errors import ConcurrencyConflict
from shared.eventstore import EventStore
from shared.ids import uuid7

DIN_ALLOCATION_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class CollectionOutcome:
    outcome: Outcome[Donor]
    din: str
    check_character: str
    type3_flag: int


class DonorIntake:
    """The donor-intake application service of one site."""

    def __init__(self, store: EventStore, *, facility_id: str, rules: EligibilityRules) -> None:
        self.store = store
        self.facility_id = validate_fin(facility_id)
        self.rules = rules

    async def register(self, donor_ref: str, meta: Meta) -> Outcome[Donor]:
        donor_id = f"donor-{uuid7()}"
        command = RegisterDonor(donor_id, donor_ref)
        return await execute(
            self.store, DONOR, donor_id, lambda s: donor.decide(s, command, self.rules), meta,
            expected_version=0,
        )  # fmt: skip

    async def handle(
        self, donor_id: str, command: donor.Command, meta: Meta, expected_version: int | None
    ) -> Outcome[Donor]:
        return await execute(
            self.store,
            DONOR,
            donor_id,
            lambda s: donor.decide(s, command, self.rules),
            meta,
            expected_version=expected_version,
        )

    async def record_collection(
        self, donor_id: str, command: RecordCollection, meta: Meta, expected_version: int | None
    ) -> CollectionOutcome:
        """Take the next DIN of the site's sequence and record the collection with it, in one
        append: a refused collection burns no DIN, a DIN another collection took meanwhile is
        taken again."""
        year = command.collected_at.year
        stream = din_sequence.stream_id(self.facility_id, year)
        allocate = din_sequence.AllocateDin(self.facility_id, year)
        for attempt in range(1, DIN_ALLOCATION_ATTEMPTS + 1):
            allocated = await prepare(
                self.store, DIN_SEQUENCE, stream, lambda s: din_sequence.decide(s, allocate), meta
            )
            din = make_din(self.facility_id, year, allocated.state.last)
            collection = dataclasses.replace(command, din=din)
            decide = functools.partial(donor.decide, command=collection, rules=self.rules)
            recorded = await prepare(
                self.store, DONOR, donor_id, decide, meta, expected_version=expected_version
            )
            try:
                _, outcome = await commit(self.store, allocated, recorded)
            except ConcurrencyConflict as exc:
                if exc.aggregate_id == stream and attempt < DIN_ALLOCATION_ATTEMPTS:
                    continue  # another collection took that number: take the next one
                raise
            return CollectionOutcome(outcome, din, din_check_character(din), din_type3_flag(din))
        raise AssertionError("unreachable: the last attempt returns or raises")
