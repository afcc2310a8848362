"""A stand-in for journald's socket: a real AF_UNIX datagram socket the test binds, and a parser
of what arrives, written from journald's protocol (systemd's docs/JOURNAL_NATIVE_PROTOCOL.md),
not from the code under test."""

from __future__ import annotations

import array
import fcntl
import os
import shutil
import socket
import struct
import tempfile
from pathlib import Path

SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def parse(body: bytes) -> dict[str, bytes]:
    """One entry's fields: ``KEY=value\\n``, or ``KEY\\n`` + u64 LE length + value + ``\\n``."""
    fields: dict[str, bytes] = {}
    at = 0
    while at < len(body):
        end = body.index(b"\n", at)
        line = body[at:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            at = end + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", body, end + 1)
            start = end + 1 + 8
            value = body[start:start + size]
            assert body[start + size:start + size + 1] == b"\n", "a binary value ends with a newline"
            at = start + size + 1
        assert key and key == key.upper() and not key.startswith(b"_"), key
        assert key.decode() not in fields or key == b"MESSAGE", f"{key!r} twice"
        fields[key.decode()] = value
    return fields


class FakeJournal:
    """Bound at a short path (sun_path holds 108 bytes; pytest's tmp_path can be longer)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="jn-", dir="/tmp"))
        self.path = str(self.dir / "socket")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(10)
        self.memfds = 0  # entries that came as a sealed memfd

    def receive(self) -> dict[str, bytes]:
        """The next entry, read from the memfd when it came as one (checked sealed)."""
        fds = array.array("i")
        data, ancdata, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not fds:
            return parse(data)
        assert data == b"" and len(fds) == 1, "journald takes a memfd only alone"
        fd = fds[0]
        try:
            assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & SEALS == SEALS, "journald wants it sealed"
            size = os.fstat(fd).st_size
            self.memfds += 1
            return parse(os.pread(fd, size, 0))
        finally:
            os.close(fd)

    def receive_all(self, timeout: float = 0.5) -> list[dict[str, bytes]]:
        """Every entry until none arrives for ``timeout`` seconds."""
        entries = []
        self.sock.settimeout(timeout)
        try:
            while True:
                entries.append(self.receive())
        except TimeoutError:
            return entries
        finally:
            self.sock.settimeout(10)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
