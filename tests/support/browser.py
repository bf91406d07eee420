"""Headless Chromium driven over the DevTools protocol (a page with a live event stream never
finishes loading, so --dump-dom cannot be used): open a URL, evaluate JavaScript until a
condition holds, take a screenshot. Starts Chromium and always stops it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from deploy.processes import free_port, stop_process


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError(
            "Debian's chromium is needed for the browser tests (make test installs it with "
            "deploy/ensure_chromium.sh when run as root; otherwise: apt-get install chromium)"
        )
    return found


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive(timeout=30)).data)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return reply.get("result", {}).get("value")

    async def wait_for(self, expression: str, *, timeout: float, what: str) -> Any:
        """Evaluate until the value is truthy (no fixed sleeps: a deadline). While the page
        navigates (a sign-in redirect) an evaluation may fail: that counts as not yet."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = await self.evaluate(expression)
            except RuntimeError:  # the page's context went away mid-navigation
                value = None
            if value:
                return value
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{what} not seen in the page within {timeout}s (last: {value!r})")

    async def sign_in(self, username: str, password: str, *, timeout: float = 30.0) -> None:
        """Fill the identity provider's (Keycloak's) sign-in form the page was sent to, submit
        it, and wait until the browser has left the identity provider."""
        await self.wait_for(
            "document.readyState === 'complete' && document.querySelector('#kc-form-login') !== null",
            timeout=timeout, what="the identity provider's sign-in form",
        )  # fmt: skip
        here = await self.evaluate("location.origin")
        await self.evaluate(
            f"document.querySelector('#username').value = {json.dumps(username)};"
            f"document.querySelector('#password').value = {json.dumps(password)};"
            "document.querySelector('#kc-form-login').submit(); true"
        )
        await self.wait_for(
            f"location.origin !== {json.dumps(here)} && document.readyState !== 'loading'",
            timeout=timeout, what=f"{username}'s sign-in to complete",
        )  # fmt: skip

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))


@asynccontextmanager
async def open_page(url: str, *, width: int = 1400, height: int = 900) -> AsyncIterator[Page]:
    port = free_port()
    profile = tempfile.mkdtemp(prefix="cellbank-chromium-")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, stopped in finally
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
         f"--window-size={width},{height}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            target = await _page_target(session, port)
            async with session.ws_connect(target, max_msg_size=64 * 1024 * 1024) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Page.navigate", url=url)
                yield page
    finally:
        stop_process(proc, timeout=10, name="chromium")
        shutil.rmtree(profile, ignore_errors=True)


async def _page_target(session: aiohttp.ClientSession, port: int) -> str:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as reply:
                targets = await reply.json()
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        except (aiohttp.ClientError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("chromium's DevTools endpoint did not come up within 30s")
        await asyncio.sleep(0.2)
