"""`cellbank inventory --at-position/--as-of` and `cellbank audit log --as-of` against a real site
(storage in-process over real Kafka, PostgreSQL and Keycloak): the inventory as of a past
position equals the storage projection replayed from the store's events truncated there."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy.demo import auth, register_demo_tank, released_batch, store_when_known, ts
from deploy.infra import Endpoints
from services.storage.entrypoints.main import MIGRATIONS
from services.storage.entrypoints.main import SPEC as STORAGE_SPEC
from shared.db import (
    SHARED_MIGRATIONS,
    create_pool,
    drop_database,
    ensure_database,
    migrate,
    migration_files,
    with_database,
)
from shared.postgres_eventstore import PostgresEventStore
from shared.topics import STORAGE_EVENTS
from shared.waits import eventually
from tests.e2e.bank_site import BankSite, bank_site
from tests.integration.test_audit_cli import cellbank, login, write_endpoints

OP = auth("op-alice")
SNAPSHOT_EVERY = 3
COMPARED = (
    "unit_id", "status", "address", "tank_id", "din", "product_code", "product_type",
    "expires_on", "segregated", "reserved_for", "hold_until", "quarantine_causes",
)  # fmt: skip


@dataclass
class History:
    """A site whose storage stored, moved and reserved units (up to `position`, recorded by
    `moment`), then picked one and quarantined the other."""

    site: BankSite
    endpoints_file: Path
    units: tuple[str, str]
    position: int
    moment: datetime
    server_url: str

    def args(self, *more: str) -> list[str]:
        return [*more, "--endpoints", str(self.endpoints_file)]


async def head(site: BankSite) -> int:
    assert site.storage_ops is not None
    status = await site.storage_ops.GetStoreStatus(opb.GetStoreStatusRequest(), metadata=OP)
    return int(status.head_position)


@pytest.fixture(autouse=True)
def token_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest_asyncio.fixture(loop_scope="session")
async def operator(history: History) -> None:
    """Alice (an operator) has run `cellbank login`."""
    await login(history.endpoints_file, "alice")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def history(
    endpoints: Endpoints, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[History]:
    # Storage snapshots its states every 3 events (checked every 0.2 s): the answers below come
    # from the newest snapshot before their bound plus the events after it.
    async with bank_site(
        endpoints, with_storage=True, snapshot_every_events=SNAPSHOT_EVERY,
        snapshot_interval_seconds=0.2,
    ) as site:  # fmt: skip
        storage = site.storage
        assert storage is not None
        tank = f"{site.site_id}-T1"
        await register_demo_tank(storage, tank)
        first, second = (u.unit_id for u in (await released_batch(site)).units)
        await store_when_known(storage, first, f"{tank}/R1/B1/P01")
        await store_when_known(storage, second, f"{tank}/R1/B1/P02")
        await storage.MoveUnit(
            spb.MoveUnitRequest(unit_id=first, to_address=f"{tank}/R1/B2/P01", reason="reorg"),
            metadata=OP,
        )
        hold = datetime.now(UTC) + timedelta(hours=1)
        await storage.ReserveUnit(
            spb.ReserveUnitRequest(
                unit_id=first, order_id="ORD-ASOF", hold_until=ts(hold), reason="order"
            ),
            metadata=OP,
        )
        position, moment = await head(site), datetime.now(UTC)
        await storage.PickUnit(
            spb.PickUnitRequest(unit_id=first, order_id="ORD-ASOF", reason="shipped"), metadata=OP
        )
        await storage.QuarantineUnit(
            spb.QuarantineUnitRequest(unit_id=second, cause="qa:finding-1", reason="QA"),
            metadata=OP,
        )
        storage_pool = site.hosts[2].pool
        assert storage_pool is not None
        due = await head(site) // SNAPSHOT_EVERY * SNAPSHOT_EVERY
        await eventually(
            lambda: storage_pool.fetchval("SELECT max(position) FROM state_snapshot_marks"),
            until=lambda newest: newest is not None and newest >= due, timeout=60,
            what=f"storage's snapshot worker to write its snapshot at position {due}",
        )  # fmt: skip
        path = tmp_path_factory.mktemp("as-of") / "endpoints.json"
        services = {host.spec.name: f"127.0.0.1:{host.port}" for host in site.hosts}
        write_endpoints(path, site.site_id, services, endpoints.identity.as_json())
        yield History(site, path, (first, second), position, moment, endpoints.database_url)


async def replayed_up_to(history: History, position: int) -> list[dict[str, object]]:
    """The storage projections that read the storage topic, replayed into an empty database
    from the store's own events truncated at `position`: the inventory read model then."""
    host = history.site.hosts[2]
    assert host.pool is not None
    stored = await PostgresEventStore(host.pool, history.site.site_id).read_all(0, 100_000)
    events = [e for e in stored if e.position <= position]
    name = f"cellbank_t_asof_{history.site.site_id.lower()}"
    await ensure_database(history.server_url, name)
    pool = await create_pool(with_database(history.server_url, name))
    try:
        await migrate(pool, migration_files(SHARED_MIGRATIONS, MIGRATIONS))
        projections = [p for p in STORAGE_SPEC.read_models() if STORAGE_EVENTS in p.topics]
        async with pool.acquire() as conn:
            for event in events:
                for projection in projections:
                    await projection.apply(conn, event)
            rows = await conn.fetch(
                "SELECT * FROM inventory WHERE site_id = $1", history.site.site_id
            )
    finally:
        await pool.close()
        await drop_database(history.server_url, name)
    return [
        {
            **{key: row[key] for key in COMPARED},
            "expires_on": row["expires_on"].isoformat(),
            "hold_until": row["hold_until"].isoformat() if row["hold_until"] else "",
        }
        for row in sorted(rows, key=lambda r: r["unit_id"])
    ]


