"""Donor-intake command handling: load → decide → append (the domain decides)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from services.donor_intake.adapters.codec import DIN_SEQUENCE, DONOR
from services.donor_intake.domain import din_sequence, donor
from services.donor_intake.domain.eligibility import EligibilityRules
from services.donor_intake.domain.model import Donor, RecordCollection, RegisterDonor
from services.kernel.isbt128 import din_check_character, din_type3_flag, make_din, validate_fin
from shared.commands import Meta, Outcome, execute, load
from shared.errors import ConcurrencyConflict, NotFound
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
        """Check the collection against the donor first, so a refusal burns no DIN; then take
        the next DIN of the site's sequence and record the collection with it."""
        state, version = await load(self.store, DONOR, donor_id)
        if not state.registered:
            raise NotFound(f"donor {donor_id} is not registered")
        if expected_version is not None and expected_version != version:
            raise ConcurrencyConflict(donor_id, expected_version, version)
        year = command.collected_at.year
        provisional = make_din(self.facility_id, year, 999_999)
        donor.decide(state, dataclasses.replace(command, din=provisional), self.rules)
        din = await self._allocate_din(year, meta)
        outcome = await self.handle(
            donor_id, dataclasses.replace(command, din=din), meta, expected_version=version
        )
        return CollectionOutcome(outcome, din, din_check_character(din), din_type3_flag(din))

    async def _allocate_din(self, year: int, meta: Meta) -> str:
        stream = din_sequence.stream_id(self.facility_id, year)
        allocate = din_sequence.AllocateDin(self.facility_id, year)
        for _ in range(DIN_ALLOCATION_ATTEMPTS):
            try:
                outcome = await execute(
                    self.store,
                    DIN_SEQUENCE,
                    stream,
                    lambda s: din_sequence.decide(s, allocate),
                    meta,
                )
            except ConcurrencyConflict:
                continue  # another collection took that number: take the next one
            return make_din(self.facility_id, year, outcome.state.last)
        raise ConcurrencyConflict(stream, -1, -1)
