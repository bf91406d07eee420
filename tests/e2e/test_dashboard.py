"""The operator dashboard in a real browser (headless Chromium) while the network works: live
events stream in and every site's inventory appears. The screenshot is kept as an artifact
(.cellbank/test-artifacts/dashboard.png)."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest_asyncio

from deploy.infra import Endpoints
from deploy.network import dashboard_process
from deploy.processes import REPO_ROOT, free_port, wait_until
from shared.testing.browser import open_page
from tests.e2e.network import NetworkSite, network

ARTIFACTS = REPO_ROOT / ".cellbank" / "test-artifacts"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sites(endpoints: Endpoints):
    async with network(endpoints, sites=2) as running:
        yield running


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


async def keep_busy(site: NetworkSite, stop: asyncio.Event) -> None:
    """The simulator's part: new donors, batches and stored units while the page is open."""
    viable = 9.9e8
    while not stop.is_set():
        await site.stock(1, viable)
        viable += 1e6


async def test_the_dashboard_shows_live_events_and_every_sites_inventory(
    sites, endpoints, tmp_path
):
    a, b = sites
    await a.stock(2, 9.85e8)
    await b.stock(1, 9.86e8)
    endpoints_file = tmp_path / "endpoints.json"
    endpoints_file.write_text(json.dumps({
        "sites": {s.site_id: {"delivery": f"127.0.0.1:{s.delivery_host.port}"} for s in sites},
        "operator_token": "op-alice", "kafka": endpoints.kafka_bootstrap,
    }))  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    dashboard = dashboard_process(endpoints_file, port)
    dashboard.start(tmp_path)
    stop = asyncio.Event()
    busy = asyncio.create_task(keep_busy(a, stop))
    try:
        await asyncio.to_thread(
            wait_until, lambda: healthy(url + "healthz"), timeout=30, what="the dashboard"
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        async with open_page(url) as page:
            events = await page.wait_for(
                "document.querySelectorAll('#events .event').length", timeout=60,
                what="live events over SSE",
            )  # fmt: skip
            assert events > 0
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
    except BaseException:
        print((tmp_path / "dashboard.log").read_text()[-4000:])
        raise
    finally:
        stop.set()
        await busy
        dashboard.stop()