def compared(units: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{key: unit[key] for key in COMPARED} for unit in units]


async def test_inventory_at_a_past_position_equals_a_replay_truncated_there(
    history: History, operator: None
):
    site = history.site.site_id
    run = await cellbank(*history.args("inventory", "--site", site, "--at-position",
                                       str(history.position), "--json"))  # fmt: skip
    assert run.code == 0, run.err
    answer = json.loads(run.out)
    assert answer["position"] == history.position
    assert answer["head_position"] > history.position
    units = answer["units"]
    assert compared(units) == await replayed_up_to(history, history.position)
    first = next(u for u in units if u["unit_id"] == history.units[0])
    assert (first["status"], first["reserved_for"]) == ("STORED", "ORD-ASOF")
    assert first["address"].endswith("/R1/B2/P01")  # moved before the position


async def test_inventory_as_of_a_time_stops_there_and_now_is_the_head(
    history: History, operator: None
):
    site = history.site.site_id
    then = await cellbank(*history.args("inventory", "--site", site, "--as-of",
                                        history.moment.isoformat(), "--json"))  # fmt: skip
    assert then.code == 0, then.err
    at_time = json.loads(then.out)
    assert at_time["position"] == history.position
    now = await cellbank(*history.args("inventory", "--site", site))
    assert now.code == 0, now.err
    lines = now.out.splitlines()
    assert lines[0].startswith(f"inventory of {site} at position ") and "2 units" in lines[0]
    statuses = {line.split()[0]: line.split()[1] for line in lines[3:]}
    assert statuses == {history.units[0]: "PICKED", history.units[1]: "QUARANTINED"}


async def test_audit_log_as_of_shows_the_state_then_and_the_events_until_then(
    history: History, operator: None
):
    unit = history.units[0]
    run = await cellbank(*history.args("audit", "log", "--aggregate", unit, "--as-of",
                                       history.moment.isoformat(), "--json"))  # fmt: skip
    assert run.code == 0, run.err
    records = [json.loads(line) for line in run.out.splitlines()]
    states = [r for r in records if "state" in r]
    (state,) = [s for s in states if s["service"] == "storage"]
    assert state["state"]["status"] == "STORED" and state["state"]["reserved_for"] == "ORD-ASOF"
    events = [r["event_type"].rsplit(".", 1)[-1] for r in records if r.get("service") == "storage"
              and "event_type" in r]  # fmt: skip
    assert events == ["UnitStored", "UnitMoved", "UnitReserved"]
    text = await cellbank(*history.args("audit", "log", "--aggregate", unit, "--as-of",
                                        history.moment.isoformat()))  # fmt: skip
    assert "  status: STORED" in text.out.splitlines()


async def test_a_position_beyond_the_head_and_a_future_time_are_refused_clearly(
    history: History, operator: None
):
    site = history.site.site_id
    beyond = await cellbank(*history.args("inventory", "--site", site, "--at-position", "999999"))
    assert beyond.code == 2 and not beyond.out
    assert "at_position: 999999 is beyond the store's head" in beyond.err
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    later = await cellbank(*history.args("inventory", "--site", site, "--as-of", future))
    assert later.code == 2 and "--as-of" in later.err and "in the future" in later.err
