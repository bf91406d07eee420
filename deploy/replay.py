"""The network's services for shared.replay: their specs, and the worker process that replays one.

`replay_site` is shared.replay.replay_site over every service of the network, each replayed by
`python -m deploy.replay …` (this module's main); `cellbank replay` is the operator's command.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

from deploy.processes import REPO_ROOT
from shared import replay
from shared.service_host import ServiceSpec


def specs() -> dict[str, ServiceSpec]:
    """Every service's ServiceSpec, imported on demand (their modules are heavy)."""
    from services.delivery.entrypoints.main import SPEC as DELIVERY
    from services.donor_intake.entrypoints.main import SPEC as DONOR_INTAKE
    from services.manufacturing.entrypoints.main import SPEC as MANUFACTURING
    from services.matching.entrypoints.main import SPEC as MATCHING
    from services.storage.entrypoints.main import SPEC as STORAGE

    return {s.name: s for s in (DONOR_INTAKE, MANUFACTURING, STORAGE, MATCHING, DELIVERY)}


WORKER = replay.WorkerCommand((sys.executable, "-m", "deploy.replay"), cwd=REPO_ROOT)

replay_site = functools.partial(replay.replay_site, specs=specs, worker=WORKER)


def main(argv: Sequence[str] | None = None) -> int:
    """The worker's entry point (replay_site starts it)."""
    return replay.worker_main(argv, specs, prog="python -m deploy.replay")


if __name__ == "__main__":
    sys.exit(main())
