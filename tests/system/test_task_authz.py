"""Authorization by the scheduler's own record of a task, and RPC arguments luigi cannot take.

Real schedulers (``luigi-appliance serve``) with local accounts and, for allowlists that allow
some families, the real slapd of tests/ldap_server.py; the visualiser in real headless Chromium.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path

import luigi.scheduler
import pytest
import requests
from test_ldap import audit_lines, bearer, directory, directory_up, ldap_scheduler, session  # noqa: F401 (fixtures)
from test_visualiser_browser import DevTools, basic_header, csp_violations, index_url

from conftest import Server, cli
from luigi_appliance import policy

# The limits docs/access-control.md states (the code's own constants are checked below).
MAX_DEPTH, MAX_PARAM_VALUE_BYTES, MAX_PARAMS_BYTES = 32, 32 * 1024, 64 * 1024


def add_user(tmp_path: Path, name: str, role: str) -> tuple[str, str]:
    """A local account in the configured_server's users file (before the server starts)."""
    result = cli("user", "--users-file", str(tmp_path / "users"), "add", name, "--role", role,
                 input=f"{name}-long-password\n")
    assert result.returncode == 0, result.stderr
    return (name, f"{name}-long-password")


def as_user(server: Server, credentials: tuple[str, str]) -> requests.Session:
    return server.session(*credentials)


def response(resp: requests.Response):
    assert resp.status_code == 200, resp.text
    return resp.json()["response"]


def tasks_with_status(server: Server, status: str) -> set[str]:
    return set(response(server.rpc("task_list", status=status, upstream_status="")))


def test_every_mutating_method_that_names_a_task_is_classified() -> None:
    """Going through luigi's signatures: an argument naming a task is checked by the task's
    record, except update_metrics_task_started, whose ``task`` is a task object for metrics."""
    from luigi_appliance.server import rpc_arguments, task_access

    assert (rpc_arguments.MAX_DEPTH, rpc_arguments.MAX_PARAM_VALUE_BYTES, rpc_arguments.MAX_PARAMS_BYTES) == (
        MAX_DEPTH, MAX_PARAM_VALUE_BYTES, MAX_PARAMS_BYTES)
    assert set(TASK_SCOPED_CALLS) == task_access.RUNNER_METHODS
    for name in luigi.scheduler.RPC_METHODS:
        parameters = set(inspect.signature(getattr(luigi.scheduler.Scheduler, name)).parameters)
        names_task = parameters & {"task_id", "task"}
        if not names_task or not policy.RPC_METHODS[name].mutates or name == "update_metrics_task_started":
            continue
        assert task_access.TASK_ARGUMENT.get(name) in names_task, name


# ---- families by the task's record -------------------------------------------------------------

@pytest.mark.doc_rule("families-local-none", "get-work-families")
def test_local_worker_accounts_get_no_families_once_families_is_used(configured_server, tmp_path: Path) -> None:
    server = configured_server("[families]\netl-services = Report*\n", start=False)
    worker = add_user(tmp_path, "local-bot", "worker")
    server.start()
    secret = {"password": "hunter2-secret"}
    assert server.rpc("add_task", task_id="Secret_1", family="Secret", worker="admin-w", params=secret,
                      status="PENDING").status_code == 200
    bot = as_user(server, worker)
    # Even a family some group may add: the account is in no group.
    assert server.rpc("add_task", session=bot, task_id="Report_1", family="Report", worker="bot-w").status_code == 403
    assert server.rpc("add_task", session=bot, task_id="Secret_1", family="Secret", worker="bot-w",
                      status="DONE").status_code == 403
    work = server.rpc("get_work", session=bot, worker="bot-assistant", assistant=True)
    assert response(work)["task_id"] is None and "hunter2" not in work.text
    # A token for the account (here without its password, by the admin command) carries no families either.
    issued = cli("--config", str(tmp_path / "scheduler.conf"), "token", "issue", "--user", "local-bot")
    assert issued.returncode == 0, issued.stderr
    assert server.rpc("add_task", session=bearer(server, issued.stdout.strip()), task_id="Report_2",
                      family="Report", worker="bot-w2").status_code == 403
    # The task was there to be handed out: an unrestricted assistant gets it.
    assert response(server.rpc("get_work", worker="admin-assistant", assistant=True))["task_id"] == "Secret_1"
    assert tasks_with_status(server, "DONE") == set()


