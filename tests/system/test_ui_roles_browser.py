"""The role-aware UI in a real headless Chromium, as a viewer, an operator and an admin.

A scheduler with an environment banner ([server] banner), task history in PostgreSQL, a FAILED
task carrying an error and a DONE one. Each role logs in through the form and the test asserts on
the DOM: the header (product, banner, user and role, logout), which of luigi's controls the role
is offered, the error pop-up's re-run hint, a refused pause shown on the page with the toggle put
back to the scheduler's state, and the history page's status colours and failure reason.
Screenshots go to a pytest temporary directory (its path is printed).
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from pg_cluster import Database
from test_history_pg import history_server, server_conf, wait_for
from test_login_browser import log_in
from test_visualiser_browser import DevTools

from conftest import Server, cli

BANNER = "PRODUCTION"
FAILED_TASK = "UiFailed_day_2026_12_01_9f8e"
DONE_TASK = "UiDone_7a6b"
ERROR = "Runtime error:\nTraceback (most recent call last):\n  File \"ui.py\", line 3, in run\nValueError: boom"
PASSWORDS = {"viewer": "viewer-password-123", "operator": "operator-password-123", "admin": "admin-password-123"}
# luigi's controls that only an operator (or admin) may use, by the RPC method they call.
OPERATOR_CONTROLS = {"pause": "#pause-form", "forgive_failures": ".forgiveFailures", "mark_as_done": ".markAsDone"}


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui-screenshots")
    print(f"\nUI screenshots go to {path}")
    return path


@pytest.fixture
def ui_server(configured_server, db: Database) -> Server:
    """A scheduler with a banner, history, a viewer and an operator, and two tasks."""
    server = history_server(configured_server, db, start=False)
    conf = server_conf(server)
    conf.write_text(conf.read_text().replace("[server]\n", f"[server]\nbanner = {BANNER}\nbanner_color = #c9302c\n", 1))
    users = conf.parent / "users"
    for name in ("viewer", "operator"):
        result = cli("user", "--users-file", str(users), "add", name, "--role", name, input=PASSWORDS[name] + "\n")
        assert result.returncode == 0, result.stderr
    server.start()
    for task_id, family, status in ((DONE_TASK, "UiDone", "DONE"), (FAILED_TASK, "UiFailed", "FAILED")):
        answer = server.rpc("add_task", worker="ui-worker", task_id=task_id, family=family, status=status,
                            module="pipelines.ui", params={"day": "2026-12-01"},
                            expl=ERROR if status == "FAILED" else None)
        assert answer.status_code == 200, answer.text
    wait_for(lambda: db.query("SELECT count(*) FROM task_events WHERE event_name = 'FAILED'") != [(0,)],
             "the FAILED event in the history database")
    return server


def paused(server: Server) -> bool:
    return server.rpc("is_paused").json()["response"]["paused"]


async def screenshot(browser: DevTools, path: Path) -> None:
    shot = await browser.send("Page.captureScreenshot", {"format": "png"})
    path.write_bytes(base64.b64decode(shot["data"]))


def visible(selector: str) -> str:
    """JS: whether any element matching ``selector`` is displayed."""
    return (f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
            ".some(e => getComputedStyle(e).display !== 'none' && e.getClientRects().length > 0)")


HEADER = """(() => {
    const header = document.getElementById('appliance-header');
    const banner = document.getElementById('appliance-banner');
    return {text: header ? header.innerText : null,
            banner: banner ? banner.innerText : null,
            bannerColor: banner ? getComputedStyle(banner).backgroundColor : null,
            user: (document.getElementById('appliance-user') || {}).innerText || null,
            logout: document.querySelector('#appliance-logout button') !== null};
})()"""

# A click on the pause toggle, as a person makes it: bootstrap-toggle flips it at once and luigi
# calls pause. Made visible first: a viewer's page hides it, but the refusal must show anyway.
CLICK_PAUSE = """(() => {
    const style = document.createElement('style');
    style.textContent = '#pause-form { display: block !important; }';
    document.head.appendChild(style);
    // Drawn again now that it shows (bootstrap-toggle sizes itself when drawn, hidden: no width).
    $('#pause').bootstrapToggle('destroy').bootstrapToggle({on: 'Running', off: 'Paused', onstyle: 'success',
                                                             offstyle: 'danger'});
    document.querySelector('#pause-form div[data-toggle^=toggle]').click();
    return document.getElementById('pause').checked;
})()"""
_TOGGLE_OFF = "document.querySelector('#pause-form .toggle').classList.contains('off')"
TOGGLE_RUNNING = f"document.getElementById('pause').checked && !{_TOGGLE_OFF}"
TOGGLE_PAUSED = f"!document.getElementById('pause').checked && {_TOGGLE_OFF}"


async def visualiser_as(browser: DevTools, server: Server, role: str, shots: Path) -> dict:
    seen: dict = {}
    await browser.connect()
    await browser.send("Network.enable")
    await browser.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 900, "deviceScaleFactor": 1,
                                                              "mobile": False})
    await log_in(browser, server, role, PASSWORDS[role])
    await browser.wait_until("document.querySelector('.showError') !== null"
                             " && document.getElementById('pause') !== null")
    seen["header"] = await browser.evaluate_now(HEADER)
    seen["logo"] = await browser.evaluate_now("document.querySelector('.main-header .logo').innerText")
    seen["page_data"] = json.loads(await browser.evaluate_now(
        "document.querySelector('meta[name=\"luigi-appliance-ui\"]').getAttribute('content')"))
    seen["controls"] = {name: await browser.evaluate_now(visible(selector))
                        for name, selector in OPERATOR_CONTROLS.items()}
    seen["show_error"] = await browser.evaluate_now(visible(".showError"))
    await screenshot(browser, shots / f"{role}-visualiser.png")
    # The error pop-up of the FAILED task.
    await browser.evaluate_now("document.querySelector('.showError').click(); true")
    await browser.wait_until("document.querySelector('#errorModal pre') !== null && "
                             "getComputedStyle(document.getElementById('errorModal')).display === 'block'")
    seen["error_popup"] = await browser.evaluate_now("document.getElementById('errorModal').innerText")
    await asyncio.sleep(0.5)  # for the picture only: bootstrap fades the pop-up in
    await screenshot(browser, shots / f"{role}-error-popup.png")
    await browser.evaluate_now("$('#errorModal').modal('hide'); true")
    await browser.wait_until("getComputedStyle(document.getElementById('errorModal')).display === 'none'")
    # The pause toggle.
    seen["paused_before"] = paused(server)
    seen["flipped_at_once"] = await browser.evaluate_now(CLICK_PAUSE) is False
    if role == "viewer":
        seen["refusal"] = await browser.wait_until(
            f"{visible('#appliance-refusal')} && document.getElementById('appliance-refusal').innerText")
        seen["toggle_back"] = await browser.wait_until(TOGGLE_RUNNING)
        await asyncio.sleep(0.5)  # for the picture only: the toggle slides back in 0.35 s
        await screenshot(browser, shots / f"{role}-refused-pause.png")
    else:
        await browser.wait_until(TOGGLE_PAUSED)
        wait_for(lambda: paused(server), "the scheduler to be paused")
        seen["refusal_shown"] = await browser.evaluate_now(visible("#appliance-refusal"))
    seen["paused_after"] = paused(server)
    # The history page, under the same header.
    await browser.navigate(f"{server.url}/history")
    # 'complete' once bootstrap's stylesheet is applied: the label colours come from it.
    await browser.wait_until("location.pathname === '/history' && document.readyState === 'complete'"
                             " && document.querySelector('.failure-reason') !== null")
    seen["history_header"] = await browser.evaluate_now(HEADER)
    seen["history"] = await browser.evaluate_now("""(() => {
        const colour = name => { const e = Array.from(document.querySelectorAll('td .label'))
            .find(l => l.innerText === name); return e ? getComputedStyle(e).backgroundColor : null; };
        return {failed: colour('FAILED'), done: colour('DONE'),
                reason: document.querySelector('.failure-reason').innerText};
    })()""")
    await screenshot(browser, shots / f"{role}-history.png")
    # Log out from the history page: back at the form, which shows the banner too.
    await browser.evaluate_now("document.querySelector('#appliance-logout button').click(); true")
    await browser.wait_until("location.pathname === '/login' && document.getElementById('password') !== null")
    seen["login_header"] = await browser.evaluate_now(HEADER)
    await screenshot(browser, shots / f"{role}-login.png")
    return seen


def test_viewer_operator_and_admin_each_see_their_header_and_only_their_controls(
        ui_server: Server, tmp_path: Path, screenshots: Path) -> None:
    # One scheduler for the three roles (its setup is most of the cost): each in a new browser.
    for role in ("viewer", "operator", "admin"):
        assert ui_server.rpc("unpause").status_code == 200
        browser = DevTools(tmp_path / f"profile-{role}")
        try:
            seen = asyncio.run(visualiser_as(browser, ui_server, role, screenshots))
        finally:
            browser.close()
        check_role(role, seen, screenshots)
    print(f"\nUI screenshots of the three roles: {screenshots}")


def check_role(role: str, seen: dict, screenshots: Path) -> None:
    header = seen["header"]
    assert seen["logo"] == "luigi-appliance", role
    assert (header["banner"], header["bannerColor"]) == (BANNER, "rgb(201, 48, 44)"), role
    assert header["user"] == f"{role} ({role})" and header["logout"] is True, role
    operator = role != "viewer"
    assert seen["page_data"]["role"] == role
    assert ("pause" in seen["page_data"]["may"]) is operator and "task_list" in seen["page_data"]["may"], role
    assert ("prune" in seen["page_data"]["may"]) is (role == "admin"), role
    assert seen["controls"] == dict.fromkeys(OPERATOR_CONTROLS, operator), role
    assert seen["show_error"] is True, role  # reading an error is a viewer's right
    assert "ValueError: boom" in seen["error_popup"], role
    assert 'luigi-appliance run --module pipelines.ui UiFailed --day "2026-12-01"' in seen["error_popup"], role
    assert seen["paused_before"] is False and seen["flipped_at_once"] is True, role
    if operator:
        assert seen["paused_after"] is True and seen["refusal_shown"] is False, role
    else:
        assert "The scheduler refused pause: method pause needs role operator (HTTP 403)" in seen["refusal"]
        assert seen["toggle_back"] is True and seen["paused_after"] is False
    history_header = seen["history_header"]
    assert history_header["text"].startswith("luigi-appliance"), role
    assert {**history_header, "text": header["text"]} == header, role
    assert seen["history"] == {"failed": "rgb(217, 83, 79)", "done": "rgb(92, 184, 92)",
                               "reason": "ValueError: boom"}, role
    login = seen["login_header"]
    assert login["banner"] == BANNER and login["user"] is None and login["logout"] is False, role
    for page in ("visualiser", "error-popup", "history", "login"):
        assert (screenshots / f"{role}-{page}.png").stat().st_size > 10_000, (role, page)
