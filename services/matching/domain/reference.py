"""The HLA reference a site classifies KIR ligands with: the record of each change of release."""

# The first release a site finds in its configuration is adopted and recorded by the service;
# after that, only an operator's approval moves the site to another release (and it stays in
# use across restarts, whatever the configuration says).

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
    approved: HlaReferenceLoaded | None = None  # the last record of an actual release

    def same_release(self, release: str, checksums: Mapping[str, str]) -> bool:
        """Is this the release on record (same name, same files)?"""
        a = self.approved
        return a is not None and (a.release, a.checksums) == (release, _sums(checksums))


@dataclass(frozen=True, slots=True)
class RecordReference:
    release: str
    classification_version: str
    checksums: Mapping[str, str]
    source: str


def reference_id(site_id: str) -> str:
    return f"hla-reference-{site_id}"


def _sums(checksums: Mapping[str, str]) -> tuple[FileChecksum, ...]:
    return tuple(FileChecksum(f, h) for f, h in sorted(checksums.items()))


def evolve(state: ReferenceState, event: object) -> ReferenceState:
    if isinstance(event, HlaReferenceLoaded):
        return ReferenceState(event, event if event.release else state.approved)
    return state


def adopt_at_start(state: ReferenceState, command: RecordReference) -> list[HlaReferenceLoaded]:
    """What the service itself may record at start: its configured release while the site has
    never had one (or that it has none); moving to another release needs an operator."""
    if state.approved is not None and command.release:
        raise PreconditionFailed(
            "release", f"IPD-IMGT/HLA {state.approved.release} is on record: another release"
            " needs an operator's approval"
        )  # fmt: skip
    if state.approved is not None:
        return []  # no configured release, but the approved one stays on record
    return decide(state, command)


def decide(state: ReferenceState, command: RecordReference) -> list[HlaReferenceLoaded]:
    """A new record only when the release, its files or the classification changed: restarts
    with the same release record nothing (replaying the log gives the same history)."""
    if len(command.source) > 4096:
        raise PreconditionFailed("source", "at most 4096 characters")
    loaded = HlaReferenceLoaded(
        command.release, command.classification_version, _sums(command.checksums), command.source
    )
    current = state.current
    if current is not None and (
        current.release,
        current.classification_version,
        current.checksums,
    ) == (loaded.release, loaded.classification_version, loaded.checksums):
        return []
    return [loaded]