@pytest.mark.doc_rule("family-of-record", "declared-family-mismatch", "task-id-prefix", "get-work-families")
def test_a_restricted_account_cannot_act_on_another_family_by_declaring_its_own(request: pytest.FixtureRequest,
                                                                                 tmp_path: Path) -> None:
    server = request.getfixturevalue("ldap_scheduler")()  # test_ldap's slapd and its [families]
    alice, bot = session(server, "alice"), session(server, "etl-bot")  # etl-bot: Extract, Transform, Rep*
    assert server.rpc("add_task", session=alice, task_id="Secret_1", family="Secret", worker="alice-w",
                      params={"password": "hunter2-secret"}, priority=100).status_code == 200
    assert server.rpc("add_task", session=alice, task_id="Report_1", family="Report", worker="alice-w",
                      priority=1).status_code == 200
    # Marking another team's task DONE by saying it is one of ours: refused, and audited with both families.
    lie = server.rpc("add_task", session=bot, task_id="Secret_1", family="Report", worker="bot-w", status="DONE")
    assert lie.status_code == 403 and "'Secret'" in lie.json()["reason"]
    assert "Secret_1" not in tasks_with_status(server, "DONE")
    # Taking an id another team's pipeline will use, under a family of ours: refused.
    assert server.rpc("add_task", session=bot, task_id="Secret_2", family="Report", worker="bot-w").status_code == 403
    assert server.rpc("add_task", session=bot, task_id="Report_2", family="Report", worker="bot-w").status_code == 200
    # An existing task of ours, from an old client that leaves the family out: its record decides.
    assert server.rpc("add_task", session=bot, task_id="Report_1", worker="bot-w").status_code == 200
    # As an assistant it may run any runnable task, but only of its families; the secret stays secret.
    work = server.rpc("get_work", session=bot, worker="bot-assistant", assistant=True)
    assert response(work)["task_id"] in ("Report_1", "Report_2") and "hunter2" not in work.text
    refused = [line for line in audit_lines(tmp_path)
               if line["event"] == "rpc" and line["outcome"] == "refused:403" and line["principal"] == "etl-bot"]
    assert {(r["task_id"], r.get("family"), r.get("declared_family")) for r in refused} == {
        ("Secret_1", "Secret", "Report"), ("Secret_2", "Report", None)}


# ---- task-scoped worker methods ----------------------------------------------------------------

TASK_SCOPED_CALLS = {
    "set_task_status_message": {"status_message": "not yours"},
    "set_task_progress_percentage": {"progress_percentage": 99},
    "decrease_running_task_resources": {"decrease_resources": {"cpu": 1}},
    "add_scheduler_message_response": {"message_id": "m1", "response": "not yours"},
    "report_task_statistics": {"statistics": {}},
}


@pytest.mark.doc_rule("task-scoped-runner")
def test_task_scoped_methods_only_for_the_principal_running_or_adding_the_task(configured_server,
                                                                              tmp_path: Path) -> None:
    server = configured_server(start=False)
    one, two = (as_user(server, add_user(tmp_path, name, "worker")) for name in ("worker-one", "worker-two"))
    server.start()
    assert server.rpc("add_task", session=one, task_id="Job_1", family="Job", worker="one-w",
                      resources={"cpu": 1}).status_code == 200
    assert response(server.rpc("get_work", session=one, worker="one-w"))["task_id"] == "Job_1"
    assert server.rpc("ping", session=two, worker="two-w").status_code == 200
    for method, arguments in TASK_SCOPED_CALLS.items():
        resp = server.rpc(method, session=two, task_id="Job_1", **arguments)
        assert resp.status_code == 403 and "another principal" in resp.json()["reason"], (method, resp.text)
        assert server.rpc(method, session=one, task_id="Job_1", **arguments).status_code == 200, method
    message = response(server.rpc("get_task_status_message", task_id="Job_1"))["statusMessage"]
    assert message == "not yours"  # worker-one's, the last allowed call
    # Not running yet: the principals whose workers added it.
    assert server.rpc("add_task", session=one, task_id="Job_2", family="Job", worker="one-w").status_code == 200
    assert server.rpc("set_task_status_message", session=two, task_id="Job_2", status_message="x").status_code == 403
    assert server.rpc("set_task_status_message", session=one, task_id="Job_2", status_message="x").status_code == 200
    assert server.rpc("add_task", session=two, task_id="Job_2", family="Job", worker="two-w").status_code == 200
    assert server.rpc("set_task_status_message", session=two, task_id="Job_2", status_message="y").status_code == 200
    # A task the scheduler does not know, and operators, who are not restricted.
    assert server.rpc("set_task_status_message", session=two, task_id="Nope_1", status_message="x").status_code == 403
    assert server.rpc("set_task_status_message", task_id="Job_1", status_message="admin").status_code == 200


