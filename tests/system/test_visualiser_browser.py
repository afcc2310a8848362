"""Luigi's visualiser in a real headless Chromium, behind the guard and under the CSP.

Proves what the static checks cannot: the page's scripts run under our Content-Security-Policy,
authenticated API calls render real tasks, and the POST shim turns the visualiser's state-changing
calls (sent as GET by luigi.js) into POSTs that the guard accepts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import tornado.websocket

from conftest import Server

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--ignore-certificate-errors", "--enable-logging=stderr", "--v=0",
]
# Violations that are expected and harmless: jQuery 1.10 probes for event support by setting
# inline on* attributes (it falls back when they are blocked), and AdminLTE's CSS imports a web
# font from Google, which the CSP rightly keeps the browser from fetching.
KNOWN_VIOLATIONS = ("Executing inline event handler violates", "Loading the stylesheet 'https://fonts.googleapis.com")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is required (installed by .ci/run)"
    return path


def index_url(server: Server) -> str:
    return f"{server.url}/static/visualiser/index.html"


def basic_header(user: str, password: str) -> dict[str, str]:
    """Basic credentials for every request the browser makes (set over CDP). The scheduler never
    challenges a browser (it sends browsers to /login), so a browser only sends Basic when told to."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def csp_violations(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "violates" in line and not any(known in line for known in KNOWN_VIOLATIONS)]


def test_visualiser_renders_tasks_under_the_csp(dev_server: Server, tmp_path: Path) -> None:
    assert dev_server.rpc("add_task", worker="w", task_id="CspVisible_1a2b", family="CspVisible",
                          status="PENDING").status_code == 200

    async def scenario(browser: DevTools) -> object:
        await browser.connect()
        await browser.send("Network.enable")
        await browser.send("Network.setExtraHTTPHeaders", {"headers": basic_header("admin", dev_server.admin_password)})
        await browser.navigate(index_url(dev_server))
        return await browser.wait_until("document.documentElement.outerHTML.indexOf('CspVisible_1a2b') >= 0")

    browser = DevTools(tmp_path / "profile")
    try:
        shown = asyncio.run(scenario(browser))
    finally:
        browser.close()
    assert shown is True
    assert "violates" in browser.log(), "chromium's log must show CSP reports (the known ones) to prove none other"
    assert csp_violations(browser.log()) == []
    assert " 405 " not in dev_server.log()


class _EvaluationFailed(Exception):
    pass


class DevTools:
    """Just enough of the Chrome DevTools Protocol over one connection to the open page: send
    commands, navigate, evaluate JavaScript. Chromium's own log (CSP reports) goes to ``log()``."""

    def __init__(self, profile: Path, url: str = "about:blank"):
        profile.mkdir(parents=True, exist_ok=True)
        self._log_path = profile.with_name(profile.name + ".log")
        with open(self._log_path, "wb") as log:
            self.proc = subprocess.Popen([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                          "--remote-debugging-port=0", url],
                                         stdout=subprocess.DEVNULL, stderr=log)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and self.proc.poll() is None, "chromium did not start"
            time.sleep(0.1)
        self.port = int(port_file.read_text().splitlines()[0])
        self._ws: tornado.websocket.WebSocketClientConnection | None = None
        self._next_id = 0

    async def connect(self) -> None:
        """Attach to the page (within the asyncio loop that then drives the browser)."""
        import requests

        pages = [t for t in requests.get(f"http://127.0.0.1:{self.port}/json/list", timeout=5).json()
                 if t["type"] == "page"]
        self._ws = await tornado.websocket.websocket_connect(pages[0]["webSocketDebuggerUrl"])

    async def send(self, method: str, params: dict | None = None) -> dict:
        """One command; events arriving meanwhile are skipped."""
        assert self._ws is not None, "connect() first"
        self._next_id += 1
        call_id = self._next_id
        await self._ws.write_message(json.dumps({"id": call_id, "method": method, "params": params or {}}))
        while True:
            raw = await asyncio.wait_for(self._ws.read_message(), 30)
            assert raw is not None, "DevTools connection closed"
            message = json.loads(raw)
            if message.get("id") != call_id:
                continue
            if "error" in message or "exceptionDetails" in message.get("result", {}):
                raise _EvaluationFailed(json.dumps(message)[:500])
            return message["result"]

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})

    async def evaluate_now(self, expression: str) -> object:
        result = await self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                      "returnByValue": True})
        return result["result"].get("value")

    async def wait_until(self, expression: str, timeout: float = 30) -> object:
        """Evaluate until the result is truthy. The page may be navigating meanwhile, which
        destroys the context an evaluation runs in: such a call is repeated."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                last = await self.evaluate_now(expression)
                if last:
                    return last
            except _EvaluationFailed as exc:
                last = exc
            assert time.monotonic() < deadline, f"never true: {expression} (last: {last})"
            await asyncio.sleep(0.2)

    async def evaluate(self, expression: str, timeout: float = 30) -> object:
        """Evaluate once the visualiser's scripts are loaded (the expressions here are idempotent
        until they succeed, so a failure during a navigation is retried)."""
        await self.wait_until("window.luigiAppliance && window.luigiAppliance.ready === true", timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.evaluate_now(expression)
            except _EvaluationFailed as exc:
                assert time.monotonic() < deadline, f"evaluation kept failing: {exc}"
            await asyncio.sleep(0.2)

    def log(self) -> str:
        return self._log_path.read_text(errors="replace")

    def close(self) -> None:
        """Ends chromium (and with it the DevTools connection, whatever loop it belonged to)."""
        self._ws = None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.doc_rule("visualiser-post-shim")
def test_visualiser_pause_button_goes_through_as_post(dev_server: Server, tmp_path: Path) -> None:
    """A page authenticated with Basic (not a session) has no CSRF token and needs none."""
    assert dev_server.rpc("is_paused").json()["response"] == {"paused": False}

    async def scenario(browser: DevTools) -> object:
        await browser.connect()
        await browser.send("Network.enable")
        await browser.send("Network.setExtraHTTPHeaders", {"headers": basic_header("admin", dev_server.admin_password)})
        await browser.navigate(index_url(dev_server))
        # Exactly what the visualiser's pause toggle calls: LuigiAPI.pause() -> jsonRPC(.., GET).
        return await browser.evaluate("""
            new Promise(resolve => {
                $(document).ajaxComplete((event, xhr, settings) => {
                    if (settings.url.indexOf('/api/pause') >= 0) resolve(settings.type + ' ' + xhr.status);
                });
                new LuigiAPI('../../api').pause();
            })""")

    browser = DevTools(tmp_path / "profile")
    try:
        outcome = asyncio.run(scenario(browser))
    finally:
        browser.close()
    assert outcome == "POST 200"
    assert dev_server.rpc("is_paused").json()["response"] == {"paused": True}
