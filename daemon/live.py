"""What the daemon is doing right now, for watchers in the same process (the review page).

A small in-process publish/subscribe: the step runner says which job a worker is on and at
which step, the steps' progress callbacks say how far they are, and the minutes writer's
token sink hands over the LLM's text as it is written. Watchers read events after a sequence
number (``since``), waiting up to a timeout for new ones (the page turns them into
server-sent events). Nothing is kept on disk: a watcher that comes late gets what the
bounded buffer still holds, and the queue (SQLite) stays the record of what happened.

A ``minutesd web`` in its own process has no such hub; it polls the queue instead.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

MAX_EVENTS = 2000


class Live:
    def __init__(self, max_events: int = MAX_EVENTS):
        self._cond = threading.Condition()
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._seq = 0
        self._local = threading.local()
        self._writing: tuple[str, str] | None = None  # (sha, name) of the job writing minutes

    # ------------------------------------------------------------------ publishing

    def publish(self, kind: str, **data: Any) -> int:
        with self._cond:
            self._seq += 1
            self._events.append({"seq": self._seq, "at": time.time(), "kind": kind, **data})
            self._cond.notify_all()
            return self._seq

    def begin(self, sha: str, name: str, step: str, verb: str) -> None:
        """A worker (this thread) starts ``step`` of the job ``sha``."""
        self._local.job = (sha, name)
        if step == "minutes_written":
            self._writing = (sha, name)
        self.publish("step", sha=sha, name=name, step=step, verb=verb)

    def end(self, sha: str, step: str, ok: bool, error: str | None = None) -> None:
        if self._writing and self._writing[0] == sha:
            self._writing = None
        self.publish("step_end", sha=sha, step=step, ok=ok, error=error)

    def _job(self) -> tuple[str, str] | None:
        return getattr(self._local, "job", None) or self._writing

    def progress(self, stage: str, done_s: float, total_s: float) -> None:
        """A :data:`daemon.types.Progress` callback for the job this thread works on."""
        job = self._job()
        pct = 100.0 * done_s / total_s if total_s > 0 else 100.0
        self.publish("progress", sha=job[0] if job else None, stage=stage,
                     percent=round(min(100.0, pct), 1))

    def token(self, piece: str) -> None:
        """A :data:`daemon.types.TokenSink`: the LLM's text as it is written. The streamer
        may call from its own thread, so the job is the one writing minutes."""
        job = self._writing or self._job()
        self.publish("token", sha=job[0] if job else None, text=piece)

    # ------------------------------------------------------------------ watching

    def since(self, seq: int, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Events after ``seq`` (waiting up to ``timeout`` seconds for one)."""
        with self._cond:
            if self._seq <= seq and timeout > 0:
                self._cond.wait(timeout)
            return [e for e in self._events if e["seq"] > seq]

    @property
    def seq(self) -> int:
        return self._seq