# ---- arguments luigi cannot take ---------------------------------------------------------------

@pytest.mark.doc_rule("api-data-too-deep", "api-arguments")
def test_deeply_nested_or_malformed_data_is_400_without_a_traceback(dev_server: Server) -> None:
    s = dev_server.session()
    resp = s.post(f"{dev_server.url}/api/ping", data={"data": "[" * 100_000 + "]" * 100_000}, timeout=30)
    assert resp.status_code == 400 and f"more than {MAX_DEPTH} levels" in resp.json()["reason"]
    # The limit itself: data is level 1, so MAX_DEPTH - 1 more objects and lists pass, one more does not.
    def nested(levels: int) -> object:
        value: object = "leaf"
        for level in range(levels):
            value = {"k": value} if level % 2 else [value]
        return value

    assert dev_server.rpc("ping", worker="w", k=nested(MAX_DEPTH - 1)).status_code == 200
    too_deep = dev_server.rpc("ping", worker="w", k=nested(MAX_DEPTH))
    assert too_deep.status_code == 400 and f"more than {MAX_DEPTH} levels" in too_deep.json()["reason"]
    # Missing, unknown or mistyped arguments: refused with the reason, not a 500.
    assert "needs argument(s) worker" in dev_server.rpc("ping").json()["reason"]
    assert "takes no argument(s) bogus" in dev_server.rpc("pause", bogus=1).json()["reason"]
    assert "task_id must be a string" in dev_server.rpc("add_task", worker="w", task_id=["x"]).json()["reason"]
    assert "Traceback" not in dev_server.log() and " 500 " not in dev_server.log()


@pytest.mark.doc_rule("params-limit", "add-task-types")
def test_huge_parameters_and_values_that_break_get_work_are_refused(dev_server: Server) -> None:
    def add(task_id: str, **arguments) -> requests.Response:
        return dev_server.rpc("add_task", worker="w", task_id=task_id, family="Big", **arguments)

    one_value = add("Big_1", params={"blob": "x" * (MAX_PARAM_VALUE_BYTES + 1)})
    assert one_value.status_code == 413 and f"{MAX_PARAM_VALUE_BYTES} bytes per parameter value" in one_value.text
    per_task = add("Big_2", params={f"p{i}": "x" * (MAX_PARAM_VALUE_BYTES - 100) for i in range(3)})
    assert per_task.status_code == 413 and f"{MAX_PARAMS_BYTES} bytes per task" in per_task.text
    assert add("Big_3", params={"p": "x" * 1000, "q": "a list, as luigi sends it"}).status_code == 200
    # Stored, these would make every later get_work of an assistant or of a worker with resources fail.
    assert "priority must be a number" in add("Big_4", priority="high").json()["reason"]
    assert "priority must be a number" in add("Big_5", priority=None).json()["reason"]
    assert "resources must be an object of numbers" in add("Big_6", resources={"cpu": "two"}).json()["reason"]
    assert response(dev_server.rpc("get_work", worker="assistant", assistant=True))["task_id"] == "Big_3"
    assert tasks_with_status(dev_server, "PENDING") == set()  # only Big_3 was added, and it runs now
    assert "Traceback" not in dev_server.log()


# ---- the visualiser renders task fields as text -------------------------------------------------

MARKUP = "<img id=xss-{} src=x onerror=window.xssRan=true>"


