"""The guard's side of [ha]: a standby refuses before authentication and names the leader; a
leader's reply to a state change waits for the journal commit, and a commit that fails is not
acknowledged; reads never wait.

The real guard, app, scheduler (with its journal hook) and HTTP server run in process on a
loopback socket. The node deciding leadership is a stand-in driven by the test
(``Switchboard``): the real one (ha/node.py), with PostgreSQL and two schedulers, is tested in
tests/system/test_ha_failover.py. Here the point is what the guard does with its answers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
from typing import Any

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil

from luigi_appliance.auth import Principal, Role
from luigi_appliance.ha.status import NodeStatus
from luigi_appliance.scheduler import Scheduler
from luigi_appliance.server import app as app_module
from luigi_appliance.server.leadership import LEADER_HEADER, NotLeader

LEADER_URL = "https://node-b.example:8082/"


class Admin:
    async def authenticate(self, request: Any) -> Principal | None:
        return Principal("root", Role.ADMIN, "test") if request.headers.get("Authorization") else None

    def reload(self) -> None:
        pass


class Switchboard:
    """Leadership as the test sets it: role, and a commit the test releases or refuses."""

    def __init__(self) -> None:
        self.role = "leader"
        self.records: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.refuse: str | None = None

    # the scheduler's journal sink
    def append(self, at: float, rec: dict[str, Any]) -> int:
        self.records.append(rec)
        return len(self.records)

    # Leadership
    def serving(self) -> bool:
        return self.role == "leader"

    def status(self) -> NodeStatus:
        leading = self.role == "leader"
        return NodeStatus(role=self.role, node="a", epoch=7, leader="a" if leading else "b",
                          leader_url="https://node-a.example:8082/" if leading else LEADER_URL)

    def appended(self) -> int:
        return len(self.records)

    async def committed(self) -> None:
        await self.release.wait()
        if self.refuse is not None:
            raise NotLeader(self.refuse)


async def _serve(board: Switchboard) -> tuple[tornado.httpserver.HTTPServer, str, Scheduler]:
    """Our scheduler (journalling into ``board``) behind the real app and guard, on loopback."""
    scheduler = Scheduler()
    scheduler.journal = board
    app = app_module.build_app(scheduler, [Admin()], tls=False, hsts_max_age=0, leadership=board)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}", scheduler


AUTH = {"Authorization": "Basic " + base64.b64encode(b"root:x").decode()}


def _rpc(base: str, method: str, **data: Any) -> tornado.httpclient.HTTPRequest:
    body = urllib.parse.urlencode({"data": json.dumps(data)})
    return tornado.httpclient.HTTPRequest(f"{base}/api/{method}", method="POST", body=body, headers=AUTH)


@pytest.mark.doc_rule("standby-503")
def test_a_standby_answers_503_naming_the_leader_before_authentication() -> None:
    async def scenario() -> dict[str, Any]:
        board = Switchboard()
        board.role = "standby"
        server, base, _ = await _serve(board)
        client = tornado.httpclient.AsyncHTTPClient()
        try:
            anonymous = await client.fetch(f"{base}/api/task_list?data=%7B%7D", raise_error=False)
            worker = await client.fetch(_rpc(base, "add_task", task_id="T", worker="w"), raise_error=False)
            page = await client.fetch(f"{base}/", headers=AUTH, raise_error=False)
            health = await client.fetch(f"{base}/healthz", raise_error=False)
            leader = await client.fetch(f"{base}/healthz/leader", raise_error=False)
        finally:
            server.stop()
        return {"anonymous": anonymous, "worker": worker, "page": page, "health": health, "leader": leader}

    answers = asyncio.run(scenario())
    for name in ("anonymous", "worker", "page"):
        answer = answers[name]
        assert answer.code == 503, name
        assert answer.headers[LEADER_HEADER] == LEADER_URL, name
        assert answer.headers["Retry-After"] == "1"
        assert json.loads(answer.body)["reason"] == f"standby: the leader is {LEADER_URL}"
    assert answers["health"].code == 200
    assert answers["leader"].code == 503
    assert json.loads(answers["leader"].body)["role"] == "standby"


@pytest.mark.doc_rule("healthz-leader")
def test_the_leader_answers_200_on_healthz_leader_with_its_role_and_epoch() -> None:
    async def scenario() -> tuple[int, dict[str, Any]]:
        server, base, _ = await _serve(Switchboard())
        try:
            answer = await tornado.httpclient.AsyncHTTPClient().fetch(f"{base}/healthz/leader", raise_error=False)
        finally:
            server.stop()
        return answer.code, json.loads(answer.body)

    code, body = asyncio.run(scenario())
    assert code == 200
    assert body["role"] == "leader" and body["epoch"] == 7 and body["node"] == "a"


@pytest.mark.doc_rule("standby-503")
def test_a_state_change_is_acknowledged_only_after_its_commit_and_reads_do_not_wait() -> None:
    async def scenario() -> tuple[bool, int, int, list[str]]:
        board = Switchboard()
        server, base, _ = await _serve(board)
        client = tornado.httpclient.AsyncHTTPClient()
        try:
            change = asyncio.ensure_future(client.fetch(_rpc(base, "add_task", task_id="T", worker="w"),
                                                        raise_error=False))
            await asyncio.sleep(0.3)
            held = not change.done()
            read = await client.fetch(f"{base}/api/task_list?data=%7B%7D", headers=AUTH, raise_error=False)
            board.release.set()
            answer = await change
        finally:
            server.stop()
        return held, read.code, answer.code, [rec["m"] for rec in board.records if rec.get("k") == "call"]

    held, read, answered, methods = asyncio.run(scenario())
    assert held, "the add_task reply left before its journal record committed"
    assert read == 200
    assert answered == 200
    assert "add_task" in methods


def test_a_change_whose_commit_is_refused_is_not_acknowledged() -> None:
    async def scenario() -> tornado.httpclient.HTTPResponse:
        board = Switchboard()
        server, base, _ = await _serve(board)
        board.refuse = "a newer epoch holds the lease"
        board.release.set()
        try:
            answer = await tornado.httpclient.AsyncHTTPClient().fetch(
                _rpc(base, "add_task", task_id="T", worker="w"), raise_error=False)
        finally:
            server.stop()
        return answer

    answer = asyncio.run(scenario())
    assert answer.code == 503
    assert "a newer epoch holds the lease" in json.loads(answer.body)["reason"]
    assert "response" not in json.loads(answer.body)
