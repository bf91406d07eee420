"""The HLA reference a site classifies KIR ligands with: the record of each change of release."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import PreconditionFailed


@dataclass(frozen=True, slots=True)
class FileChecksum:
    file: str
    sha256: str


@dataclass(frozen=True, slots=True)
class HlaReferenceLoaded:
    release: str  # "" = none configured
    classification_version: str
    checksums: tuple[FileChecksum, ...]
    source: str


@dataclass(frozen=True, slots=True)
class ReferenceState:
    current: HlaReferenceLoaded | None = None


@dataclass(frozen=True, slots=True)
class RecordReference:
    release: str
    classification_version: str
    checksums: Mapping[str, str]
    source: str


def reference_id(site_id: str) -> str:
    return f"hla-reference-{site_id}"


def evolve(state: ReferenceState, event: object) -> ReferenceState:
    if isinstance(event, HlaReferenceLoaded):
        return ReferenceState(event)
    return state


def decide(state: ReferenceState, command: RecordReference) -> list[HlaReferenceLoaded]:
    """A new record only when the release, its files or the classification changed: restarts
    with the same release record nothing (replaying the log gives the same history)."""
    if len(command.source) > 4096:
        raise PreconditionFailed("source", "at most 4096 characters")
    loaded = HlaReferenceLoaded(
        command.release,
        command.classification_version,
        tuple(FileChecksum(f, h) for f, h in sorted(command.checksums.items())),
        command.source,
    )
    current = state.current
    if current is not None and (
        current.release,
        current.classification_version,
        current.checksums,
    ) == (loaded.release, loaded.classification_version, loaded.checksums):
        return []
    return [loaded]