@pytest.mark.doc_rule("visualiser-text")
def test_visualiser_renders_names_messages_and_ids_as_text(dev_server: Server, tmp_path: Path) -> None:
    task_id = "Xss_" + MARKUP.format("id")
    worker = "worker " + MARKUP.format("worker")
    assert dev_server.rpc("add_task", worker=worker, task_id=task_id, family=MARKUP.format("family"),
                          params={"marker": "XssMarker"}, resources={MARKUP.format("resource"): 1},
                          accepts_messages=True).status_code == 200
    assert response(dev_server.rpc("get_work", worker=worker))["task_id"] == task_id
    assert dev_server.rpc("set_task_status_message", task_id=task_id,
                          status_message=MARKUP.format("status")).status_code == 200

    async def scenario(browser: DevTools) -> dict:
        await browser.connect()
        await browser.send("Network.enable")
        await browser.send("Network.setExtraHTTPHeaders", {"headers": basic_header("admin", dev_server.admin_password)})
        await browser.navigate(index_url(dev_server))
        await browser.wait_until("document.body.innerText.indexOf('XssMarker') >= 0")
        seen = {"table": await browser.evaluate_now("document.getElementById('taskTable').innerText")}
        # The status message dialog, refreshed from the API every half second.
        seen["status"] = await browser.evaluate("""
            new Promise(resolve => {
                $(document).ajaxComplete((event, xhr, settings) => {
                    if (settings.url.indexOf('get_task_status_message') >= 0)
                        setTimeout(() => resolve($('#statusMessageModal pre').text()), 0);
                });
                $('#taskTable .statusMessage').first().click();
            })""")
        # A response to a scheduler message: sent from the dialog, answered by the running worker.
        await browser.evaluate("""
            $('#taskTable .schedulerMessage').first().click();
            $('#schedulerMessageInput').val('hello'); $('#schedulerMessageAwaitResponse').prop('checked', true);
            $('#schedulerMessageButton').click(); true""")
        messages = await asyncio.to_thread(wait_for_message, dev_server, worker)
        await asyncio.to_thread(dev_server.rpc, "add_scheduler_message_response", task_id=task_id,
                                message_id=messages[0]["kwargs"]["message_id"], response=MARKUP.format("response"))
        seen["response"] = await browser.wait_until(
            "$('#schedulerMessageResponse pre > div').text() || false")
        # Both graph views: the d3 view's node label and tooltip, the default view's popover.
        graph = index_url(dev_server) + f"#tab=graph&taskId={requests.utils.quote(task_id, safe='')}&visType="
        await browser.navigate(graph + "d3")
        await browser.wait_until("$('#mysvg g.node').length > 0")
        seen["d3"] = await browser.evaluate_now("$('#mysvg g.node').trigger('mouseenter'); $('#mysvg').text()")
        seen["tooltip"] = await browser.evaluate_now("$('.tipsy-inner').text()")
        await browser.navigate(graph + "svg")
        await browser.wait_until("$('#graphPlaceholder .graph-node-a').length > 0")
        seen["popover"] = await browser.evaluate_now(
            "$('#graphPlaceholder .graph-node-a').parent().popover('show'); $('.popover-title').text()")
        seen["elements"] = await browser.evaluate_now(
            "[].map.call(document.querySelectorAll('[id^=xss-]'), e => e.id).join(' ')")
        seen["ran"] = await browser.evaluate_now("window.xssRan === true")
        return seen

    browser = DevTools(tmp_path / "profile")
    try:
        seen = asyncio.run(scenario(browser))
    finally:
        browser.close()
    assert seen["elements"] == "" and seen["ran"] is False
    assert csp_violations(browser.log()) == []
    assert MARKUP.format("family") in seen["table"] and MARKUP.format("resource") in seen["table"]
    assert seen["status"] == MARKUP.format("status")
    assert seen["response"] == MARKUP.format("response")
    assert MARKUP.format("family") in seen["d3"]  # the node's label
    assert seen["tooltip"] == task_id + worker
    assert seen["popover"] == MARKUP.format("family")


def wait_for_message(server: Server, worker: str) -> list[dict]:
    """The scheduler messages queued for ``worker`` (what its ping would deliver)."""
    for _ in range(100):
        messages = response(server.rpc("ping", worker=worker))["rpc_messages"]
        if messages:
            return messages
        time.sleep(0.1)
    raise AssertionError("the visualiser's scheduler message never reached the worker")
