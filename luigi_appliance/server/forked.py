"""A job run in a forked child of the scheduler, for work that must see one instant of the
state but must not stop the IOLoop while it runs (pickling 100k tasks takes seconds).

The child is a copy-on-write image of the process at the fork: it sees the state exactly as it
was, whatever the loop does meanwhile. It runs the job and leaves with os._exit (no atexit
handlers, no flushing of buffers it shares with the parent); anything the job raises comes back to
the parent as one line through a pipe. The child touches the reference count of every object it
pickles, so its pages get copied: while it runs, memory use can approach twice the scheduler's.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

_MAX_MESSAGE = 4096


@dataclass(frozen=True)
class Child:
    """A forked child running a job: its pid and the read end of its error pipe."""

    pid: int
    errors: int


def fork_job(job: Callable[[], None]) -> Child:
    """Start ``job`` in a forked child (OSError when the fork itself fails)."""
    read_end, write_end = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12 warns on any fork of a threaded process: the child here runs only the
            # job (pickling and file writes) and never a lock another thread may have held.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:  # the child
        os.close(read_end)
        gc.disable()  # a collection would touch (and copy) every tracked object for nothing
        code = 0
        try:
            job()
        except BaseException as exc:  # whatever it was, the parent reports it
            os.write(write_end, (str(exc) or type(exc).__name__).encode()[:_MAX_MESSAGE])
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    return Child(pid, read_end)


def wait_job(child: Child) -> str | None:
    """Block until the child ends (run it off the loop); None if the job succeeded, else why not."""
    chunks = []
    try:
        while chunk := os.read(child.errors, _MAX_MESSAGE):
            chunks.append(chunk)
    finally:
        os.close(child.errors)
    _, status = os.waitpid(child.pid, 0)
    message = b"".join(chunks).decode(errors="replace")
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return None
    if message:
        return message
    if os.WIFSIGNALED(status):
        return f"the child process was killed by signal {os.WTERMSIG(status)}"
    return f"the child process exited with status {os.WEXITSTATUS(status)}"
