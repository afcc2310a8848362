"""keepalived moves the virtual IP to the node whose /healthz/leader says 200, with the shipped files.

The shipped example configuration (etc/keepalived/luigi-appliance.conf) and track script
(etc/keepalived/check-leader) run in real keepalived daemons, in network namespaces as
tests/ha/RESEARCH.md §5 measured: two node namespaces joined by a bridge in a third (the switch),
VRRP multicast over the bridge. The configuration is the example with only its per-node lines
changed (node name, interface, priority, virtual IP, the script's URL), and the track script is
the repository's file, run by keepalived as it is.

In each node namespace a small HTTP server stands in for that node's scheduler: it answers GET
/healthz/leader with 200 or 503, as the test tells it, on the namespace's loopback (the track
script runs in keepalived's namespace). The real `luigi-appliance serve` pair is being wired in
parallel; the stand-ins may be replaced by it later, the keepalived side staying as it is.

The keepalived tests need root (CAP_NET_ADMIN: namespaces, links, addresses; CAP_NET_RAW: VRRP's
raw socket) and are skipped without; keepalived itself is required (CI installs it): its absence
is a failure. The track script's own test (HTTPS with the scheduler's CA) needs neither.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import REPO, free_port

EXAMPLE = REPO / "etc/keepalived/luigi-appliance.conf"
CHECK_LEADER = REPO / "etc/keepalived/check-leader"
KEEPALIVED = shutil.which("keepalived", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
SUBNET = "10.99.0"
VIP = f"{SUBNET}.100"
PORT = 8082
# VRRP settles within 3 advertisement intervals plus the skew (advert_int 1): the first election
# after start, and a node leaving FAULT, wait that long for a master before taking over.
SETTLE = 10.0
MOVE_BOUND = 5.0

# The stand-in scheduler: GET /healthz/leader answers the status in the file given as argument.
STAND_IN = r"""
import http.server, json, sys

status_file = sys.argv[1]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = int(open(status_file).read()) if self.path == "/healthz/leader" else 404
        body = json.dumps({"role": "leader" if code == 200 else "standby"}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler)
print("ready", flush=True)
server.serve_forever()
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _no_net_admin() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "keepalived in network namespaces needs root (CAP_NET_ADMIN, CAP_NET_RAW)"
    probe = f"lak-probe-{os.getpid()}"
    proc = ip("netns", "add", probe, check=False)
    if proc.returncode != 0:
        return f"cannot create a network namespace (no CAP_NET_ADMIN?): {proc.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


_REASON = _no_net_admin()
needs_net_admin = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def render_example(text: str, *, router_id: str, interface: str, priority: int, vip: str, script: str) -> str:
    """The shipped example with its per-node lines set; each must be there exactly once."""
    replacements = [
        (r"^(\s*router_id )sched1$", rf"\g<1>{router_id}"),
        (r"^(\s*script )\"/usr/libexec/luigi-appliance/check-leader [^\"]+\"$", rf'\g<1>"{script}"'),
        (r"^(\s*interface )eth0$", rf"\g<1>{interface}"),
        (r"^(\s*priority )100$", rf"\g<1>{priority}"),
        (r"^(\s*)192\.0\.2\.10/24 dev eth0$", rf"\g<1>{vip}/24 dev {interface}"),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"{EXAMPLE}: expected one line matching {pattern!r}, found {count}"
    return text


@dataclass
class Node:
    """One scheduler node: its namespace, its stand-in server, its keepalived."""

    name: str
    netns: str
    interface: str
    address: str
    priority: int
    workdir: Path
    status_file: Path = field(init=False)
    server: subprocess.Popen | None = None
    keepalived: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.status_file = self.workdir / f"{self.name}.status"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}-keepalived.log"

    def answer(self, code: int) -> None:
        """What this node's stand-in scheduler answers from now on (200 leader, 503 standby)."""
        self.status_file.write_text(str(code))

    def holds_vip(self) -> bool:
        out = ip("-n", self.netns, "-o", "-4", "addr", "show", "dev", self.interface).stdout
        return f" {VIP}/" in out

    def config(self) -> Path:
        url = f"http://127.0.0.1:{PORT}/healthz/leader"
        conf = self.workdir / f"{self.name}.conf"
        conf.write_text(render_example(EXAMPLE.read_text(), router_id=self.name, interface=self.interface,
                                       priority=self.priority, vip=VIP, script=f"{CHECK_LEADER} {url}"))
        return conf

    def start_server(self) -> None:
        self.server = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, "-c", STAND_IN,
                                        str(self.status_file), str(PORT)],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.server.stdout is not None
        line = self.server.stdout.readline()
        assert line.strip() == "ready", f"{self.name}'s stand-in server did not start: {line}"

    def start_keepalived(self) -> None:
        assert KEEPALIVED is not None
        w = self.workdir
        # -n: stay in the foreground (a child of this test, reaped by it); distinct pid files for
        # each instance on one host; only the VRRP subsystem.
        self.keepalived = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, KEEPALIVED, "-n", "-l", "-D", "--vrrp", "-f", str(self.config()),
             "-p", str(w / f"{self.name}.pid"), "-r", str(w / f"{self.name}-vrrp.pid")],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def stop(self) -> None:
        for proc in (self.keepalived, self.server):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)  # keepalived's parent stops its VRRP child, then exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.server is not None and self.server.stdout is not None:
            self.server.stdout.close()


