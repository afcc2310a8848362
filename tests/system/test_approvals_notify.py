"""The example notification program etc/approvals/notify-chat, run by a real scheduler.

``[approvals] notify_command`` names the shipped script and a webhook URL file; an agent-kind
local account submits a gated task over HTTP Basic (add_task), and a chat server of the test's
own (http.server in a thread, speaking the Slack/Mattermost incoming-webhook protocol) must
receive one message naming the request, the task and the requester. Its failures (a URL file
others may read, a chat server answering 500) must reach the scheduler's log as one line.
"""

from __future__ import annotations

import json
import queue
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO, Server, cli

NOTIFY_CHAT = REPO / "etc" / "approvals" / "notify-chat"
HOOK_PATH = "/hooks/3f9a-secret-part"


@dataclass
class ChatServer:
    """An incoming-webhook endpoint: every POST it gets, and the status it answers."""

    port: int = 0
    received: queue.Queue = field(default_factory=queue.Queue)
    status: int = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PATH}"

    def next_message(self, timeout: float = 20) -> dict:
        return self.received.get(timeout=timeout)


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    state = ChatServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.put({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                "body": json.loads(body)})
            self.send_response(state.status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if state.status == 200 else b"error")

        def log_message(self, format: str, *args: object) -> None:  # the test output stays quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def url_file(tmp_path: Path, chat: ChatServer, mode: int = 0o600) -> Path:
    path = tmp_path / "chat-webhook.url"
    path.write_text(f"# the incoming webhook of #data-approvals\n{chat.url}\n")
    path.chmod(mode)
    return path


def gated_server(configured_server, tmp_path: Path, url_path: Path) -> tuple[Server, tuple[str, str]]:
    """A scheduler gating agents' Backfill* tasks, notifying through notify-chat; the agent's login."""
    command = f"{shlex.quote(str(NOTIFY_CHAT))} {shlex.quote(str(url_path))}"
    server = configured_server(f"""
[approvals]
agents = user:agent-bot
notify_command = {command}
[approval.prod-backfill]
families = Backfill*
params = env=prod
requesters = kind:agent
approvals = 2
approvers = role:operator
""", start=False)
    for name, role in (("agent-bot", "worker"), ("alice", "worker")):
        result = cli("user", "--users-file", str(tmp_path / "users"), "add", name, "--role", role,
                     input=f"{name}-long-password\n")
        assert result.returncode == 0, result.stderr
    server.start()
    return server, ("agent-bot", "agent-bot-long-password")


def add_task(server: Server, login: tuple[str, str], task_id: str, env: str) -> object:
    resp = server.rpc("add_task", session=server.session(*login), task_id=task_id, family="Backfill",
                      params={"env": env, "day": "2026-12-01"}, worker=f"{login[0]}-w", status="PENDING")
    assert resp.status_code == 200, resp.text
    return resp.json()["response"]


def wait_for_log(server: Server, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the scheduler's log:\n{server.log()[-4000:]}")


def test_a_new_request_is_posted_to_the_chat_webhook(configured_server, tmp_path: Path, chat: ChatServer) -> None:
    server, agent = gated_server(configured_server, tmp_path, url_file(tmp_path, chat))
    # Not gated (a person's task, and an agent's task outside the rule): no request, no message.
    assert add_task(server, ("alice", "alice-long-password"), "Backfill_2026_12_01_prod", "prod") is None
    assert add_task(server, agent, "Backfill_2026_12_01_dev", "dev") is None

    answer = add_task(server, agent, "Backfill_2026_12_01_prod_a", "prod")
    assert isinstance(answer, dict), answer
    request_id = answer["approval_request"]

    message = chat.next_message()
    assert message["path"] == HOOK_PATH
    assert message["content_type"] == "application/json"
    text = message["body"]["text"]
    assert request_id in text and "Backfill_2026_12_01_prod_a" in text, text
    assert "`agent-bot` (`agent`)" in text and "2 more from role:operator (prod-backfill)" in text, text
    assert "`env`=`prod`" in text, text
    wait_for_log(server, f"Approval notification for {request_id} sent by {NOTIFY_CHAT}")
    assert chat.received.empty()  # one message, for the one request
    # The webhook URL is a secret: it is in the file only, never in the scheduler's log.
    assert "secret-part" not in server.log()


def test_failures_of_the_program_reach_the_scheduler_log(configured_server, tmp_path: Path,
                                                         chat: ChatServer) -> None:
    path = url_file(tmp_path, chat, mode=0o644)
    server, agent = gated_server(configured_server, tmp_path, path)

    first = add_task(server, agent, "Backfill_2026_12_01_prod_b", "prod")
    assert isinstance(first, dict), first
    wait_for_log(server, f"Approval notification for {first['approval_request']}: {NOTIFY_CHAT} exited with 1: "
                         f"notify-chat: the webhook URL file {path} has mode 0644")
    assert chat.received.empty()  # refused before anything was sent

    path.chmod(0o640)
    chat.status = 500
    second = add_task(server, agent, "Backfill_2026_12_01_prod_c", "prod")
    assert isinstance(second, dict), second
    assert second["approval_request"] in chat.next_message()["body"]["text"]
    wait_for_log(server, f"Approval notification for {second['approval_request']}: {NOTIFY_CHAT} exited with 1: "
                         "notify-chat: the chat server 127.0.0.1 answered 500")
    assert "Traceback" not in server.log()
