"""`cellbank audit verify` and `cellbank audit log` against a real site (donor_intake,
manufacturing, storage in-process over real Kafka, PostgreSQL and Keycloak), signed in with
`cellbank login`: a released batch's history with its QA e-signature; a chain rewritten behind
the store's back, a deleted tail and a truncated table found and named (the last two against
the site's signed anchors and its events on Kafka)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from deploy import cli
from deploy.demo import register_demo_tank, released_batch
from deploy.identities import demo_realm
from deploy.infra import Endpoints
from deploy.processes import free_port
from shared import kafka_clients
from shared.anchor_log import latest_anchor
from shared.anchors import Anchor, sign_anchor
from shared.chain_key import ChainKey
from shared.db import create_pool, with_database
from shared.hashchain import GENESIS, event_hash
from shared.postgres_eventstore import EVENT_COLUMNS, row_to_event
from shared.service_host import ServiceHost
from shared.topics import ANCHORS
from shared.trust import Signer
from shared.waits import eventually
from tests.e2e.bank_site import BankSite, bank_site
from tests.support.trust import session_trust
from tests.support.trust import signer as signer_of
from tests.support.trust import trust_list as trusted

RELEASE_MEANING = "Released for clinical use"


@dataclass
class Audited:
    """A site with a released batch, and an endpoints file pointing at its services."""

    site: BankSite
    batch_id: str
    endpoints_file: Path
    started: datetime
    finished: datetime
    server_url: str = ""  # the PostgreSQL server as its superuser (who can lift triggers)
    kafka: str = ""

    def services(self) -> dict[str, str]:
        return {host.spec.name: f"127.0.0.1:{host.port}" for host in self.site.hosts}


@dataclass
class Run:
    code: int
    out: str
    err: str


async def cellbank(*argv: str) -> Run:
    """`cellbank …` in a worker thread: the CLI uses the blocking gRPC client."""
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, list(argv), out, err)
    return Run(code, out.getvalue(), err.getvalue())


def write_endpoints(
    path: Path, site: str, services: dict[str, str], identity: dict[str, str], **more: str
) -> Path:
    path.write_text(json.dumps({"sites": {site: services}, "identity": identity, **more}))
    return path


async def login(endpoints_file: Path, who: str) -> None:
    """`cellbank login` as a demo person (password grant) or a demo client (credentials)."""
    realm = demo_realm()
    if who in realm.users:
        how = ["--username", who, "--password", realm.users[who].password]
    else:
        how = ["--client-id", who, "--client-secret", realm.clients[who].secret]
    run = await cellbank("login", *how, "--endpoints", str(endpoints_file))
    assert run.code == 0, run.err


@pytest.fixture(autouse=True)
def token_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test signs in into a token cache of its own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def audited(
    endpoints: Endpoints, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Audited]:
    async with bank_site(endpoints, with_storage=True) as site:
        assert site.storage is not None
        started = datetime.now(UTC)
        await register_demo_tank(site.storage, f"{site.site_id}-T1")
        released = await released_batch(site)
        finished = datetime.now(UTC)
        folder = tmp_path_factory.mktemp("audit-cli")
        audited = Audited(
            site, released.batch_id, folder / "endpoints.json", started, finished,
            endpoints.database_url, endpoints.kafka_bootstrap,
        )  # fmt: skip
        trust_list = session_trust().trust_list_file
        write_endpoints(
            audited.endpoints_file, site.site_id, audited.services(),
            endpoints.identity.as_json(), kafka=endpoints.kafka_bootstrap,
            trust_list=str(trust_list),
        )  # fmt: skip
        yield audited


@pytest_asyncio.fixture(loop_scope="session")
async def operator(audited: Audited) -> None:
    """Alice (an operator) has run `cellbank login`."""
    await login(audited.endpoints_file, "alice")


async def test_verify_reports_every_service_of_the_site_intact(audited: Audited, operator: None):
    site_id = audited.site.site_id
    run = await cellbank(
        "audit", "verify", "--site", site_id, "--endpoints", str(audited.endpoints_file)
    )
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[-1] == "OK"
    rows = [line.split() for line in lines[:-1]]
    assert [row[:3] for row in rows] == [
        [site_id, "donor_intake", "OK"],
        [site_id, "manufacturing", "OK"],
        [site_id, "storage", "OK"],
    ]
    counts = [int(row[3]) for row in rows]
    assert all(count > 0 for count in counts)  # donor, batch and tank events were checked


async def test_log_shows_who_did_what_when_and_why_and_the_qa_signature(
    audited: Audited, operator: None
):
    run = await cellbank(
        "audit", "log", "--aggregate", audited.batch_id, "--endpoints", str(audited.endpoints_file)
    )
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].startswith(f"{audited.site.site_id} manufacturing: ")
    assert audited.batch_id in lines[0]
    rows = [line for line in lines[1:] if not line.startswith("      ")]
    # One row per event in version order: start, 8 process steps, 9 QC results, the release.
    assert [row.split()[2] for row in rows] == [
        "BatchStarted", *["ProcessStepRecorded"] * 8, *["QcResultRecorded"] * 9, "BatchReleased"
    ], run.out  # fmt: skip
    assert f"({len(rows)} events)" in lines[0]
    released_row = next(line for line in lines if " BatchReleased " in line)
    assert "qa:quinn" in released_row and released_row.endswith("batch record reviewed")
    assert any("operator:alice" in line and line.endswith("manufacture") for line in lines)
    assert any("operator:bob" in line and line.endswith("QC lab") for line in lines)
    signed = lines[lines.index(released_row) + 1].strip()
    # The signer is the person signed in (their name from the token), not the request's word.
    assert signed.startswith("signed by Quinn Adeyemi at ")
    assert signed.endswith(f'"{RELEASE_MEANING}"')
    signed_at = datetime.strptime(signed.split()[5].rstrip(":"), "%Y-%m-%dT%H:%M:%SZ")
    signed_at = signed_at.replace(tzinfo=UTC)
    assert audited.started.replace(microsecond=0) <= signed_at <= audited.finished


async def test_log_as_json_is_one_parsable_object_per_event(audited: Audited, operator: None):
    run = await cellbank(
        "audit", "log", "--aggregate", audited.batch_id, "--json",
        "--site", audited.site.site_id, "--endpoints", str(audited.endpoints_file),
    )  # fmt: skip
    assert run.code == 0, run.err
    records = [json.loads(line) for line in run.out.splitlines()]
    assert [r["version"] for r in records] == list(range(1, len(records) + 1))
    assert {r["aggregate_id"] for r in records} == {audited.batch_id}
    assert {r["service"] for r in records} == {"manufacturing"}
    (release,) = [r for r in records if r["event_type"].endswith(".BatchReleased")]
    assert release["actor"] == "qa:quinn" and release["reason"] == "batch record reviewed"
    (signature,) = release["signatures"]
    assert (signature["name"], signature["meaning"]) == ("Quinn Adeyemi", RELEASE_MEANING)
    assert signature["subject"] and signature["event_id"] == release["event_id"]
    assert len(signature["content_hash"]) == 64
    assert release["payload"]["signature"]["signed_at"] == signature["signed_at"]
    assert len(release["payload"]["units"]) == 2


async def test_an_aggregate_no_service_knows_is_reported_with_exit_1(
    audited: Audited, operator: None
):
    run = await cellbank(
        "audit", "log", "--aggregate", "B-never-made", "--endpoints", str(audited.endpoints_file)
    )
    assert run.code == 1 and not run.out
    assert "'B-never-made' not found" in run.err and audited.site.site_id in run.err


async def test_qa_may_read_a_history_and_a_hospital_may_not(audited: Audited):
    common = ["--aggregate", audited.batch_id, "--endpoints", str(audited.endpoints_file)]
    await login(audited.endpoints_file, "quinn")
    qa = await cellbank("audit", "log", *common)
    assert qa.code == 0 and "BatchReleased" in qa.out
    await login(audited.endpoints_file, "hospital-h1")  # a hospital's system, signed in
    hospital = await cellbank("audit", "log", *common)
    assert hospital.code == 2 and not hospital.out
    assert "PERMISSION_DENIED" in hospital.err and "manufacturing" in hospital.err


async def test_without_signing_in_the_cli_says_to_log_in_and_asks_no_service(audited: Audited):
    run = await cellbank("audit", "verify", "--endpoints", str(audited.endpoints_file))
    assert run.code == 2 and not run.out
    assert "not signed in: run `cellbank login`" in run.err


async def test_an_unreachable_service_fails_verification_naming_it(
    audited: Audited, operator: None, tmp_path: Path
):
    site_id = audited.site.site_id
    services = {**audited.services(), "matching": f"127.0.0.1:{free_port()}"}
    document = json.loads(audited.endpoints_file.read_text())
    path = write_endpoints(
        tmp_path / "endpoints.json", site_id, services, document["identity"],
        kafka=document["kafka"], trust_list=document["trust_list"],
    )  # fmt: skip
    run = await cellbank("audit", "verify", "--site", site_id, "--endpoints", str(path))
    assert run.code == 2
    assert f"{site_id} matching unreachable at {services['matching']}" in run.err
    assert "OK" not in run.out.splitlines()


async def test_a_rewritten_event_breaks_the_chain_at_that_event(
    audited: Audited, operator: None, endpoints: Endpoints
):
    """An attacker with database access rewrites the reason of the QA release; verify must name
    the site, the service and the event. The original is put back afterwards."""
    site_id = audited.site.site_id
    log = await cellbank(
        "audit", "log", "--aggregate", audited.batch_id, "--json",
        "--endpoints", str(audited.endpoints_file),
    )  # fmt: skip
    (release,) = [
        r for r in map(json.loads, log.out.splitlines()) if r["event_type"].endswith("Released")
    ]
    # The service's own (runtime) role cannot rewrite history: the attacker is the
    # administrator (tests/integration/test_database_roles.py shows the runtime role refused).
    dbname = audited.site.hosts[1].settings.database_name
    pool = await create_pool(with_database(endpoints.database_url, dbname), max_size=1)
    await rewrite_reason(pool, release["event_id"], "released without review")
    try:
        run = await cellbank(
            "audit", "verify", "--site", site_id, "--endpoints", str(audited.endpoints_file)
        )
        assert run.code == 1, run.out + run.err
        lines = run.out.splitlines()
        assert "OK" not in lines
        row = next(line for line in lines if line.split()[:2] == [site_id, "manufacturing"])
        assert "BROKEN" in row and f"position {release['position']} " in row
        verdict = lines[-1]
        assert verdict.startswith(f"BROKEN: site {site_id}, service manufacturing:")
        assert f"position {release['position']}," in verdict
        assert release["event_id"] in verdict and audited.batch_id in verdict
        assert "cellbank.manufacturing.v1.BatchReleased" in verdict
        for service in ("donor_intake", "storage"):  # the other stores are untouched
            assert any(line.split()[1:3] == [service, "OK"] for line in lines)
    finally:
        await rewrite_reason(pool, release["event_id"], release["reason"])
        await pool.close()
    restored = await cellbank(
        "audit", "verify", "--site", site_id, "--endpoints", str(audited.endpoints_file)
    )
    assert restored.code == 0 and restored.out.splitlines()[-1] == "OK"


async def rewrite_reason(pool: asyncpg.Pool, event_id: str, reason: str) -> None:
    """Behind the store's back: the append-only trigger is lifted for this one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        updated = await conn.execute(
            "UPDATE events SET reason = $1 WHERE event_id = $2::uuid", reason, event_id
        )
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
    assert updated == "UPDATE 1"


