"""The operator dashboard over real Keycloak and a working network: nothing without a session
(sign-in redirect / 401 on every route), 403 for anyone but an operator, the page in headless
Chromium after signing in at Keycloak's form, live events with patients' and donors' fields
redacted by role, streams capped, and one Kafka reader however many streams are open; each
site's charts drawn (uPlot, served by the dashboard under a strict CSP) and a shipment's SLA
counting down. The screenshots are kept as artifacts (.cellbank/test-artifacts/dashboard*.png)."""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import re
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest_asyncio
from cellbank.delivery.v1 import delivery_service_pb2 as dpb

from deploy.demo import DEMO_KIR, now
from deploy.identities import demo_realm
from deploy.infra import Endpoints
from deploy.network import dashboard_process
from deploy.processes import REPO_ROOT, free_port
from deploy.tools import UPLOT
from shared.waits import eventually
from tests.e2e.network import OP, NetworkSite, network
from tests.e2e.test_delivery import allocated, shipment_for
from tests.e2e.test_matching import H1, PATIENT, order
from tests.support.browser import open_page

ARTIFACTS = REPO_ROOT / ".cellbank" / "test-artifacts"
MAX_STREAMS = 6


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sites(endpoints: Endpoints):
    async with network(endpoints, sites=2) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dashboard(sites, endpoints: Endpoints, tmp_path_factory) -> AsyncIterator[str]:
    """The dashboard as `make run` starts it (the endpoints file with the identity provider and
    no token of its own); its base URL."""
    folder = tmp_path_factory.mktemp("dashboard")
    endpoints_file = folder / "endpoints.json"
    endpoints_file.write_text(json.dumps({
        "sites": {s.site_id: {"delivery": f"127.0.0.1:{s.delivery_host.port}"} for s in sites},
        "kafka": endpoints.kafka_bootstrap, "identity": endpoints.identity.as_json(),
    }))  # fmt: skip
    port = free_port()
    process = dashboard_process(endpoints_file, port)
    process.env.update({
        "CELLBANK_DASHBOARD_MAX_STREAMS": str(MAX_STREAMS),
        "CELLBANK_DASHBOARD_MAX_STREAMS_PER_USER": str(MAX_STREAMS),
    })  # fmt: skip
    process.start(folder)
    base = f"http://127.0.0.1:{port}/"
    try:
        await eventually(lambda: health(base), until=lambda h: bool(h), timeout=30,
                         what="the dashboard's health")  # fmt: skip
        yield base
    except BaseException:
        print((folder / "dashboard.log").read_text()[-4000:])
        raise
    finally:
        process.stop()


async def health(base: str) -> dict[str, Any]:
    try:
        async with aiohttp.ClientSession() as http, http.get(base + "healthz") as reply:
            return dict(await reply.json()) if reply.status == 200 else {}
    except aiohttp.ClientError:
        return {}


def browser_like(endpoints: Endpoints) -> aiohttp.ClientSession:
    """A cookie-keeping client; Keycloak's Secure cookies are kept for its http://127.0.0.1
    origin as a browser keeps them for a loopback origin."""
    issuer = urllib.parse.urlsplit(endpoints.identity.issuer)
    jar = aiohttp.CookieJar(
        unsafe=True, treat_as_secure_origin=[f"{issuer.scheme}://{issuer.netloc}"]
    )
    return aiohttp.ClientSession(cookie_jar=jar)


@asynccontextmanager
async def signed_in(base: str, endpoints: Endpoints, username: str) -> AsyncIterator[Any]:
    """A client with `username`'s dashboard session, signed in through Keycloak's form (the
    authorization code flow the browser makes)."""
    password = demo_realm().users[username].password
    async with browser_like(endpoints) as http:
        async with http.get(base) as form:
            assert str(form.url).startswith(endpoints.identity.issuer), form.url
            action = re.search(r'id="kc-form-login"[^>]*action="([^"]+)"', await form.text())
        assert action, "Keycloak's sign-in form"
        credentials = {"username": username, "password": password}
        async with http.post(html.unescape(action.group(1)), data=credentials) as landed:
            assert str(landed.url) == base, f"{username} did not land on the dashboard"
        yield http


async def sse(http: Any, base: str) -> AsyncGenerator[dict[str, Any], None]:
    """The data records of one /api/events stream."""
    async with http.get(base + "api/events") as reply:
        assert reply.status == 200, await reply.text()
        async for line in reply.content:
            if line.startswith(b"data: "):
                yield json.loads(line[6:])


