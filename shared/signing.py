"""Part 11 e-signatures: the signer is the authenticated person, freshly signed in.

21 CFR 11.50/11.70/11.100/11.200: a signature names an identified person (name and subject
from the access token, never from the request), says what it means, and needs the person to
have authenticated recently (`auth_time` within the configured window)."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from shared.auth import Principal, require_recent_sign_in
from shared.errors import InvalidArgument, PermissionDenied

MAX_MEANING = 200  # free-text meaning, where a contract has one


@dataclass(frozen=True, slots=True)
class Signer:
    name: str  # the person's full name from the token
    subject: str  # the issuer's stable id of the person (`sub`)
    username: str


def signer(
    principal: Principal, window_s: float, requested_name: str = "", field: str = "signer_name"
) -> Signer:
    """The person signing: refuses systems, stale sign-ins and a name that is not theirs."""
    require_recent_sign_in(principal, window_s)
    name = principal.name or principal.username
    asked = requested_name.strip()
    if asked and asked not in (name, principal.username):
        raise PermissionDenied(
            f"{field}: {asked[:80]!r} is not the signed-in person ({name}); "
            "a signature is made only in one's own name"
        )
    return Signer(name, principal.subject, principal.username)


def meaning(text: str, field: str = "meaning", vocabulary: tuple[str, ...] = ()) -> str:
    """A signature's meaning: required, ≤ 200 characters, one of the record type's words
    when it defines a vocabulary."""
    value = text.strip()
    if not value:
        raise InvalidArgument(field, "a signature states its meaning; it must not be empty")
    if len(value) > MAX_MEANING:
        raise InvalidArgument(field, f"at most {MAX_MEANING} characters (got {len(value)})")
    if vocabulary and value.lower() not in vocabulary:
        raise InvalidArgument(field, f"must be one of: {', '.join(vocabulary)}")
    return value


@dataclass(frozen=True, slots=True)
class RecordLink:
    """The stored event a signature is part of (11.70): known only once the command's events
    are about to be appended, so the command plumbing supplies it (`shared.commands.execute`)."""

    aggregate_id: str
    aggregate_version: int
    event_id: str


def signed_content_hash(link: RecordLink, content: Mapping[str, object]) -> str:
    """SHA-256 (hex) over canonical JSON of the record link and what was signed (signer, time,
    meaning, decision, …): a signature copied to another record, or a record whose signed
    content was altered, no longer matches its hash."""
    body = {
        "aggregate_id": link.aggregate_id,
        "aggregate_version": link.aggregate_version,
        "event_id": link.event_id,
        "signed": dict(content),
    }
    text = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canonical
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not part of a signed record's canonical form")
