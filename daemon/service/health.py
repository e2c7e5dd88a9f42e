"""Backoff, and the daemon's health: the one problem that needs the operator right now.

While a problem that needs a person lasts (disk full, permissions, revoked credentials), jobs
wait instead of failing; each wait is longer than the last (``backoff``), up to a cap, and
the first step that succeeds makes the daemon healthy again and resets the waits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from daemon.errors import EnvironmentProblem


def backoff(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before attempt ``attempt + 1``: ``base_s`` doubling, at most
    ``max_s`` (the one backoff of minutesd: job retries, upload retries, operator waits)."""
    return min(base_s * 2 ** max(0, attempt - 1), max_s)


class Health:
    def __init__(self, log, first_wait_s: float, max_wait_s: float,
                 publish: Callable[[str | None], None] | None = None):
        self.log = log
        self.first_wait_s = first_wait_s
        self.max_wait_s = max_wait_s
        self.publish = publish  # e.g. into the queue's heartbeat row, for `status`
        self.problem: str | None = None
        # For an environment problem: {"kind", "path", "fix"} (status says "blocked" on it)
        self.detail: dict[str, Any] | None = None
        self._waits = 0

    def wait_s(self) -> float:
        """How long to wait now (without counting a wait)."""
        return backoff(max(1, self._waits), self.first_wait_s, self.max_wait_s)

    def next_wait_s(self) -> float:
        """A job must wait for the operator: how long, each time longer."""
        self._waits += 1
        return self.wait_s()

    def set(self, problem: str | BaseException | None) -> None:
        detail = ({"kind": problem.kind, "path": problem.path, "fix": problem.fix}
                  if isinstance(problem, EnvironmentProblem) else None)
        text = None if problem is None else str(problem)
        if text == self.problem:
            return
        self.problem, self.detail = text, detail
        if problem is None:
            self._waits = 0
            self.log.info("healthy again")
        if self.publish is not None:
            with contextlib.suppress(Exception):  # the state disk may be the problem itself
                self.publish(text)