@dataclass
class Pair:
    a: Node
    b: Node
    switch: str

    @property
    def nodes(self) -> tuple[Node, Node]:
        return self.a, self.b

    def holders(self) -> list[str]:
        return [n.name for n in self.nodes if n.holds_vip()]

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log.read_text(errors='replace')[-3000:]}" for n in self.nodes)

    def watch(self, until: str, timeout: float) -> tuple[float, list[tuple[float, list[str]]]]:
        """Sample the holders every 20 ms until only ``until`` holds the VIP, or the timeout.

        Returns the seconds it took and every sample (time, holders) for the assertions."""
        start = time.monotonic()
        samples: list[tuple[float, list[str]]] = []
        while (now := time.monotonic() - start) < timeout:
            holders = self.holders()
            samples.append((now, holders))
            if holders == [until]:
                return now, samples
            time.sleep(0.02)
        raise AssertionError(f"the VIP did not reach {until} within {timeout} s (last holders "
                             f"{samples[-1][1] if samples else '?'})\n{self.logs()}")

    def steady(self, holder: str, seconds: float) -> None:
        """``holder`` alone keeps the VIP for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            holders = self.holders()
            assert holders == [holder], f"VIP held by {holders}, expected only {holder}\n{self.logs()}"
            time.sleep(0.05)


@pytest.fixture
def pair(tmp_path) -> Iterator[Pair]:
    """Namespaces NAME-1, NAME-2 and the switch NAME-sw, a stand-in server in each node namespace,
    keepalived not started yet. Everything is stopped, reaped and deleted afterwards."""
    assert KEEPALIVED, "keepalived is not installed (apt-get install keepalived; .ci/run installs it)"
    base = f"lak{os.getpid()}"
    switch = f"{base}-sw"
    made: list[str] = []
    nodes: list[Node] = []
    try:
        ip("netns", "add", switch)
        made.append(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for i, priority in ((1, 100), (2, 90)):
            netns = f"{base}-{i}"
            ip("netns", "add", netns)
            made.append(netns)
            ip("-n", netns, "link", "set", "lo", "up")
            ip("link", "add", f"veth{i}", "netns", netns, "type", "veth", "peer", "name", f"sw{i}", "netns", switch)
            ip("-n", switch, "link", "set", f"sw{i}", "master", "br0")
            ip("-n", switch, "link", "set", f"sw{i}", "up")
            ip("-n", netns, "addr", "add", f"{SUBNET}.{i}/24", "dev", f"veth{i}")
            ip("-n", netns, "link", "set", f"veth{i}", "up")
            node = Node(f"node{i}", netns, f"veth{i}", f"{SUBNET}.{i}", priority, tmp_path)
            nodes.append(node)
            node.answer(503)
            node.start_server()
        yield Pair(nodes[0], nodes[1], switch)
    finally:
        for node in nodes:
            node.stop()
        for netns in reversed(made):
            ip("netns", "del", netns, check=False)


def _starts(pair: Pair, leader: Node) -> None:
    """Both keepalived daemons started while ``leader``'s scheduler says 200: it alone gets the VIP."""
    leader.answer(200)
    for node in pair.nodes:
        node.start_keepalived()
    _, samples = pair.watch(leader.name, SETTLE)
    assert all(holders in ([], [leader.name]) for _, holders in samples), samples
    pair.steady(leader.name, 2.0)


@needs_net_admin
def test_vip_on_the_node_that_answers_200_and_it_moves_when_the_other_becomes_leader(pair):
    a, b = pair.nodes
    _starts(pair, a)

    # The lease moves (the standby was told it leads while the old one steps down): within the
    # bound the VIP is on the new leader's node only, never on both at once, and the old holder
    # does not get it back.
    a.answer(503)
    b.answer(200)
    took, samples = pair.watch(b.name, MOVE_BOUND)
    assert not [s for s in samples if len(s[1]) > 1], f"the VIP was on both nodes: {samples}"
    pair.steady(b.name, 3.0)
    assert took < MOVE_BOUND
    print(f"VIP moved {took:.2f} s after the leader changed")


