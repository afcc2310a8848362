"""Luigi's visualiser in a real headless Chromium, behind the guard and under the CSP.

Proves what the static checks cannot: the page's scripts run under our Content-Security-Policy,
authenticated API calls render real tasks, and the POST shim turns the visualiser's state-changing
calls (sent as GET by luigi.js) into POSTs that the guard accepts.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

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
    return f"https://admin:{server.admin_password}@127.0.0.1:{server.port}/static/visualiser/index.html"


def csp_violations(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "violates" in line and not any(known in line for known in KNOWN_VIOLATIONS)]


def test_visualiser_renders_tasks_under_the_csp(dev_server: Server) -> None:
    assert dev_server.rpc("add_task", worker="w", task_id="CspVisible_1a2b", family="CspVisible",
                          status="PENDING").status_code == 200
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                 "--virtual-time-budget=8000", "--dump-dom", index_url(dev_server)],
                                capture_output=True, text=True, timeout=120)
    assert "CspVisible_1a2b" in result.stdout, result.stderr[-3000:]
    assert csp_violations(result.stderr) == []
    assert " 405 " not in dev_server.log()


class _EvaluationFailed(Exception):
    pass


class DevTools:
    """Just enough of the Chrome DevTools Protocol: evaluate JavaScript in the open page."""

    def __init__(self, profile: Path, url: str):
        self.proc = subprocess.Popen([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "--remote-debugging-port=0", url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and self.proc.poll() is None, "chromium did not start"
            time.sleep(0.1)
        self.port = int(port_file.read_text().splitlines()[0])

    async def evaluate(self, expression: str, timeout: float = 30) -> object:
        """Evaluate once the visualiser's scripts are loaded. The page may still be navigating
        (the browser retries with credentials after the first 401), which destroys the context
        an evaluation runs in: such a call is repeated (the expressions here are idempotent)."""
        import requests

        deadline = time.monotonic() + timeout
        while True:
            pages = [t for t in requests.get(f"http://127.0.0.1:{self.port}/json/list", timeout=5).json()
                     if t["type"] == "page"]
            ws = await tornado.websocket.websocket_connect(pages[0]["webSocketDebuggerUrl"])
            try:
                ready = await self._call(ws, "typeof LuigiAPI === 'function' && typeof jQuery === 'function'")
                if ready is True:
                    return await self._call(ws, expression)
            except _EvaluationFailed as exc:
                assert time.monotonic() < deadline, f"evaluation kept failing: {exc}"
            finally:
                ws.close()
            assert time.monotonic() < deadline, "visualiser scripts never loaded"
            await asyncio.sleep(0.2)

    @staticmethod
    async def _call(ws, expression: str) -> object:
        await ws.write_message(json.dumps({"id": 1, "method": "Runtime.evaluate", "params": {
            "expression": expression, "awaitPromise": True, "returnByValue": True}}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.read_message(), 30))
            if message.get("id") != 1:
                continue
            if "error" in message or "exceptionDetails" in message.get("result", {}):
                raise _EvaluationFailed(json.dumps(message)[:500])
            return message["result"]["result"].get("value")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_visualiser_pause_button_goes_through_as_post(dev_server: Server, tmp_path: Path) -> None:
    assert dev_server.rpc("is_paused").json()["response"] == {"paused": False}
    browser = DevTools(tmp_path / "profile", index_url(dev_server))
    try:
        # Exactly what the visualiser's pause toggle calls: LuigiAPI.pause() -> jsonRPC(.., GET).
        outcome = asyncio.run(browser.evaluate("""
            new Promise(resolve => {
                $(document).ajaxComplete((event, xhr, settings) => {
                    if (settings.url.indexOf('/api/pause') >= 0) resolve(settings.type + ' ' + xhr.status);
                });
                new LuigiAPI('../../api').pause();
            })"""))
    finally:
        browser.close()
    assert outcome == "POST 200"
    assert dev_server.rpc("is_paused").json()["response"] == {"paused": True}
