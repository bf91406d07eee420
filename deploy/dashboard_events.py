"""The dashboard's live events: one shared Kafka reader fanned out to capped SSE clients, redacted.

Redaction rule (what a signed-in dashboard user sees of an event):
- Everyone allowed in (the `operator` role) sees the event's metadata — topic, partition,
  offset, site, type, aggregate, version, time, actor, event id — and every payload field that
  says nothing about a patient or a donor as a person: units, DINs, batches, tanks and
  positions, shipments, custody, orders' product and dose, QC results of the product, staff
  signatures.
- Personal fields are replaced by "[redacted]", by class:
  - IDENTITY (patient snapshot and reference, donor reference, names, dates of birth, contact
    details): nobody, whatever the role — the dashboard never needs who a person is.
  - PATIENT_HEALTH (an order's free-text reasons, adverse-event descriptions): nobody; the
    hospital holds them.
  - DONOR_HEALTH (HLA and KIR typing, ABO/Rh, CMV, infectious-marker results and their specimen
    dates, eligibility reasons, deferrals, questionnaire outcome, recall reasons naming a
    marker): only people who also hold the `qa` role, who review exactly these to release units.
  A field is classified by its name at any depth (`hla_alleles`, `abo`, `patient_ref`, …) and,
  for names that are personal only in some events (`status` of a CMV result, `result` of a
  screening test, the envelope's free-text `reason`), by the event's type. The one-line summary
  is rebuilt from the redacted payload, so it cannot leak what the payload hides.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

from shared.auth import QA
from shared.event_watch import EventFilter, Watched

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
IDENTITY = "identity"
PATIENT_HEALTH = "patient-health"
DONOR_HEALTH = "donor-health"
VISIBLE_TO: dict[str, frozenset[str]] = {
    IDENTITY: frozenset(),
    PATIENT_HEALTH: frozenset(),
    DONOR_HEALTH: frozenset({QA}),
}

# Personal wherever they appear (any event, any depth).
FIELD_CLASSES: dict[str, str] = {
    **dict.fromkeys(
        ("patient", "patient_ref", "patient_name", "donor_ref", "donor_name", "name_of_donor",
         "date_of_birth", "birth_date", "dob", "first_name", "last_name", "full_name",
         "nhs_number", "mrn", "email", "phone", "postcode", "home_address",
         "undecodable"),  # a payload of a type unknown here: its bytes could hold anything
        IDENTITY,
    ),
    **dict.fromkeys(
        ("hla", "hla_alleles", "loci", "alleles", "genes", "kir", "abo", "rh", "cmv", "marker",
         "markers", "restricting_allele", "donor_eligibility", "infectious_markers"),
        DONOR_HEALTH,
    ),
}  # fmt: skip

# Personal only in these events (short type name → field → class); "" is the envelope reason.
EVENT_FIELD_CLASSES: dict[str, dict[str, str]] = {
    "ScreeningResultRecorded": {"result": DONOR_HEALTH, "specimen_date": DONOR_HEALTH},
    "PositiveResultAfterCollection": {"specimen_date": DONOR_HEALTH, "": DONOR_HEALTH},
    "CmvSerostatusRecorded": {"status": DONOR_HEALTH},
    "EligibilityDetermined": {"reasons": DONOR_HEALTH, "": DONOR_HEALTH},
    "DonorDeferred": {"until": DONOR_HEALTH, "reason": DONOR_HEALTH, "": DONOR_HEALTH},
    "QuestionnaireRecorded": {"passed": DONOR_HEALTH, "": DONOR_HEALTH},
    "HlaTyped": {"resolution": DONOR_HEALTH},
    "ConsentGiven": {"consent_form": IDENTITY},
    "RecallRaised": {"reason": DONOR_HEALTH, "": DONOR_HEALTH},
    "NotificationIssued": {"message": DONOR_HEALTH},
    "OrderPlaced": {"": PATIENT_HEALTH},
    "OrderRejected": {"reason": PATIENT_HEALTH, "": PATIENT_HEALTH},
    "OrderCancelled": {"reason": PATIENT_HEALTH, "": PATIENT_HEALTH},
    "AdverseEventReported": {"description": PATIENT_HEALTH, "": PATIENT_HEALTH},
}


def visible(kind: str, roles: frozenset[str]) -> bool:
    return bool(VISIBLE_TO[kind] & roles)


def redacted(watched: Watched, roles: frozenset[str]) -> dict[str, Any]:
    """The SSE record of an event for a user with `roles`, personal fields replaced."""
    short = watched.event.event_type.rsplit(".", 1)[-1]
    per_event = EVENT_FIELD_CLASSES.get(short, {})
    payload = _redact(json.loads(watched.payload_json), per_event, roles)
    reason_kind = per_event.get("")
    reason = watched.event.reason
    if reason and reason_kind and not visible(reason_kind, roles):
        reason = REDACTED
    shown = dataclasses.replace(
        watched,
        event=dataclasses.replace(watched.event, reason=reason),
        payload_json=json.dumps(payload),
    )
    record = shown.record()
    record["summary"] = shown.summary
    return record


def _redact(value: Any, per_event: dict[str, str], roles: frozenset[str]) -> Any:
    if isinstance(value, list):
        return [_redact(v, per_event, roles) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        kind = FIELD_CLASSES.get(key.lower()) or per_event.get(key)
        out[key] = (
            REDACTED if kind and not visible(kind, roles) else _redact(item, per_event, roles)
        )
    return out


class TooManyStreams(Exception):
    """The dashboard already serves as many live streams as it may (total or for this user)."""


class Subscriber:
    """One SSE client's bounded queue: when it is full the event is dropped and counted, so a
    client that stops reading never holds up the shared reader or anyone else."""

    def __init__(self, who: str, selection: EventFilter, size: int) -> None:
        self.who = who
        self.selection = selection
        self.queue: asyncio.Queue[Watched] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def offer(self, watched: Watched) -> None:
        topic = self.selection.topic
        if (topic and watched.topic != topic) or not self.selection.matches(watched.event):
            return
        try:
            self.queue.put_nowait(watched)
        except asyncio.QueueFull:
            self.dropped += 1

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped


Source = Callable[[], AsyncGenerator[Watched, None]]


class EventHub:
    """One Kafka reader for the whole dashboard, started with the first stream and kept until
    `stop`; every event goes to each subscriber's queue without waiting on any of them."""

    def __init__(
        self,
        source: Source,
        *,
        max_streams: int = 20,
        max_streams_per_user: int = 5,
        queue_size: int = 256,
        backlog: int = 50,
        retry_s: float = 2.0,
    ) -> None:
        self._source = source
        self.max_streams = max_streams
        self.max_streams_per_user = max_streams_per_user
        self.queue_size = queue_size
        self.retry_s = retry_s
        self._subscribers: set[Subscriber] = set()
        self._backlog: deque[Watched] = deque(maxlen=backlog)
        self._task: asyncio.Task[None] | None = None
        self.readers_opened = 0  # Kafka consumers this hub has created (one, unless it failed)

    @property
    def streams(self) -> int:
        return len(self._subscribers)

    @contextlib.contextmanager
    def subscribe(self, who: str, selection: EventFilter) -> Iterator[Subscriber]:
        """A subscriber for the duration of the block, seeded with recent events;
        TooManyStreams beyond the caps."""
        if len(self._subscribers) >= self.max_streams:
            raise TooManyStreams(
                f"the dashboard serves at most {self.max_streams} live event streams and all "
                "are in use: close another dashboard tab or try again shortly"
            )
        mine = sum(1 for s in self._subscribers if s.who == who)
        if mine >= self.max_streams_per_user:
            raise TooManyStreams(
                f"{who} already has {mine} live event streams open (at most "
                f"{self.max_streams_per_user} per person): close another dashboard tab"
            )
        subscriber = Subscriber(who, selection, self.queue_size)
        for watched in self._backlog:
            subscriber.offer(watched)
        self._subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dashboard-event-hub")
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)

    def publish(self, watched: Watched) -> None:
        self._backlog.append(watched)
        for subscriber in tuple(self._subscribers):
            subscriber.offer(watched)

    async def _run(self) -> None:
        while True:
            self.readers_opened += 1
            source = self._source()
            try:
                async with contextlib.aclosing(source):
                    async for watched in source:
                        self.publish(watched)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka away: say so and read again shortly
                log.warning("the event reader failed; retrying", extra={"error": str(exc)})
            await asyncio.sleep(self.retry_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
