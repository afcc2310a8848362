"""journald's native protocol: one datagram per entry to its socket, no python-systemd.

The body is ``KEY=value\\n`` per field, or, for a value holding a newline (or any bytes), ``KEY\\n``,
the value's length as a little-endian u64, the value and ``\\n``. A body too big for a datagram
(sendto fails with EMSGSIZE above the socket's send buffer, ~212 kB by default) goes in a sealed
memfd passed with SCM_RIGHTS, which journald reads as the entry (systemd's journal-send.c does
the same). Under a unit with ``LogNamespace=`` the default path is the namespace's socket: systemd
mounts it there, so nothing here knows about namespaces.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import struct
from collections.abc import Iterable

SOCKET = "/run/systemd/journal/socket"
# Where tests (and a host whose journald listens elsewhere) point the scheduler instead.
SOCKET_ENV = "LUIGI_APPLIANCE_JOURNAL_SOCKET"

# journald drops a field whose name is not this: uppercase letters, digits, underscores, not
# starting with a digit, at most 64 characters; a leading underscore is for its trusted fields.
_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}\Z")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL

Field = tuple[str, "str | bytes"]


def socket_path() -> str:
    """The journal socket this process sends to: $LUIGI_APPLIANCE_JOURNAL_SOCKET, else journald's."""
    return os.environ.get(SOCKET_ENV) or SOCKET


def valid_name(name: str) -> bool:
    """Whether journald keeps a field of this name (user fields only: no leading underscore)."""
    return _NAME.match(name) is not None


def _key(name: str) -> bytes:
    key = _KEYS.get(name)
    if key is None:
        if not valid_name(name):
            raise ValueError(f"not a journal field name: {name!r}")
        key = name.encode("ascii")
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[name] = key
    return key


# Names already checked: the same dozen or so in every entry, checked once each.
_KEYS: dict[str, bytes] = {}
_MAX_KEYS = 256


def encode(fields: Iterable[Field]) -> bytes:
    """The datagram body of one entry; ValueError for a field name journald would drop."""
    text: list[str] = []  # the KEY=value lines, encoded at once (the common case, and the fast one)
    binary: list[bytes] = []
    for name, value in fields:
        if name not in _KEYS:
            _key(name)
        if isinstance(value, str) and "\n" not in value:
            text.append(f"{name}={value}\n")
            continue
        data = value.encode("utf-8", "replace") if isinstance(value, str) else value
        if b"\n" in data:
            binary.append(_key(name) + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            binary.append(_key(name) + b"=" + data + b"\n")
    body = "".join(text).encode("utf-8", "replace")
    return body + b"".join(binary) if binary else body


class JournalSocket:
    """A datagram socket to journald; ``send`` raises OSError when the entry did not get there."""

    def __init__(self, path: str | None = None):
        self.path = path or socket_path()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # Unconnected (sendto per entry, as sd_journal_send): a restarted journald is found again.

    def accepts(self) -> bool:
        """Whether something listens for datagrams at the path (connect(2) on a throwaway socket:
        ENOENT without a socket file, ECONNREFUSED without a reader, EPROTOTYPE for a stream)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as probe:
            try:
                probe.connect(self.path)
            except OSError:
                return False
        return True

    def send(self, body: bytes) -> None:
        """Send one entry, through a sealed memfd when it is too big for a datagram."""
        try:
            self._sock.sendto(body, self.path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(body)

    def _send_memfd(self, body: bytes) -> None:
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            # journald maps a sealed memfd as it is; an unsealed one could change under it.
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            # No payload beside the descriptor: that is how journald tells the two kinds apart.
            self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._sock.close()
