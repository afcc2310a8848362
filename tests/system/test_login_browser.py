"""Browser login in a real headless Chromium: the form, the visualiser with a session, one of its
buttons through the POST shim with the CSRF token, logout; and pages on other origins that try
to change the scheduler's state with the logged-in browser's cookie."""

from __future__ import annotations

import asyncio
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from test_visualiser_browser import DevTools, index_url

from conftest import Server
from luigi_appliance.auth.session import COOKIE_TLS

FAILED_TASK = "LoginFailed_5e6f"


async def log_in(browser: DevTools, server: Server, user: str = "admin", password: str | None = None) -> None:
    """Open the scheduler, get sent to the form, fill it in and submit it like a person would."""
    await browser.navigate(f"{server.url}/")
    await browser.wait_until("location.pathname === '/login' && document.getElementById('password') !== null")
    await browser.evaluate_now(f"""
        document.getElementById('username').value = {json.dumps(user)};
        document.getElementById('password').value = {json.dumps(password or server.admin_password)};
        document.querySelector('button[type=submit]').click();""")
    await browser.wait_until("location.pathname === '/static/visualiser/index.html' && "
                             "window.luigiAppliance && window.luigiAppliance.ready === true")


async def session_cookie(browser: DevTools, server: Server) -> dict | None:
    cookies = (await browser.send("Network.getCookies", {"urls": [server.url + "/"]}))["cookies"]
    return next((c for c in cookies if c["name"] == COOKIE_TLS), None)


def paused(server: Server) -> bool:
    return server.rpc("is_paused").json()["response"]["paused"]


def task_status(server: Server, task_id: str) -> str | None:
    for status in ("FAILED", "DONE"):
        tasks = server.rpc("task_list", status=status, upstream_status="").json()["response"]
        if task_id in tasks:
            return status
    return None


# Exactly what a click on the pause toggle runs, reporting how the call went out and its status.
PAUSE_THROUGH_THE_SHIM = """
    new Promise(resolve => {
        $(document).ajaxComplete((event, xhr, settings) => {
            if (settings.url.indexOf('/api/pause') >= 0) resolve(settings.type + ' ' + xhr.status);
        });
        new LuigiAPI('../../api').pause();
    })"""


def test_login_visualiser_button_and_logout(dev_server: Server, tmp_path: Path) -> None:
    assert dev_server.rpc("add_task", worker="w", task_id=FAILED_TASK, family="LoginFailed",
                          status="FAILED").status_code == 200
    assert task_status(dev_server, FAILED_TASK) == "FAILED"

    async def scenario(browser: DevTools) -> dict:
        await browser.connect()
        await browser.send("Network.enable")
        await log_in(browser, dev_server)
        seen: dict = {"cookie": await session_cookie(browser, dev_server),
                      "script_sees_cookie": await browser.evaluate_now(f"document.cookie.indexOf('{COOKIE_TLS}') >= 0")}
        # A real task, rendered from the API with the session, and its "Mark as done" button.
        button = f".markAsDone[data-task-id=\"{FAILED_TASK}\"]"
        await browser.wait_until(f"document.querySelector({json.dumps(button)}) !== null")
        seen["mark_as_done"] = await browser.evaluate_now(f"""
            new Promise(resolve => {{
                $(document).ajaxComplete((event, xhr, settings) => {{
                    if (settings.url.indexOf('/api/mark_as_done') >= 0) resolve(settings.type + ' ' + xhr.status);
                }});
                document.querySelector({json.dumps(button)}).click();
            }})""")
        # The same session without the page's token: a same-origin script that is not the shim.
        seen["no_token"] = await browser.evaluate_now("""
            fetch('../../api/pause', {method: 'POST', body: new URLSearchParams({data: '{}'})})
                .then(r => r.status)""")
        await browser.evaluate_now("document.querySelector('#appliance-logout button').click(); true")
        await browser.wait_until("location.pathname === '/login'")
        seen["cookie_after_logout"] = await session_cookie(browser, dev_server)
        await browser.navigate(index_url(dev_server))
        await browser.wait_until("location.pathname === '/login' && document.getElementById('password') !== null")
        seen["next"] = await browser.evaluate_now("document.querySelector('input[name=next]').value")
        return seen

    browser = DevTools(tmp_path / "profile")
    try:
        seen = asyncio.run(scenario(browser))
    finally:
        browser.close()
    cookie = seen["cookie"]
    assert cookie is not None
    assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"], cookie["domain"]) == (
        True, True, "Strict", "/", "127.0.0.1")
    assert seen["script_sees_cookie"] is False
    assert seen["mark_as_done"] == "POST 200"
    assert task_status(dev_server, FAILED_TASK) == "DONE"
    assert seen["no_token"] == 403 and not paused(dev_server)
    assert seen["cookie_after_logout"] is None
    assert seen["next"] == "/static/visualiser/index.html"
    # The id the browser had is dead on the server too.
    replay = requests.Session()
    replay.trust_env = False
    replay.verify = str(dev_server.ca_file)
    replay.cookies.set(COOKIE_TLS, cookie["value"], domain="127.0.0.1", path="/")
    assert replay.get(f"{dev_server.url}/api/is_paused", timeout=10).status_code == 401
    assert cookie["value"] not in dev_server.log() and dev_server.admin_password not in dev_server.log()


