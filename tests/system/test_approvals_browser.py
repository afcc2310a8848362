"""The approvals pages in a real headless Chromium, against a real scheduler and real accounts.

An agent-kind account (``[approvals] agents = user:robot``) submits gated tasks through the API
with HTTP Basic; they are held. An approver logs in through the form, finds the requests in the
list, opens one (parameters, dependencies with their statuses, the graph link) and approves it
with a comment: the scheduler hands the task out. Another is denied with a comment: the task
fails with it. The requester's own try is refused on the page; a same-origin POST without the
form's CSRF token (or with a wrong one) changes nothing; an admin's break-glass approval works.
A screenshot of a request's page goes to /tmp/approvals-page.png.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import requests
from audit_records import caller_records
from test_login_browser import log_in
from test_visualiser_browser import DevTools, csp_violations

from conftest import Server, cli

CONFIG = """
[approvals]
agents = user:robot
[approval.reports]
families = GatedReport
approvers = user:alice user:admin
"""
PASSWORDS = {"robot": "robot-password-123", "alice": "alice-password-123"}
ROLES = {"robot": "worker", "alice": "viewer"}
WORKER = "robot-worker"
DEP = "PlainExtract_2026_12_01_aa11"
DEP_OF_DEP = "PlainDownload_2026_12_01_bb22"
# Parameters come from clients: this one must show as text, never as an element.
HOSTILE = '<img id="injected" src=x onerror="document.title=1">'
SCREENSHOT = Path("/tmp/approvals-page.png")


def gated_task(day: str) -> str:
    return f"GatedReport_{day.replace('-', '_')}_5c5c"


def submit(server: Server, robot: requests.Session, day: str) -> str:
    """robot's add_task of GatedReport(day=...) depending on DEP: the request's id."""
    answer = server.rpc("add_task", session=robot, worker=WORKER, task_id=gated_task(day), family="GatedReport",
                        status="PENDING", module="pipelines.reports", deps=[DEP],
                        params={"day": day, "note": HOSTILE})
    assert answer.status_code == 200, answer.text
    held = answer.json()["response"]
    assert held["approval_request"].startswith("apr-"), held
    assert "Awaiting approval" in held["summary"] and "robot (agent)" in held["summary"], held
    return held["approval_request"]


def get_work(server: Server, robot: requests.Session) -> str | None:
    answer = server.rpc("get_work", session=robot, worker=WORKER, host="robot-host")
    assert answer.status_code == 200, answer.text
    return answer.json()["response"]["task_id"]


async def screenshot(browser: DevTools, path: Path) -> None:
    shot = await browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


def text(selector: str) -> str:
    return f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || null"


def texts(**selectors: str) -> str:
    """JS: an object of the inner texts of ``selectors`` (null for one not on the page)."""
    return "({" + ", ".join(f"{name}: {text(selector)}" for name, selector in selectors.items()) + "})"


def present(element_id: str) -> str:
    return f"document.getElementById({json.dumps(element_id)}) !== null"


async def decided(browser: DevTools, done: str) -> None:
    """Wait for the redirect back to the request's page, with its message."""
    await browser.wait_until(f"location.search === '?done={done}' && {present('approval-flash')}")


async def open_request(browser: DevTools, server: Server, request_id: str) -> None:
    await browser.navigate(f"{server.url}/approvals/{request_id}")
    await browser.wait_until(f"location.pathname === '/approvals/{request_id}' && "
                             "document.readyState === 'complete' && document.getElementById('request-state') !== null")


async def decide(browser: DevTools, decision: str, comment: str, break_glass: bool = False) -> None:
    """Type the comment and press the button, as a person would."""
    await browser.evaluate_now(f"""
        document.getElementById('comment').value = {json.dumps(comment)};
        {"document.getElementById('break-glass').checked = true;" if break_glass else ""}
        document.getElementById({json.dumps(decision)}).click(); true""")


async def log_out(browser: DevTools) -> None:
    await browser.evaluate_now("document.querySelector('#appliance-logout button').click(); true")
    await browser.wait_until("location.pathname === '/login' && document.getElementById('password') !== null")


