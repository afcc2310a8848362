"""``[approvals] notify_command``: a program run for each new request, off the scheduler's loop.

The request goes to its standard input as one JSON object (``as_dict`` of the request); the
program's exit status and output are logged, never waited for by the scheduler. No shell, no secrets in its arguments: a
chat webhook URL belongs in a file the program reads (docs/approvals.md has an example).
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

from luigi_appliance.approvals.book import ApprovalRequest

log = logging.getLogger(__name__)
# Notifications waiting for the program at most: a burst of requests behind a slow program is
# dropped past this (each drop logged; the audit trail and the page still have the request).
MAX_QUEUED = 100


class NotifyCommand:
    """Runs ``argv`` once per new request, one at a time, in a thread of its own."""

    def __init__(self, argv: tuple[str, ...], timeout: float):
        self.argv = argv
        self.timeout = timeout
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="approval-notify")
        self._slots = threading.Semaphore(MAX_QUEUED)

    def request_opened(self, request: ApprovalRequest) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("Approval notification for %s dropped: %d notifications already wait for %s",
                        request.id, MAX_QUEUED, self.argv[0])
            return
        data = json.dumps(request.as_dict(), sort_keys=True).encode()
        self._runner.submit(self._run, request.id, data)

    def _run(self, request_id: str, payload: bytes) -> None:
        try:
            self._notify(request_id, payload)
        finally:
            self._slots.release()

    def _notify(self, request_id: str, payload: bytes) -> None:
        try:
            done = subprocess.run(self.argv, input=payload, capture_output=True, timeout=self.timeout,
                                  check=False, env={"PATH": "/usr/bin:/bin", "LUIGI_APPLIANCE_REQUEST": request_id})
        except subprocess.TimeoutExpired:
            log.warning("Approval notification for %s: %s did not finish within %.0fs and was killed",
                        request_id, self.argv[0], self.timeout)
            return
        except OSError as exc:
            log.warning("Approval notification for %s: cannot run %s: %s", request_id, self.argv[0], exc.strerror)
            return
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            log.warning("Approval notification for %s: %s exited with %d: %s", request_id, self.argv[0],
                        done.returncode, tail[0][:500])
        else:
            log.info("Approval notification for %s sent by %s", request_id, self.argv[0])

    def close(self) -> None:
        """Wait for the notifications already started (at shutdown)."""
        self._runner.shutdown(wait=True)