@needs_net_admin
def test_vip_leaves_a_dead_leader_and_reaches_the_node_that_takes_the_lease_later(pair):
    """The crash sequence: the leader stops answering, nobody leads for a while (the standby
    waits for the lease to expire), then the standby leads. The old node drops the VIP without
    waiting for the new one, and the new one gets it within the bound once it says 200."""
    a, b = pair.nodes
    _starts(pair, b)
    b.server.send_signal(signal.SIGKILL)  # the leader's process is gone: connection refused
    b.server.wait(timeout=10)
    start = time.monotonic()
    while b.holds_vip():
        assert time.monotonic() - start < MOVE_BOUND, f"the dead leader's node kept the VIP\n{pair.logs()}"
        time.sleep(0.02)
    assert not a.holds_vip(), "the VIP went to the standby before it led"
    time.sleep(1.0)  # the lease is still running out
    assert pair.holders() == []
    a.answer(200)
    took, samples = pair.watch(a.name, MOVE_BOUND)
    assert all(holders in ([], [a.name]) for _, holders in samples), samples
    assert took < MOVE_BOUND
    print(f"VIP on the new leader {took:.2f} s after it said 200")


@needs_net_admin
def test_shipped_example_passes_keepalived_config_test(tmp_path):
    """keepalived --config-test on the example as shipped, in a namespace with its eth0 (one end
    of a veth pair) and the track script at its packaged path's place; a broken copy fails."""
    assert KEEPALIVED, "keepalived is not installed (apt-get install keepalived; .ci/run installs it)"
    text = EXAMPLE.read_text().replace("/usr/libexec/luigi-appliance/check-leader", str(CHECK_LEADER))
    assert str(CHECK_LEADER) in text
    good, broken = tmp_path / "good.conf", tmp_path / "broken.conf"
    good.write_text(text)
    # A misspelt keyword: keepalived would ignore it and run with preemption.
    broken.write_text(text.replace("    nopreempt\n", "    nopreemt\n"))
    netns = f"lakt{os.getpid()}"
    ip("netns", "add", netns)
    try:
        ip("-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
        results = {}
        for conf in (good, broken):
            proc = subprocess.run(["ip", "netns", "exec", netns, KEEPALIVED, "--config-test", "-f", str(conf)],
                                  capture_output=True, text=True, timeout=60)
            results[conf.name] = proc
        ok = results["good.conf"]
        assert ok.returncode == 0, f"exit {ok.returncode}\n{ok.stdout}{ok.stderr}"
        assert results["broken.conf"].returncode != 0
    finally:
        ip("netns", "del", netns, check=False)


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for localhost/127.0.0.1 that is its own CA, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_check_leader_exits_0_only_on_200_over_https_with_the_ca(tmp_path):
    """The track script as keepalived runs it, against an HTTPS server: 0 for a 200 with the
    scheduler's CA; 1 for a 503, a certificate of another CA, a redirect or no server; 2 for
    wrong arguments."""
    cert, key = _self_signed(tmp_path, "scheduler")
    other_ca, _ = _self_signed(tmp_path, "other")
    answers = {"/healthz/leader": 200, "/standby/healthz/leader": 503, "/moved/healthz/leader": 302}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(answers.get(self.path, 404))
            if self.path.startswith("/moved"):
                self.send_header("Location", "/healthz/leader")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        def check(*args: object) -> subprocess.CompletedProcess:
            return subprocess.run([str(CHECK_LEADER), *map(str, args)], capture_output=True, text=True, timeout=30)

        base = f"https://localhost:{port}"
        ok = check(f"{base}/healthz/leader", cert)
        assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
        standby = check(f"{base}/standby/healthz/leader", cert)
        assert standby.returncode == 1 and "answered 503, not 200" in standby.stderr
        assert check(f"{base}/moved/healthz/leader", cert).returncode == 1
        assert check(f"{base}/healthz/leader", other_ca).returncode == 1  # not the scheduler's CA
        assert check(f"{base}/healthz/leader").returncode == 1  # a private CA is not in the system's store
        gone = check(f"https://localhost:{free_port()}/healthz/leader", cert)
        assert gone.returncode == 1 and "no answer from" in gone.stderr
        assert check().returncode == 2
        assert check("sched1:8082/healthz/leader").returncode == 2
        assert check(f"{base}/healthz/leader", tmp_path / "missing.pem").returncode == 2
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