FORGED = """(async () => {
    const post = body => fetch(location.pathname + '/decision', {method: 'POST', body: new URLSearchParams(body)})
        .then(r => r.status);
    return [await post({decision: 'approve', comment: 'forged'}),
            await post({decision: 'approve', comment: 'forged', csrf_token: 'guessed'})];
})()"""


async def scenario(browser: DevTools, server: Server, ids: dict[str, str]) -> dict:
    seen: dict = {}
    await browser.connect()
    await browser.send("Network.enable")
    await browser.send("Emulation.setDeviceMetricsOverride", {"width": 1300, "height": 1000, "deviceScaleFactor": 1,
                                                              "mobile": False})
    # The approver: from the visualiser's header to the list.
    await log_in(browser, server, "alice", PASSWORDS["alice"])
    await browser.evaluate_now("document.getElementById('appliance-approvals').click(); true")
    await browser.wait_until(f"location.pathname === '/approvals' && {present('pending-requests')}")
    seen["list"] = await browser.evaluate_now("""Array.from(document.querySelectorAll('#pending-requests tbody tr'))
        .map(tr => [tr.dataset.requestId, tr.dataset.state, tr.innerText])""")
    seen["list_header"] = await browser.evaluate_now(text("#appliance-user"))
    # One request's page, opened from the list.
    await browser.evaluate_now(f"document.querySelector('a[href=\"/approvals/{ids['approve']}\"]').click(); true")
    await browser.wait_until(f"location.pathname === '/approvals/{ids['approve']}' && "
                             "document.readyState === 'complete' && document.getElementById('decision-form') !== null")
    seen["detail"] = await browser.evaluate_now("""(() => ({
        params: Array.from(document.querySelectorAll('#request-params tbody tr'))
            .map(tr => Array.from(tr.cells).map(c => c.innerText)),
        injected: document.getElementById('injected') !== null || document.title === '1',
        requester: document.getElementById('request-requester').innerText,
        missing: document.getElementById('request-missing').innerText,
        rules: document.getElementById('request-rules').innerText,
        deps: Array.from(document.querySelectorAll('#task-deps li.dep'))
            .map(li => [li.dataset.taskId, li.dataset.status, li.style.paddingLeft]),
        graph: document.getElementById('graph-link').getAttribute('href'),
        csrf: document.querySelector('#decision-form input[name=csrf_token]').value.length,
        break_glass: document.getElementById('break-glass') !== null,
        state: document.getElementById('request-state').innerText,
    }))()""")
    await screenshot(browser, SCREENSHOT)
    await decide(browser, "approve", "Looks right: the December report.")
    await decided(browser, "approved")
    seen["approved"] = await browser.evaluate_now(texts(state="#request-state", flash="#approval-flash",
                                                        decisions="#request-decisions"))
    seen["approved"]["form"] = await browser.evaluate_now(present("decision-form"))
    # Denied, with the reason.
    await open_request(browser, server, ids["deny"])
    await decide(browser, "deny", "Not this day: the data is incomplete.")
    await decided(browser, "denied")
    seen["denied"] = await browser.evaluate_now(texts(state="#request-state", reason="#request-reason"))
    # Forged: the same origin, the session's cookie, no (or a wrong) form token.
    await open_request(browser, server, ids["own"])
    seen["forged"] = await browser.evaluate_now(FORGED)
    await open_request(browser, server, ids["own"])
    seen["after_forged"] = await browser.evaluate_now(text("#request-state"))
    # The list again: the pending one first, then the decided ones.
    await browser.navigate(f"{server.url}/approvals")
    await browser.wait_until(f"location.pathname === '/approvals' && {present('decided-requests')}")
    seen["list_after"] = await browser.evaluate_now("""Array.from(document.querySelectorAll('tr.approval-request'))
        .map(tr => [tr.closest('table').id, tr.dataset.requestId, tr.dataset.state])""")
    seen["csp"] = csp_violations(browser.log())
    await log_out(browser)
    # The requester tries to approve their own request.
    await log_in(browser, server, "robot", PASSWORDS["robot"])
    await open_request(browser, server, ids["own"])
    seen["own_note"] = await browser.evaluate_now(text("#own-request"))
    await decide(browser, "approve", "I approve of myself.")
    await browser.wait_until(present("approval-refusal"))
    seen["own"] = await browser.evaluate_now(texts(refusal="#approval-refusal", state="#request-state"))
    seen["own"]["comment"] = await browser.evaluate_now("document.getElementById('comment').value")
    await log_out(browser)
    # An administrator approves alone, break-glass, with a reason.
    await log_in(browser, server, "admin", server.admin_password)
    await open_request(browser, server, ids["own"])
    await decide(browser, "approve", "Incident 42: the report is needed now.", break_glass=True)
    await decided(browser, "approved")
    seen["break_glass"] = await browser.evaluate_now(texts(state="#request-state", decisions="#request-decisions"))
    return seen


