"""Progress of long work, as log lines (the CLI's stderr, the daemon's journal)."""

from __future__ import annotations

import time


class ProgressReporter:
    """A :data:`daemon.types.Progress` callback: a log line per stage at most every
    ``every_s`` seconds, and one when a stage finishes."""

    def __init__(self, log, every_s: float = 2.0):
        self.log = log
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._started = time.monotonic()

    def __call__(self, stage: str, done_s: float, total_s: float) -> None:
        now = time.monotonic()
        finished = total_s > 0 and done_s >= total_s
        if not finished and now - self._last.get(stage, 0.0) < self.every_s:
            return
        self._last[stage] = now
        pct = 100.0 * done_s / total_s if total_s > 0 else 100.0
        self.log.info(
            "progress", stage=stage, percent=round(pct, 1), audio_s=round(done_s, 1),
            total_s=round(total_s, 1), elapsed_s=round(now - self._started, 1),
        )


class TokenProgress:
    """A :data:`daemon.types.TokenSink`: streaming LLM tokens → a progress line every
    ``every_s`` seconds (count and tok/s)."""

    def __init__(self, log, every_s: float = 5.0):
        self.log, self.every_s = log, every_s
        self.pieces = 0
        self._t0 = self._last = time.monotonic()

    def __call__(self, piece: str) -> None:
        self.pieces += 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.log.info("progress", stage="minutes", pieces=self.pieces,
                          per_s=round(self.pieces / (now - self._t0), 1))
