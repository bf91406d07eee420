"""Matching at one site, assembled: its service layer's parts built on one set of dependencies
(what the servicer, the delivery policy and the host use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.matching.dependencies import Dependencies
from services.matching.handlers import OrderHandlers
from services.matching.reconciler import Reconciler
from services.matching.saga import Allocation
from services.matching.search import CandidateSearch
from services.matching.views import OrderChanges, OrderViews

if TYPE_CHECKING:
    from shared.service_host import Worker


class Matching:
    def __init__(self, deps: Dependencies, search: CandidateSearch) -> None:
        self.deps = deps
        self.search = search
        changes = OrderChanges()
        self.views = OrderViews(deps.store, deps.read_model, changes)
        self.allocation = Allocation(deps, search, self.views, changes)
        self.handlers = OrderHandlers(deps, self.allocation, self.views, changes)
        self.reconciler = Reconciler(deps, self.allocation, changes)

    @property
    def site_id(self) -> str:
        return self.deps.site_id

    @property
    def workers(self) -> list[Worker]:
        """The background loops the host runs: the index refresh and the reconciler."""
        return [self.search.run, self.reconciler.run]
