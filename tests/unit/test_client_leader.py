"""client.conf's several scheduler URLs, and the client following the leader among them.

The nodes are real HTTP servers on 127.0.0.1 started here (``Node``): a leader answers the token
request and RPCs, a standby answers everything but /healthz/leader with 503 and, when it knows
one, the leader's URL in ``X-Luigi-Appliance-Leader`` (the contract of the HA scheduler pair,
docs/ha.md). They stand in for two ``luigi-appliance serve`` processes sharing PostgreSQL, which
the server side of issue 19 provides (tests/system/test_ha_*.py run the real pair); the
requests are made by the real client: luigi's RemoteScheduler with the appliance's fetcher.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import luigi.rpc
import pytest
import requests

from luigi_appliance.client.credentials import Credentials
from luigi_appliance.client.leader import LEADER_HEADER, Leader, same_url
from luigi_appliance.client.remote import AuthenticatedFetcher, AuthenticatedRemoteScheduler
from luigi_appliance.client.settings import load_client_settings
from luigi_appliance.errors import ConfigError

CREDENTIALS = Credentials("etl-bot", "a-long-enough-password")
LOGGER = "luigi-interface.appliance.leader"


@dataclass
class Node:
    """A stand-in scheduler node: ``role`` leader or standby (changeable while it runs);
    ``leader_url`` is what a standby's 503 names; every request is recorded."""

    name: str
    role: str = "leader"
    leader_url: str | None = None
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Authorization
    # Tokens this node verifies: its own, unless the test says otherwise (keys shared by both).
    accepts: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.accepts.add(self.token)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def token(self) -> str:
        return f"token-of-{self.name}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/"

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.seen]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(node: Node) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self._answer()

        def _answer(self) -> None:
            path = self.path.split("?", 1)[0]
            auth = self.headers.get("Authorization")
            node.seen.append((self.command, path, auth))
            if path == "/healthz/leader":
                return self._json(200 if node.role == "leader" else 503,
                                  {"role": node.role, "node": node.name, "epoch": 1, "leader_url": node.leader_url})
            if node.role != "leader":
                headers = {"Retry-After": "1", **({LEADER_HEADER: node.leader_url} if node.leader_url else {})}
                return self._json(503, {"error": 503, "reason": f"standby: the leader is {node.leader_url}"}, headers)
            if path == "/auth/token":
                if not (auth or "").startswith("Basic "):
                    return self._json(401, {"error": 401, "reason": "no credentials"})
                return self._json(200, {"access_token": node.token, "expires_in": 900})
            if auth not in {f"Bearer {t}" for t in node.accepts}:
                return self._json(401, {"error": 401, "reason": "token not valid here"})
            return self._json(200, {"response": {"node": node.name}})

        def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def nodes() -> Iterator[tuple[Node, Node]]:
    a, b = Node("a"), Node("b")
    yield a, b
    a.stop()
    b.stop()


def standby_of(node: Node, leader: Node | None) -> None:
    node.role, node.leader_url = "standby", leader.url if leader else None


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_port
    server.server_close()
    return f"http://127.0.0.1:{port}/"


def fetcher(*urls: str) -> AuthenticatedFetcher:
    return AuthenticatedFetcher.for_scheduler(list(urls), CREDENTIALS, None, 5)


def rpc(fetch: AuthenticatedFetcher, base: str, method: str = "ping") -> dict:
    return json.loads(fetch.fetch(f"{base}api/{method}", {"data": "{}"}, 5))["response"]


# ---- client.conf -------------------------------------------------------------------------------