async def collect(
    stream: AsyncIterator[dict[str, Any]], *event_types: str, timeout: float = 60
) -> dict[str, dict[str, Any]]:
    """The first record of each of the event types (short names) on the stream."""
    found: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(timeout):
        async for record in stream:
            short = record["event_type"].rsplit(".", 1)[-1]
            if short in event_types:
                found.setdefault(short, record)
            if len(found) == len(event_types):
                return found
    raise AssertionError(f"the stream ended with only {sorted(found)} of {event_types}")


async def test_without_a_session_every_route_is_refused(dashboard, endpoints) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(dashboard, allow_redirects=False) as page:
            assert page.status == 302
            to = page.headers["Location"]
            assert to.startswith(endpoints.identity.authorization_url + "?")
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(to).query)
            assert query["code_challenge_method"] == ["S256"] and query["state"]
            assert query["redirect_uri"] == [dashboard + "callback"]
        for route in ("api/status", "api/events", "api/me"):
            async with http.get(dashboard + route) as reply:
                assert reply.status == 401, route
                assert (await reply.json())["login"] == "/login"
        forged = {"cellbank_session": "made-up-session-id"}
        async with http.get(dashboard + "api/events", cookies=forged) as reply:
            assert reply.status == 401
        async with http.get(dashboard + "callback?code=x&state=y") as reply:
            assert reply.status == 401  # a callback this browser did not start


async def test_people_who_are_not_operators_are_refused(dashboard, endpoints) -> None:
    for username in ("quinn", "h1-clara"):  # QA only; a clinician
        async with signed_in(dashboard, endpoints, username) as http:
            for route in ("", "api/status", "api/events"):
                async with http.get(dashboard + route) as reply:
                    assert reply.status == 403, (username, route)
                    assert "not an operator" in await reply.text()


async def keep_busy(site: NetworkSite, stop: asyncio.Event) -> None:
    """The simulator's part: new donors, batches and stored units while the page is open."""
    viable = 9.9e8
    while not stop.is_set():
        await site.stock(1, viable)
        viable += 1e6


async def test_an_operator_signs_in_and_sees_live_events_and_every_sites_inventory(
    sites, dashboard
) -> None:
    a, b = sites
    await a.stock(2, 9.85e8)
    await b.stock(1, 9.86e8)
    stop = asyncio.Event()
    busy = asyncio.create_task(keep_busy(a, stop))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        async with open_page(dashboard) as page:
            await page.sign_in("bob", demo_realm().users["bob"].password)
            who = await page.wait_for(
                "document.querySelector('#who').textContent", timeout=30, what="who signed in"
            )
            assert "Bob" in who and "operator" in who
            events = await page.wait_for(
                "document.querySelectorAll('#events .event').length", timeout=60,
                what="live events over SSE",
            )  # fmt: skip
            types = await page.evaluate(
                "[...document.querySelectorAll('#events .event')].map(e => e.dataset.type).join(' ')"
            )
            assert "cellbank." in types
            for site in sites:
                await page.wait_for(
                    f"document.querySelector('tr[data-site=\"{site.site_id}\"]') !== null",
                    timeout=60, what=f"{site.site_id}'s inventory row",
                )  # fmt: skip
            inventory = await page.evaluate("document.querySelector('#inventory').innerText")
            assert "NK-ALLO: " in inventory  # available stock by product type
            await page.wait_for(
                "document.querySelectorAll('#events .event').length > " + str(events),
                timeout=60, what="more events arriving live",
            )  # fmt: skip
            shot = ARTIFACTS / "dashboard.png"
            await page.screenshot(shot)
        assert shot.stat().st_size > 10_000
    finally:
        stop.set()
        await busy


async def test_events_reach_each_operator_redacted_for_their_role(sites, dashboard, endpoints):
    a, b = sites
    async with (
        signed_in(dashboard, endpoints, "bob") as bob,  # operator
        signed_in(dashboard, endpoints, "alice") as alice,  # operator and QA
    ):
        bobs, alices = sse(bob, dashboard), sse(alice, dashboard)
        # both streams open (their first record may be recent history) before the events happen
        await anext(bobs)
        await anext(alices)
        await a.bank.eligible_donor(now().date(), None, DEMO_KIR)  # screened, typed, grouped
        await b.hospital.PlaceOrder(order(9.87e8), metadata=H1)
        wanted = ("HlaTyped", "BloodGroupRecorded", "OrderPlaced")
        for_bob, for_alice = await collect(bobs, *wanted), await collect(alices, *wanted)
        assert for_bob["HlaTyped"]["payload"]["loci"] == "[redacted]"
        assert for_alice["HlaTyped"]["payload"]["loci"] != "[redacted]"  # QA reviews typing
        assert for_bob["BloodGroupRecorded"]["payload"]["abo"] == "[redacted]"
        assert for_bob["HlaTyped"]["aggregate_id"]  # the metadata stays
        for placed in (for_bob["OrderPlaced"], for_alice["OrderPlaced"]):
            assert placed["payload"]["patient"] == "[redacted]"  # nobody, whatever the role
            assert placed["payload"]["hospital_id"] == "H1"
            seen = json.dumps(placed)
            assert PATIENT.patient_ref not in seen
            assert not any(allele in seen for allele in PATIENT.hla_alleles)
        await bobs.aclose()
        await alices.aclose()