# --- against the anchors and Kafka -----------------------------------------------------------


def host_of(audited: Audited, service: str) -> ServiceHost:
    return next(h for h in audited.site.hosts if h.spec.name == service)


async def anchored_and_published(audited: Audited, service: str) -> int:
    """Wait until the store's head is anchored (signed by its site) and on Kafka; its head."""
    host = host_of(audited, service)
    pool = host.pool
    assert pool is not None
    site = audited.site.site_id
    head = int(await pool.fetchval("SELECT max(position) FROM events"))
    count = int(await pool.fetchval("SELECT count(*) FROM events"))

    async def anchor() -> Anchor | None:
        return await latest_anchor(audited.kafka, trusted(), site, service)

    found = await eventually(
        anchor, until=lambda a: a is not None and a.position == head,
        what=f"{site} {service}'s head anchored", timeout=30,
    )  # fmt: skip
    assert found is not None
    assert (found.event_count, found.key_id) == (count, signer_of(site).key_id)
    await eventually(
        lambda: pool.fetchval(
            "SELECT position FROM relay_checkpoints WHERE relay_name = $1", f"{site}.{service}.relay"
        ),
        until=lambda published: published == head,
        what=f"{site} {service} published", timeout=30,
    )  # fmt: skip
    return head


@asynccontextmanager
async def superuser_on(audited: Audited, service: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the store's database as the server's superuser with triggers off (the
    append-only and TRUNCATE guards), as an attacker holding it would; whatever it changes in
    `events` is put back afterwards."""
    dbname = host_of(audited, service).settings.database_name
    conn = await asyncpg.connect(with_database(audited.server_url, dbname))
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("CREATE TEMP TABLE events_before AS SELECT * FROM events")
        try:
            yield conn
        finally:
            await conn.execute("DELETE FROM events")
            await conn.execute("INSERT INTO events SELECT * FROM events_before")
    finally:
        await conn.close()


async def verify(audited: Audited) -> Run:
    return await cellbank(
        "audit", "verify", "--site", audited.site.site_id,
        "--endpoints", str(audited.endpoints_file),
    )  # fmt: skip


def verdict_of(run: Run, site: str, service: str) -> tuple[str, str]:
    """(the service's line, the closing verdict)."""
    lines = run.out.splitlines()
    row = next(line for line in lines if line.split()[:2] == [site, service])
    return row, lines[-1]


async def test_a_deleted_tail_is_named_against_the_anchor_and_kafka(
    audited: Audited, operator: None
):
    """The newest event of the manufacturing store is deleted: the chain that is left is intact,
    but the site's anchor and Kafka hold more."""
    site = audited.site.site_id
    head = await anchored_and_published(audited, "manufacturing")
    async with superuser_on(audited, "manufacturing") as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") > 1
        await conn.execute("DELETE FROM events WHERE position = $1", head)
        run = await verify(audited)
        assert run.code == 1, run.out + run.err
        row, verdict = verdict_of(run, site, "manufacturing")
        left = int(await conn.fetchval("SELECT max(position) FROM events"))
        finding = (
            f"store ends at position {left}, anchor at {head} / Kafka holds up to {head}: "
            "its newest events were deleted"
        )
        assert row.split()[2] == "BROKEN" and row.endswith(finding)
        assert verdict == f"BROKEN: site {site}, service manufacturing: {finding}"
        for service in ("donor_intake", "storage"):
            assert verdict_of(run, site, service)[0].split()[2] == "OK"
    assert (await verify(audited)).out.splitlines()[-1] == "OK"


async def test_a_truncated_table_is_named_against_the_anchor_and_kafka(
    audited: Audited, operator: None
):
    site = audited.site.site_id
    head = await anchored_and_published(audited, "donor_intake")
    async with superuser_on(audited, "donor_intake") as conn:
        await conn.execute("TRUNCATE events")
        run = await verify(audited)
        assert run.code == 1, run.out + run.err
        row, verdict = verdict_of(run, site, "donor_intake")
        finding = (
            f"store is empty, anchor at {head} / Kafka holds up to {head}: its events were"
            " deleted (truncated)"
        )
        assert row.split()[2] == "BROKEN" and row.endswith(finding)
        assert verdict == f"BROKEN: site {site}, service donor_intake: {finding}"
    assert (await verify(audited)).out.splitlines()[-1] == "OK"


async def test_a_rewritten_row_rehashed_without_the_key_is_named(audited: Audited, operator: None):
    """Whoever holds the database but not the chain key rewrites the oldest storage event and
    re-hashes the whole chain after it, as an unkeyed chain would have let them."""
    site = audited.site.site_id
    await anchored_and_published(audited, "storage")
    async with superuser_on(audited, "storage") as conn:
        rows = await conn.fetch(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY position")
        events = [row_to_event(r) for r in rows]
        prev, forged = GENESIS, []
        for event in [replace(events[0], actor="operator:mallory"), *events[1:]]:
            event = replace(event, prev_hash=prev)
            event = replace(event, hash=event_hash(ChainKey.generate(), prev, event))
            forged.append(event)
            prev = event.hash
        for event in forged:
            await conn.execute(
                "UPDATE events SET actor = $2, prev_hash = $3, hash = $4 WHERE position = $1",
                event.position, event.actor, event.prev_hash, event.hash,
            )  # fmt: skip
        run = await verify(audited)
        assert run.code == 1, run.out + run.err
        row, verdict = verdict_of(run, site, "storage")
        assert f"BROKEN  at position {events[0].position} " in row
        assert verdict.startswith(
            f"BROKEN: site {site}, service storage: first broken link at position"
            f" {events[0].position}, event {events[0].event_id}"
        )
        assert verdict.endswith("hash does not match the event's contents")
    assert (await verify(audited)).out.splitlines()[-1] == "OK"


async def test_a_forged_anchor_claiming_the_site_is_not_believed(audited: Audited, operator: None):
    """Anyone who may write the anchors topic publishes a far-ahead anchor for the site's store
    under a key the trust list does not hold: verify passes it over."""
    site = audited.site.site_id
    head = await anchored_and_published(audited, "manufacturing")
    forged = Anchor(
        site, "manufacturing", head + 1000, b"\x01" * 32, head + 1000, datetime.now(UTC)
    )
    producer = kafka_clients.producer(audited.kafka)
    await producer.start()
    try:
        await producer.send_and_wait(
            ANCHORS, sign_anchor(Signer.generate(site), forged), key=forged.key.encode()
        )
    finally:
        await producer.stop()
    run = await verify(audited)
    assert run.code == 0 and run.out.splitlines()[-1] == "OK", run.out + run.err
