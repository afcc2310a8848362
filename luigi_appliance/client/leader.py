"""Following the leader of an HA scheduler pair among the URLs client.conf names (issue 19).

A standby answers every RPC with 503 and names the leader's advertised URL in the
``X-Luigi-Appliance-Leader`` header (docs/ha.md). luigi's own client would wait its fixed
``rpc-retry-wait`` (30 s) and ask the same node again; ``Leader.call`` instead asks the named
leader at once, and after a connection error, a timeout or a 503 that names nobody it asks the
next configured URL. Only when every configured URL has been asked in vain does the answer (or
the error) go back to the caller, whose own retries (client.conf's retry_wait) then apply.

A leader named by the header is followed only if it is one of the configured URLs: the request
carries the worker's credentials or token, which must never go to a host the configuration does
not name (a misconfigured or hostile node could otherwise collect them).

With one URL and a scheduler without [ha] (no header, ever), ``call`` makes exactly one attempt:
the behaviour of a single URL is unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import requests

from luigi_appliance.ha.status import LEADER_HEADER

# Under luigi's own logger: ``run`` prints the switch with luigi's lines, at its --log-level
# (luigi configures only that logger; ours would show warnings alone).
log = logging.getLogger("luigi-interface.appliance.leader")

STANDBY_STATUS = 503
# Attempts of one call beyond one per configured URL: a leader still promoting, or a failover
# seen half-way (each node naming the other), gets these, each after PAUSE.
QUICK_RETRIES = 3
# Before asking a URL this call asked already: long enough for a promotion to finish, far below
# luigi's 30 s.
PAUSE = 0.5

Attempt = Callable[[str], requests.Response]


def same_url(a: str, b: str) -> bool:
    """Whether two scheduler URLs name the same place (case of scheme and host, default port
    and trailing slash aside)."""
    return _canonical(a) == _canonical(b)


def _canonical(url: str) -> tuple[str, str, int | None, str] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower())
    except ValueError:  # a port that is not a number
        return None
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return parts.scheme.lower(), (parts.hostname or "").lower(), port, path


class Leader:
    """The configured scheduler URLs (each ending in /) and which of them leads now, as last
    seen; shared by the threads of one client (luigi's worker loop, its keep-alive thread, the
    add_tasks sender)."""

    def __init__(self, urls: Sequence[str], pause: float = PAUSE, quick_retries: int = QUICK_RETRIES):
        if not urls:
            raise ValueError("no scheduler URL")
        self.urls = tuple(u if u.endswith("/") else u + "/" for u in urls)
        self.pause = pause
        self.quick_retries = quick_retries
        self._current = self.urls[0]
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    @property
    def current(self) -> str:
        """The URL asked first: the leader as last seen (at first, the first configured)."""
        return self._current

    def split(self, full_url: str) -> tuple[str, str] | None:
        """(configured base, rest) of a URL under one of the configured URLs, else None."""
        for base in self.urls:
            if full_url.startswith(base):
                return base, full_url[len(base):]
        return None

    def configured(self, url: str) -> str | None:
        """The configured URL that ``url`` names, if any."""
        return next((base for base in self.urls if same_url(base, url)), None)

    def call(self, attempt: Attempt, full_url: str) -> requests.Response:
        """``attempt``'s answer for ``full_url``, asked of the leader: ``full_url`` is taken as a
        path under whichever configured URL it starts with and asked of the current leader, then
        of the leader a standby names, then of the other configured URLs (see the module). A URL
        under none of them is asked as it is, once. Returns the last answer, or raises the last
        error, when no node leads."""
        where = self.split(full_url)
        if where is None:
            return attempt(full_url)
        path = where[1]
        base = self.current
        asked: set[str] = set()
        last: requests.Response | requests.RequestException | None = None
        for _ in range(len(self.urls) + self.quick_retries):
            if base in asked:
                time.sleep(self.pause)
            asked.add(base)
            try:
                resp = attempt(base + path)
            except (requests.ConnectionError, requests.Timeout) as exc:
                log.debug("scheduler at %s unreachable: %s", base, exc)
                last, nxt = exc, self._unasked(asked, base)
            except requests.HTTPError as exc:  # the token request's answer (client/remote.py)
                if exc.response is None or exc.response.status_code != STANDBY_STATUS:
                    raise
                last, nxt = exc, self._after_standby(exc.response, base, asked)
            else:
                if resp.status_code != STANDBY_STATUS:
                    self._led_by(base)
                    return resp
                last, nxt = resp, self._after_standby(resp, base, asked)
            if nxt is None:
                break
            base = nxt
        if isinstance(last, requests.RequestException):
            raise last
        assert last is not None
        return last

    def _after_standby(self, resp: requests.Response, base: str, asked: set[str]) -> str | None:
        """Whom to ask after ``base`` answered 503: the leader it names (if configured), else the
        next configured URL not asked yet; None when there is nobody left."""
        named = resp.headers.get(LEADER_HEADER)
        if named:
            leader = self.configured(named)
            if leader is not None:
                return leader
            self._warn_unconfigured(base, named)
        return self._unasked(asked, base)

    def _unasked(self, asked: set[str], base: str) -> str | None:
        """The first configured URL after ``base`` (in configuration order, wrapping) not asked yet."""
        at = self.urls.index(base)
        rotated = self.urls[at + 1:] + self.urls[:at]
        return next((url for url in rotated if url not in asked), None)

    def _led_by(self, base: str) -> None:
        with self._lock:
            if base == self._current:
                return
            self._current = base
        log.info("scheduler leader is now %s", base)

    def _warn_unconfigured(self, base: str, named: str) -> None:
        with self._lock:
            if named in self._warned:
                return
            self._warned.add(named)
        log.warning("the scheduler at %s names %s as its leader, which is not one of the configured scheduler "
                    "URLs (%s): not following it, since the request carries credentials; add it to client.conf's "
                    "scheduler_url if it is a node of this scheduler", base, named, ", ".join(self.urls))