async def test_streams_are_capped_and_share_one_kafka_reader(dashboard, endpoints) -> None:
    await eventually(lambda: health(dashboard), until=lambda h: h.get("live_streams") == 0,
                     timeout=30, what="earlier streams to close")  # fmt: skip
    async with signed_in(dashboard, endpoints, "bob") as bob:
        streams = [sse(bob, dashboard) for _ in range(MAX_STREAMS)]
        for stream in streams:
            await asyncio.wait_for(anext(stream), 60)
        now = await health(dashboard)
        assert now["live_streams"] == MAX_STREAMS
        assert now["kafka_readers_opened"] == 1  # one consumer for the page, SSE tests and these
        async with bob.get(dashboard + "api/events") as refused:
            assert refused.status == 503
            assert f"at most {MAX_STREAMS} live event streams" in (await refused.json())["error"]
        for stream in streams:
            await stream.aclose()
        await eventually(lambda: health(dashboard), until=lambda h: h.get("live_streams") == 0,
                         timeout=30, what="the streams' slots to come back")  # fmt: skip
        async with bob.get(dashboard + "api/me") as me:
            assert me.status == 200
        assert (await health(dashboard))["kafka_readers_opened"] == 1


async def test_the_page_and_its_chart_library_come_from_the_dashboard_only(
    dashboard, endpoints
) -> None:
    async with signed_in(dashboard, endpoints, "bob") as bob:
        async with bob.get(dashboard) as page:
            csp = page.headers["Content-Security-Policy"]
            assert "script-src 'self';" in csp and "<script>" not in await page.text()
        for path, digest in UPLOT.sha256:  # the very bytes pinned in deploy/tools.py
            async with bob.get(dashboard + "static/" + path.rsplit("/", 1)[-1]) as served:
                assert served.status == 200
                assert hashlib.sha256(await served.read()).hexdigest() == digest
    async with aiohttp.ClientSession() as anyone:
        async with anyone.get(dashboard + "static/dashboard.js") as refused:
            assert refused.status == 401


def chart(site: str, expression: str) -> str:
    return f"(() => {{ const c = window.dashboardCharts && dashboardCharts[{json.dumps(site)}]; return !!c && ({expression}); }})()"


async def test_the_page_draws_each_sites_charts_and_counts_down_a_shipments_sla(
    sites, dashboard
) -> None:
    a, b = sites
    *_, placed = await allocated(a, b, 9.6e8)
    shipment = await shipment_for(a, placed.order_id)
    await a.delivery.DispatchShipment(
        dpb.DispatchShipmentRequest(shipment_id=shipment.shipment_id, reason="courier here"),
        metadata=OP,
    )
    await b.stock(1, 9.61e8)  # after the order (it must come from A): every site has stock
    stop = asyncio.Event()
    busy = asyncio.create_task(keep_busy(a, stop))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        async with open_page(dashboard, height=1200) as page:
            await page.sign_in("bob", demo_realm().users["bob"].password)
            for site in sites:
                drawn = chart(
                    site.site_id,
                    "[...c.row.querySelectorAll('canvas')].filter(k => k.width > 0 && k.height > 0)"
                    ".length === 3 && c.lag.data[0].length > 0 && c.inventory.data.length > 1"
                    " && c.inventory.data[1].length > 0",
                )
                await page.wait_for(drawn, timeout=120, what=f"{site.site_id}'s three charts")
            busy_site = a.site_id  # the simulated activity: its events/s above zero
            await page.wait_for(
                chart(busy_site, "c.events.data[1].some(n => n > 0)"), timeout=60,
                what=f"{busy_site}'s events/s",
            )  # fmt: skip
            countdown = f"document.querySelector('tr[data-shipment=\"{shipment.shipment_id}\"] td.countdown')"
            first = int(await page.wait_for(
                f"{countdown} && {countdown}.dataset.leftS", timeout=60,
                what="the shipment's SLA countdown",
            ))  # fmt: skip
            assert 0 < first <= 4 * 3600  # promised four hours after it was created
            await page.wait_for(
                f"Number({countdown}.dataset.leftS) < {first}", timeout=30,
                what="the countdown going down",
            )  # fmt: skip
            shot = ARTIFACTS / "dashboard-charts.png"
            await page.screenshot(shot)
        assert shot.stat().st_size > 10_000
    finally:
        stop.set()
        await busy