def attack_pages(target: str) -> dict[str, str]:
    """What a hostile page would try with a logged-in visitor's browser."""
    form = f"""<!DOCTYPE html><title>form</title>
<form method="post" action="{target}/api/pause"><input type="hidden" name="data" value="{{}}"></form>
<script>document.forms[0].submit();</script>"""
    fetches = f"""<!DOCTYPE html><title>running</title><script>
const body = () => new URLSearchParams({{data: '{{}}'}});
Promise.allSettled([
  fetch('{target}/api/no_such_method?probe=attacker', {{mode: 'no-cors', credentials: 'include'}}),
  fetch('{target}/api/pause', {{method: 'POST', mode: 'no-cors', credentials: 'include', body: body()}}),
  fetch('{target}/api/pause', {{method: 'POST', credentials: 'include', body: body(),
                                headers: {{'X-CSRF-Token': 'guessed'}}}}),
]).then(results => {{ document.title = 'done ' + results.map(r => r.status).join(','); }});
</script>"""
    return {"/form": form, "/fetch": fetches}


@contextmanager
def attacker_site(host: str, pages: dict[str, str], tls_pair: tuple[Path, Path] | None) -> Iterator[str]:
    """A web server on another origin serving ``pages``; yields its base URL."""

    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Pages)
    scheme = "http"
    if tls_pair is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls_pair)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("origin", ["same-site-other-port", "cross-site"])
def test_other_origins_cannot_change_state_with_the_session(dev_server: Server, tmp_path: Path,
                                                            origin: str) -> None:
    """same-site-other-port: https://127.0.0.1:<other port> is the same *site*, so the browser
    does send the SameSite=Strict cookie: only the Origin check and the CSRF token stop it.
    cross-site: http://127.0.0.2 is another site; the cookie is not even sent."""
    host, tls_pair = {"same-site-other-port": ("127.0.0.1", (dev_server.ca_file,
                                                             dev_server.state_dir / "tls-selfsigned.key")),
                      "cross-site": ("127.0.0.2", None)}[origin]

    async def scenario(browser: DevTools, site: str) -> dict:
        await browser.connect()
        await browser.send("Network.enable")
        await log_in(browser, dev_server)
        seen: dict = {}
        await browser.navigate(f"{site}/form")
        # The form posts itself; the browser ends up on the scheduler's answer.
        await browser.wait_until(f"location.origin === {json.dumps(dev_server.url)} && "
                                 "document.body !== null && document.body.innerText.indexOf('error') >= 0")
        seen["form"] = json.loads(await browser.evaluate_now("document.body.innerText"))
        await browser.navigate(f"{site}/fetch")
        seen["fetch"] = await browser.wait_until("document.title.startsWith('done') && document.title")
        # Control: the session was live all along, and the visualiser itself may pause.
        await browser.navigate(index_url(dev_server))
        await browser.wait_until("location.pathname === '/static/visualiser/index.html' && "
                                 "window.luigiAppliance && window.luigiAppliance.ready === true")
        seen["paused_before_control"] = paused(dev_server)
        seen["control"] = await browser.evaluate(PAUSE_THROUGH_THE_SHIM)
        return seen

    browser = DevTools(tmp_path / "profile")
    try:
        with attacker_site(host, attack_pages(dev_server.url), tls_pair) as site:
            seen = asyncio.run(scenario(browser, site))
    finally:
        browser.close()
    assert seen["form"] == {"error": 403, "reason": "cross-site request refused"}
    assert seen["fetch"] == "done fulfilled,fulfilled,rejected"  # opaque answer; the preflight for the header fails
    assert seen["paused_before_control"] is False
    assert seen["control"] == "POST 200"
    assert paused(dev_server)
    log = dev_server.log()
    # The attacks reached the scheduler and were refused (they were not merely lost on the way).
    assert log.count("403 POST /api/pause") >= 2
    assert "OPTIONS /api/pause" in log
    # Whether the browser sent the session cookie along (a harmless probe: authenticated, an
    # unknown method is 404; anonymous, 401): on the same site it does, so SameSite alone would
    # not have stopped the POST.
    probe = "GET /api/no_such_method?probe=attacker"
    assert f"{404 if origin == 'same-site-other-port' else 401} {probe}" in log, log[-3000:]


def test_the_lockout_page_says_how_long_it_lasts(dev_server: Server) -> None:
    """[auth] failure_limit (5) wrong passwords lock the name out for [auth] lockout (15m)."""
    browser = requests.Session()
    browser.trust_env = False
    browser.verify = str(dev_server.ca_file)
    answers = []
    for _ in range(7):
        form = browser.get(f"{dev_server.url}/login", headers={"Accept": "text/html"}, timeout=10)
        token = form.text.split('name="login_token" value="')[1].split('"')[0]
        answer = browser.post(f"{dev_server.url}/login", timeout=30, headers={"Origin": dev_server.url},
                              data={"username": "admin", "password": "wrong", "login_token": token, "next": "/"})
        answers.append(answer.status_code)
        if answer.status_code == 429:
            break
    assert answers == [401] * 5 + [429]
    assert "Too many failed logins. Try again in 15 minutes." in answer.text
    assert 899 <= int(answer.headers["Retry-After"]) <= 901
    assert 'id="appliance-header"' in answer.text and "luigi-appliance" in answer.text
