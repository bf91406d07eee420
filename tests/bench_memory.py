"""Memory per service (part of `make bench`): one site's processes as `make run` starts them —
the five services and the two Faust monitors — each caught up on the log the benchmarks left on
the topics (after the replay benchmark: a network of over a million events). The figure is the
process's peak resident memory (VmHWM); its current one (VmRSS) is in the label. Baseline: a
bare Python process that imports the stack (grpc, protobuf, aiokafka, asyncpg) and idles.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from deploy.infra import Endpoints, ensure_site_databases
from deploy.network import NetworkProcess, ServiceProcess, cold_chain, plan
from deploy.processes import free_port_block
from deploy.replay import specs
from shared.db import create_pool, database_name, drop_database, with_database
from shared.projections import next_offsets
from shared.replay import Goals, projection_goals
from shared.settings import Settings
from tests.bench_report import Row
from tests.support.trust import session_trust

SITE = "MEM"
FIN = "M1001"
BARE = (
    "import asyncio, grpc, aiokafka, asyncpg, google.protobuf, sys; "
    "print('ready', flush=True); sys.stdin.read()"
)


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def memory_mib(pid: int) -> tuple[float, float]:
    """(peak, current) resident memory of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return fields["VmHWM"], fields["VmRSS"]


def bare_python_mib() -> float:
    process = subprocess.Popen(
        [sys.executable, "-c", BARE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "ready": everything imported
        return memory_mib(process.pid)[1]
    finally:
        process.kill()
        process.wait()


async def _projection_goals(endpoints: Endpoints) -> dict[str, Goals]:
    """service → projection → the topics' ends now (policies too: they run live)."""
    return {
        name: await projection_goals(spec, Settings(
            site_id=SITE, service=name, kafka_bootstrap=endpoints.kafka_bootstrap,
            database_url=endpoints.database_url, facility_id=FIN,
        ), policies=True)
        for name, spec in specs().items()
    }  # fmt: skip


async def _caught_up(pool: asyncpg.Pool, goals: Goals) -> bool:
    for name, goal in goals.items():
        positions = await next_offsets(pool, name)
        if any(positions.get(tp, 0) < end for tp, end in goal.items()):
            return False
    return True


async def run(endpoints: Endpoints, timeout: float = 900.0) -> list[Row]:
    goals = await _projection_goals(endpoints)
    # As make run provisions them: owned by the owner role the services migrate as (the
    # administrator's databases refuse that role CREATE on their public schema).
    logins = endpoints.database_logins
    databases = await ensure_site_databases(
        endpoints.database_url, [SITE], roles=logins.roles if logins else None
    )
    try:
        return await _measure(endpoints, goals, timeout)
    finally:
        for name in databases:
            await drop_database(endpoints.database_url, name)


async def _measure(endpoints: Endpoints, goals: dict[str, Goals], timeout: float) -> list[Row]:
    base = free_port_block(20)
    services = plan([SITE], base, base + 10, session_trust())
    for service in services:
        service.env["CELLBANK_FACILITY_ID"] = FIN  # not one of the demo sites: no default FIN
    with tempfile.TemporaryDirectory(prefix="cellbank-bench-memory-") as tmp:
        workers = [
            p
            for p in cold_chain(endpoints, services, [], Path(tmp), session_trust())
            if p.name != "tank-sensors"
        ]
        started: list[ServiceProcess | NetworkProcess] = []
        try:
            for service in services:
                service.start(endpoints, Path(tmp) / "logs")
                started.append(service)
            for worker in workers:
                worker.start(Path(tmp) / "logs")
                started.append(worker)
            for service in services:
                await service.wait_serving()
            total = sum(end for g in goals.values() for goal in g.values() for end in goal.values())
            progress(f"memory: {SITE}'s services catching up on {total:,} records of the log")
            began = time.monotonic()
            pools = {
                s.service: await create_pool(
                    with_database(endpoints.database_url, database_name(SITE, s.service)),
                    max_size=1,
                )
                for s in services
            }
            try:
                while not all([await _caught_up(pools[n], goals[n]) for n in pools]):
                    if time.monotonic() - began > timeout:
                        raise TimeoutError(f"{SITE}'s services not caught up after {timeout:.0f}s")
                    for process in started:
                        if process.proc is not None and process.proc.poll() is not None:
                            raise RuntimeError(f"{process} exited with {process.proc.returncode}")
                    await asyncio.sleep(1.0)
            finally:
                for pool in pools.values():
                    await pool.close()
            progress(f"memory: caught up in {time.monotonic() - began:.0f}s")
            figures = []
            for process in started:
                assert process.proc is not None
                name = process.service if isinstance(process, ServiceProcess) else process.name
                figures.append((name, *memory_mib(process.proc.pid)))
        except Exception:
            for log in sorted((Path(tmp) / "logs").glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-10:]
                progress(f"memory: {log.name}:\n" + "\n".join(tail))
            raise
        finally:
            for process in reversed(started):
                process.stop()
    bare = bare_python_mib()
    return [
        Row(f"memory: {name} (peak; now {now:,.0f} MiB)", "MiB", peak, bare,
            "bare Python + the stack's imports", higher_is_better=False)
        for name, peak, now in figures
    ]  # fmt: skip
