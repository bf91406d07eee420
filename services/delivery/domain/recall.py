"""The recall aggregate: raised once per trigger (a donor's later positive marker, a positive
14-day sterility, a QA-declared defect), then each affected unit is held back at its site."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from services.delivery.domain.model import (
    RaiseRecall,
    Recall,
    RecallCommand,
    RecallEvent,
    RecallRaised,
    RecallUnitHeld,
    RecordUnitHeld,
)
from shared.errors import InvalidArgument, NotFound


def decide(state: Recall, command: RecallCommand) -> Sequence[RecallEvent]:
    match command:
        case RaiseRecall(raised):
            if state.raised is not None:
                return []  # the same trigger seen again
            if not raised.reason.strip():
                raise InvalidArgument("reason", "a recall says why")
            if not raised.dins and not raised.unit_ids:
                raise InvalidArgument("subject", "a recall names the DINs or units it covers")
            return [raised]
        case RecordUnitHeld(unit_id, site_id, outcome):
            if state.raised is None:
                raise NotFound("no such recall")
            if unit_id not in state.pending_units:
                return []
            return [RecallUnitHeld(unit_id, site_id, outcome)]
    raise TypeError(f"unknown command {command!r}")


def evolve(state: Recall, event: RecallEvent) -> Recall:
    match event:
        case RecallRaised():
            return dataclasses.replace(state, raised=event)
        case RecallUnitHeld():
            return dataclasses.replace(state, held=(*state.held, event))
    raise TypeError(f"unknown event {event!r}")
