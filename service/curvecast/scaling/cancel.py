"""Cooperative cancellation for long CPU work running in a worker thread.

A Python thread cannot be interrupted from outside, so the work checks a token between small steps
(every objective evaluation of a fit, every grid chunk, every bootstrap replicate) and stops by raising.
Whoever stops waiting for the answer cancels the token: the caller's deadline (checked by the token
itself, so no timer is needed), a caller that went away, or a server shutting down.
"""

from __future__ import annotations

import threading
import time

from ..domain.errors import DeadlineExceeded

CALLER_GONE = "caller_gone"
SHUTDOWN = "shutdown"


class Cancelled(RuntimeError):
    """The work was stopped because nobody waits for its answer any more (``reason``: CALLER_GONE or
    SHUTDOWN; a passed deadline raises ``DeadlineExceeded`` instead)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class CancelToken:
    """Set once, from any thread; ``check()`` raises in the worker on its next step."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline  # time.monotonic() seconds, or None
        self.started = threading.Event()  # the worker made its first check: the work is running
        self.checks = 0  # steps the worker has passed (to tell how much ran after a cancel)
        self._reason: str | None = None
        self._message = ""

    def cancel(self, reason: str, message: str) -> None:
        if self._reason is None:  # the first reason wins
            self._message, self._reason = message, reason

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def cancelled(self) -> bool:
        return self._reason is not None or (self.deadline is not None and time.monotonic() >= self.deadline)

    def check(self) -> None:
        """Raise if the work should stop; called by the worker between steps (about a microsecond)."""
        self.checks += 1
        self.started.set()
        if self._reason is not None:
            raise Cancelled(self._message, self._reason)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded("deadline passed during the fit; stopped")