def test_approve_deny_refusals_and_csrf_on_the_approvals_pages(configured_server, tmp_path: Path) -> None:
    server = configured_server(CONFIG, start=False)
    for name, password in PASSWORDS.items():
        result = cli("user", "--users-file", str(tmp_path / "users"), "add", name, "--role", ROLES[name],
                     input=password + "\n")
        assert result.returncode == 0, result.stderr
    server.start()
    robot = server.session("robot", PASSWORDS["robot"])
    # The dependencies are not gated, and already done: only the approval holds the report back.
    assert server.rpc("add_task", session=robot, worker=WORKER, task_id=DEP_OF_DEP, family="PlainDownload",
                      status="DONE", params={"day": "2026-12-01"}).status_code == 200
    assert server.rpc("add_task", session=robot, worker=WORKER, task_id=DEP, family="PlainExtract",
                      status="DONE", params={"day": "2026-12-01"}, deps=[DEP_OF_DEP]).status_code == 200
    ids = {"approve": submit(server, robot, "2026-12-01"), "deny": submit(server, robot, "2026-12-02"),
           "own": submit(server, robot, "2026-12-03")}
    assert get_work(server, robot) is None  # all three held

    browser = DevTools(tmp_path / "profile")
    try:
        seen = asyncio.run(scenario(browser, server, ids))
    finally:
        browser.close()

    listed = {row[0]: row for row in seen["list"]}
    assert set(listed) == set(ids.values())
    row = listed[ids["approve"]]
    assert row[1] == "pending" and "GatedReport" in row[2] and gated_task("2026-12-01") in row[2], row
    assert "robot (agent)" in row[2] and "1 more from user:alice or user:admin (reports)" in row[2], row
    assert seen["list_header"] == "alice (viewer)"

    detail = seen["detail"]
    assert detail["params"] == [["day", "2026-12-01"], ["note", HOSTILE]], detail
    assert detail["injected"] is False
    assert detail["requester"] == "robot (agent)" and detail["state"] == "pending"
    assert "1 more from user:alice or user:admin (reports)" in detail["missing"]
    assert "1 from user:alice or user:admin (reports)" in detail["rules"]
    assert detail["deps"] == [[DEP, "DONE", "0px"], [DEP_OF_DEP, "DONE", "24px"]]  # a tree
    assert detail["graph"] == f"/static/visualiser/index.html#tab=graph&taskId={gated_task('2026-12-01')}"
    assert detail["csrf"] > 20 and detail["break_glass"] is False  # alice is no admin
    assert SCREENSHOT.stat().st_size > 20_000

    approved = seen["approved"]
    assert approved["state"] == "approved" and approved["form"] is False, approved
    assert approved["flash"] == "Your approval was recorded."
    assert "Approved by alice" in approved["decisions"] and "Looks right: the December report." in approved["decisions"]
    # Released: the scheduler hands the approved task out now, and only that one.
    assert get_work(server, robot) == gated_task("2026-12-01")

    assert seen["denied"]["state"] == "denied"
    assert seen["denied"]["reason"] == "denied by alice: Not this day: the data is incomplete."
    failed = server.rpc("task_list", status="FAILED", upstream_status="").json()["response"]
    assert gated_task("2026-12-02") in failed
    error = server.rpc("fetch_error", task_id=gated_task("2026-12-02")).json()["response"]["error"]
    assert "Not this day: the data is incomplete." in error

    assert seen["forged"] == [403, 403]
    assert seen["after_forged"] == "pending"
    assert seen["list_after"] == [["pending-requests", ids["own"], "pending"],
                                  ["decided-requests", ids["deny"], "denied"],
                                  ["decided-requests", ids["approve"], "approved"]]
    assert seen["csp"] == []

    assert "You asked for this request" in seen["own_note"]
    own = seen["own"]
    assert own["refusal"] == f"The scheduler refused this decision: robot asked for {ids['own']} and may not approve it"
    assert own["state"] == "pending" and own["comment"] == "I approve of myself."
    assert f"403 POST /approvals/{ids['own']}/decision" in server.log()

    assert seen["break_glass"]["state"] == "approved"
    assert "Break-glass approval by admin" in seen["break_glass"]["decisions"]
    decisions = [(r["outcome"], r["principal"], r.get("request"), r.get("comment"))
                 for r in caller_records(tmp_path / "audit.log") if r["event"] == "approval"]
    assert ("approval", "alice", ids["approve"], "Looks right: the December report.") in decisions
    assert ("denied", "alice", ids["deny"], "Not this day: the data is incomplete.") in decisions
    assert ("break_glass", "admin", ids["own"], "Incident 42: the report is needed now.") in decisions
    # Nothing the forged posts or the requester sent was counted.
    assert not [d for d in decisions if d[3] in ("forged", "I approve of myself.")]


