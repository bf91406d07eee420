"""Which IPD-IMGT/HLA release matching classifies KIR ligands with: settled at start, changed by
an operator's approval (recorded: who, when, why, which release, its files' checksums)."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.matching.adapters.codec import HLA_REFERENCE
from services.matching.adapters.hla_release import ReleaseError, load_release
from services.matching.domain.kir_ligand import HlaReference
from services.matching.domain.ranking import Classification
from services.matching.domain.reference import (
    RecordReference,
    ReferenceState,
    adopt_at_start,
    decide,
    reference_id,
)
from shared.commands import Meta, execute, load
from shared.errors import InvalidArgument, PreconditionFailed
from shared.events import StoredEvent
from shared.eventstore import Clock, EventStore
from shared.service_host import HealthDetails

log = logging.getLogger(__name__)
# Health check name saying whether KIR ligands can be classified (NOT_SERVING: no reference).
HLA_REFERENCE_HEALTH = "cellbank.matching.v1.HlaReference"
RELEASE = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){1,3}$")
MAX_DIRECTORY = 4096


class Ranking(Protocol):
    """What ranks with the table (matching's search): it takes a new one at once."""

    @property
    def table(self) -> Classification: ...

    def use_table(self, table: Classification) -> None: ...


@dataclass(frozen=True, slots=True)
class InUse:
    """The release in use (None: no KIR-ligand points), why, and its last record."""

    reference: HlaReference | None
    source: str  # the directory, or why there is none
    table: Classification
    recorded: StoredEvent | None


class HlaReferences:
    def __init__(
        self,
        store: EventStore,
        site_id: str,
        app: Ranking,
        base: Classification,
        health: HealthDetails,
        clock: Clock,
        configured: str,
    ) -> None:
        self.store, self.site_id, self.app, self.base = store, site_id, app, base
        self.health, self.clock, self.configured = health, clock, configured
        self.reference: HlaReference | None = None
        self.source = "not settled yet"

    @property
    def aggregate_id(self) -> str:
        return reference_id(self.site_id)

    async def settle_at_start(self) -> None:
        """Use the release on record (from the configured directory, or where it was approved);
        a site without one adopts its configured release, recorded by the service."""
        state, _ = await load(self.store, HLA_REFERENCE, self.aggregate_id)
        configured, why = await _load(self.configured, "CELLBANK_HLA_REFERENCE")
        if state.approved is None:  # bootstrap: the site's first release comes from its config
            source = self.configured if configured is not None else why
            await self._record_at_start(state, configured, source)
            await self._use(configured, source)
            return
        approved = state.approved
        if configured is not None and state.same_release(configured.release, configured.checksums):
            await self._use(configured, self.configured)
            return
        if configured is not None or self.configured:
            log.warning(
                "CELLBANK_HLA_REFERENCE (%s) is not IPD-IMGT/HLA %s, the release on record: it"
                " is not used until an operator approves it (cellbank hla approve)",
                self.configured, approved.release,
            )  # fmt: skip
        on_record, why = await _load(approved.source, "the approved directory")
        if on_record is not None and state.same_release(on_record.release, on_record.checksums):
            await self._use(on_record, approved.source)
            return
        why = (
            f"IPD-IMGT/HLA {approved.release}, on record, is no longer at {approved.source}"
            f" ({why or 'its files changed'}): KIR-ligand points are off until an operator"
            " approves a release (cellbank hla approve)"
        )
        log.error(why)
        await self._use(None, why)

    async def approve(self, directory: str, release: str, meta: Meta) -> None:
        """An operator moves the site to the release in `directory`, which must be `release`."""
        directory = directory.strip()
        if not directory or len(directory) > MAX_DIRECTORY or not directory.isprintable():
            raise InvalidArgument("directory", f"a release directory path (1–{MAX_DIRECTORY})")
        if not RELEASE.match(release.strip()):
            raise InvalidArgument("release", f"{release[:40]!r} is not a release, e.g. 3.58.0")
        try:
            reference = await asyncio.to_thread(load_release, Path(directory))
        except (ReleaseError, OSError) as exc:
            raise PreconditionFailed(
                "directory", f"not a usable IPD-IMGT/HLA release: {exc}"
            ) from None
        if reference.release != release.strip():
            raise PreconditionFailed(
                "release", f"{directory} holds IPD-IMGT/HLA {reference.release}, not {release}"
            )
        table = self.base.with_reference(reference)
        command = RecordReference(reference.release, table.version, reference.checksums, directory)
        await execute(
            self.store, HLA_REFERENCE, self.aggregate_id, lambda s: decide(s, command), meta
        )
        log.info("IPD-IMGT/HLA %s approved by %s: %s", reference.release, meta.actor, meta.reason)
        await self._use(reference, directory)

    async def in_use(self) -> InUse:
        events = await self.store.load(self.aggregate_id)
        return InUse(self.reference, self.source, self.app.table, events[-1] if events else None)

    async def _record_at_start(
        self, state: ReferenceState, reference: HlaReference | None, source: str
    ) -> None:
        table = self.base.with_reference(reference)
        command = RecordReference(
            reference.release if reference else "",
            table.version,
            dict(reference.checksums) if reference else {},
            source,
        )
        reason = "HLA reference at start" if reference else "no HLA reference at start"
        actor = f"{self.site_id} matching (CELLBANK_HLA_REFERENCE)"
        await execute(
            self.store, HLA_REFERENCE, self.aggregate_id,
            lambda s: adopt_at_start(s, command), Meta(actor, reason, self.clock()),
        )  # fmt: skip

    async def _use(self, reference: HlaReference | None, source: str) -> None:
        self.reference, self.source = reference, source
        self.app.use_table(self.base.with_reference(reference))
        await self.health.set(HLA_REFERENCE_HEALTH, serving=reference is not None)


async def _load(directory: str, what: str) -> tuple[HlaReference | None, str]:
    """The release in a directory, or None with why (logged loudly: no KIR-ligand points)."""
    if not directory:
        why = f"no HLA reference configured ({what}): KIR-ligand points are off"
    else:
        try:
            reference = await asyncio.to_thread(load_release, Path(directory))
        except (ReleaseError, OSError) as exc:
            why = f"HLA reference {directory} unusable ({exc}): KIR-ligand points are off"
        else:
            log.info("HLA reference IPD-IMGT/HLA %s from %s", reference.release, directory)
            return reference, ""
    log.error(why)
    return None, why