def conf(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "client.conf"
    path.write_text(f"[client]\nretry_wait = 1\nscheduler_url = {value}\n")
    return path


def test_one_url_reads_as_before_and_several_in_order(tmp_path: Path) -> None:
    one = load_client_settings(conf(tmp_path, "https://sched.example.com:8082"), {})
    assert one.scheduler_url == "https://sched.example.com:8082/"
    assert one.scheduler_urls == ("https://sched.example.com:8082/",)
    assert load_client_settings(conf(tmp_path, "http://127.0.0.1:1/"), {}).scheduler_url == "http://127.0.0.1:1/"
    several = "https://node-b.example.com:8082/,https://node-a.example.com:8082 ,  https://vip.example.com:8082/"
    both = load_client_settings(conf(tmp_path, several), {})
    assert both.scheduler_urls == ("https://node-b.example.com:8082/", "https://node-a.example.com:8082/",
                                   "https://vip.example.com:8082/")
    assert both.scheduler_url == "https://node-b.example.com:8082/"
    spaced = load_client_settings(conf(tmp_path, "https://x:1/   https://y:2/"), {})
    assert spaced.scheduler_urls == ("https://x:1/", "https://y:2/")
    # The command line takes the same list.
    given = load_client_settings(conf(tmp_path, "https://x:1/"), {"scheduler_url": "https://p:1/,https://q:2/"})
    assert given.scheduler_urls == ("https://p:1/", "https://q:2/")


@pytest.mark.parametrize(("value", "said"), [
    ("https://a:1/, ftp://b:2/", "URL 2 of 2: expected https://HOST:PORT/, got 'ftp://b:2/'"),
    ("https://a:1/ http://example.com/", "URL 2 of 2: plain http:// is only allowed to a loopback address, "
                                        "not example.com"),
    ("https://etl:secret@a:1/,https://b:2/", "URL 1 of 2: credentials do not belong in the URL"),
    ("https://a:1/, https://a:1", "https://a:1/ is given twice"),
    (",", "expected https://HOST:PORT/"),
])
def test_a_bad_url_among_several_is_named_with_file_and_line(tmp_path: Path, value: str, said: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_client_settings(conf(tmp_path, value), {})
    (issue,) = refused.value.issues
    assert f"{tmp_path / 'client.conf'}:3" in str(issue) and "scheduler_url" in str(issue)
    assert said in str(issue) and "secret" not in str(issue)


def test_a_bad_url_on_the_command_line_is_named_as_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_client_settings(conf(tmp_path, "https://a:1/"), {"scheduler_url": "https://a:1/ gopher://b/"})
    (issue,) = refused.value.issues
    assert str(issue).startswith("--scheduler-url: URL 2 of 2: expected https://HOST:PORT/, got 'gopher://b/'")


def test_urls_compare_as_places() -> None:
    assert same_url("HTTPS://Node-A.example.com/", "https://node-a.example.com:443")
    assert same_url("http://127.0.0.1:80", "http://127.0.0.1/")
    assert not same_url("https://a:8082/", "https://a:8083/")
    assert not same_url("https://a/", "http://a/")
    assert not same_url("https://a:port/", "https://a/")


# ---- following the leader ----------------------------------------------------------------------

def test_one_url_and_a_lone_scheduler_make_one_attempt_each(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    fetch = fetcher(a.url)
    assert rpc(fetch, a.url) == {"node": "a"} and rpc(fetch, a.url) == {"node": "a"}
    assert a.paths() == ["/auth/token", "/api/ping", "/api/ping"]
    # A 503 without a leader is luigi's to retry, as before: one attempt, the answer as it came.
    standby_of(a, None)
    started = time.monotonic()
    with pytest.raises(requests.HTTPError, match="503"):
        rpc(fetch, a.url)
    assert a.paths()[3:] == ["/api/ping"] and time.monotonic() - started < 1
    down = closed_port_url()
    with pytest.raises(requests.ConnectionError):
        rpc(fetcher(down), down)


def test_a_standby_names_the_leader_and_the_client_follows_at_once(nodes: tuple[Node, Node],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    a, b = nodes
    standby_of(a, b)
    fetch = fetcher(a.url, b.url)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        # luigi's URLs start with the first configured one: it is the path that goes to the leader.
        assert rpc(fetch, a.url) == {"node": "b"}
        assert rpc(fetch, a.url, "get_work") == {"node": "b"}
    assert time.monotonic() - started < 1  # no pause: the standby said who leads
    # The token request went to the standby first, then to the leader; the RPCs to the leader only.
    assert a.paths() == ["/auth/token"]
    assert b.paths() == ["/auth/token", "/api/ping", "/api/get_work"]
    assert fetch.leader.current == b.url
    switches = [r for r in caplog.records if r.name == LOGGER]
    assert [(r.levelname, r.getMessage()) for r in switches] == [("INFO", f"scheduler leader is now {b.url}")]


def test_a_leader_not_configured_is_never_sent_credentials(nodes: tuple[Node, Node],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    a, stranger = nodes
    standby_of(a, stranger)
    fetch = fetcher(a.url)
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(requests.HTTPError, match="503"):
        rpc(fetch, a.url)
    with pytest.raises(requests.HTTPError, match="503"):
        rpc(fetch, a.url)
    assert stranger.seen == []
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1  # once, however often it says so
    assert f"names {stranger.url} as its leader, which is not one of the configured scheduler URLs" in warnings[0]


def test_an_unreachable_node_or_a_standby_knowing_no_leader_sends_the_client_to_the_next(
        nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    down = closed_port_url()
    fetch = fetcher(down, a.url)
    assert rpc(fetch, down) == {"node": "a"}
    assert fetch.leader.current == a.url
    # The leader it found goes away; the next configured URL (wrapping round) is the new one.
    standby_of(a, None)
    fetch_b = fetcher(a.url, b.url)
    assert rpc(fetch_b, a.url) == {"node": "b"}
    assert a.paths()[-1] == "/auth/token" and fetch_b.leader.current == b.url


def test_no_leader_anywhere_ends_after_a_few_quick_attempts(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    standby_of(a, b)
    standby_of(b, a)  # a failover seen half-way: each names the other
    leader = Leader([a.url, b.url], pause=0.2, quick_retries=3)
    started = time.monotonic()
    resp = leader.call(lambda url: requests.get(url, timeout=5), a.url + "api/ping")
    elapsed = time.monotonic() - started
    assert resp.status_code == 503
    assert len(a.seen) + len(b.seen) == 2 + 3  # one per URL, then the quick retries
    assert 3 * 0.2 <= elapsed < 3  # paused before each retry of a URL asked already
    assert leader.current == a.url  # nobody answered as leader


def test_a_promoting_leader_is_asked_again_shortly(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    standby_of(a, b)
    standby_of(b, b)  # names itself: promoting, not serving yet
    threading.Timer(0.3, lambda: setattr(b, "role", "leader")).start()
    fetch = fetcher(a.url, b.url)
    assert rpc(fetch, a.url) == {"node": "b"}


def test_a_token_of_the_other_node_is_replaced_once(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    fetch = fetcher(a.url, b.url)
    assert rpc(fetch, a.url) == {"node": "a"}
    standby_of(a, b)  # failover: b leads, and does not verify a's tokens
    assert rpc(fetch, a.url) == {"node": "b"}
    assert [(p, auth) for _, p, auth in b.seen] == [
        ("/api/ping", f"Bearer {a.token}"), ("/auth/token", b.seen[1][2]), ("/api/ping", f"Bearer {b.token}")]
    # Keys shared by both nodes: the token goes on verifying, nothing is fetched again.
    a.role = "leader"
    a.accepts.add(b.token)
    standby_of(b, a)
    assert rpc(fetch, b.url) == {"node": "a"}
    assert a.paths()[-1] == "/api/ping" and a.paths().count("/auth/token") == 1


def test_luigis_client_follows_within_one_attempt(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    standby_of(a, b)
    # One attempt, so luigi's own retry (and its wait) never happens: following is the fetcher's.
    client = AuthenticatedRemoteScheduler([a.url, b.url], CREDENTIALS, None, 5, retry_attempts=1, retry_wait=300)
    assert client.ping(worker="w1") == {"node": "b"}
    assert client._appliance_rpc("approvals_list", {}) == {"node": "b"}
    assert b.paths()[-2:] == ["/api/ping", "/api/approvals_list"]
    # Every node down: luigi's error, once every URL was asked.
    down = [closed_port_url(), closed_port_url()]
    nowhere = AuthenticatedRemoteScheduler(down, CREDENTIALS, None, 5, retry_attempts=1, retry_wait=0)
    with pytest.raises(luigi.rpc.RPCError) as failed:
        nowhere.ping(worker="w1")
    assert isinstance(failed.value.sub_exception, requests.ConnectionError)
    assert str(down[1]) in str(failed.value.sub_exception)  # the last one asked