def test_without_approval_rules_the_list_says_so(configured_server) -> None:
    server = configured_server()
    page = server.session().get(f"{server.url}/approvals", headers={"Accept": "text/html"}, timeout=10)
    assert page.status_code == 200, page.text
    assert "No approval rules are configured on this scheduler" in page.text
    assert 'id="appliance-approvals" href="/approvals"' in page.text
    one = server.session().get(f"{server.url}/approvals/apr-0123456789ab", timeout=10)
    assert one.status_code == 404 and "No approval rules are configured" in one.text


def browser_login(server: Server, user: str, password: str) -> requests.Session:
    """The login form, posted as a browser does (its form cookie and token, our Origin)."""
    client = requests.Session()
    client.trust_env = False
    client.verify = str(server.ca_file)
    form = client.get(f"{server.url}/login", headers={"Accept": "text/html"}, timeout=10)
    token = form.text.split('name="login_token" value="')[1].split('"')[0]
    answer = client.post(f"{server.url}/login", headers={"Origin": server.url}, timeout=30, allow_redirects=False,
                         data={"username": user, "password": password, "login_token": token, "next": "/approvals"})
    assert answer.status_code == 303, answer.text
    return client


def test_a_stale_browser_login_cannot_decide(configured_server, tmp_path: Path) -> None:
    """[approvals] fresh_login: the page's form refuses a session older than that, and says why."""
    server = configured_server(CONFIG.replace("[approvals]\n", "[approvals]\nfresh_login = 30s\n"), start=False)
    result = cli("user", "--users-file", str(tmp_path / "users"), "add", "robot", "--role", "worker",
                 input=PASSWORDS["robot"] + "\n")
    assert result.returncode == 0, result.stderr
    server.start()
    robot = server.session("robot", PASSWORDS["robot"])
    request_id = submit(server, robot, "2026-12-09")
    admin = browser_login(server, "admin", server.admin_password)
    page = admin.get(f"{server.url}/approvals/{request_id}", headers={"Accept": "text/html"}, timeout=10)
    assert page.status_code == 200, page.text
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    time.sleep(31)
    answer = admin.post(f"{server.url}/approvals/{request_id}/decision", headers={"Origin": server.url},
                        data={"csrf_token": token, "decision": "approve", "comment": "late"}, timeout=10)
    assert answer.status_code == 403, answer.text
    shown = " ".join(answer.text.split())
    assert "The scheduler refused this decision: this decision needs a fresh login: you signed in" in shown, shown
    assert 'id="request-state">pending<' in answer.text
