"""structlog set-up: key=value lines on a terminal, JSON lines for journald/machines; and
:class:`RepeatLog`, which logs an error that repeats once, then a count.

File names, titles and errors come from outside (whoever can write to the inbox), so the
console lines show their control characters, ANSI escapes and bidi overrides escaped
(:func:`daemon.text.printable`); JSON lines are exact, json escapes them itself."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import structlog

from daemon.text import printable


def escape_controls(logger, method_name: str, event_dict: dict) -> dict:
    """structlog processor: every text value (and the event) through :func:`printable`; a
    formatted traceback keeps its line breaks."""
    out = {}
    for k, v in event_dict.items():
        if isinstance(v, str):
            v = "\n".join(map(printable, v.split("\n"))) if k == "exception" else printable(v)
        out[k] = v
    return out


def configure_logging(level: str = "info", json_lines: bool = False) -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_lines:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.processors.format_exc_info, escape_controls,
                       structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log at INFO through stdlib logging; keep them quiet unless debugging.
    for noisy in ("faster_whisper", "httpx", "urllib3", "speechbrain", "lightning", "pytorch_lightning"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))


def get_logger(name: str = "minutesd"):
    return structlog.get_logger(name)


class RepeatLog:
    """An error that repeats (the main loop meeting a full disk four times a second) is
    logged once; while it goes on, a summary ``"<event> (repeated N times in the last M s)"``
    at most every ``interval_s``; once it has stopped (:meth:`ok` called ``recover_after_s``
    after the last occurrence: an operation that fails every other time has not recovered),
    a summary of what was left and ``"<event>: recovered"``. A different error is logged at
    once (and ends the summary of the one before)."""

    def __init__(self, log, interval_s: float = 60.0, recover_after_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.interval_s = interval_s
        self.recover_after_s = recover_after_s
        self.clock = clock
        self._last = 0.0  # the last occurrence
        self._key: str | None = None
        self._event = ""
        self._fields: dict = {}
        self._count = 0  # repeats since the last line
        self._since = 0.0  # when the last line was written
        self._first = 0.0

    def error(self, event: str, key: str | None = None, **fields) -> None:
        key = key if key is not None else f"{event}|{sorted(fields.items())}"
        now = self.clock()
        self._last = now
        if key != self._key:
            self._summary(now)
            self._key, self._event, self._fields = key, event, fields
            self._count, self._since, self._first = 0, now, now
            self.log.error(event, **fields)
            return
        self._count += 1
        self._fields = fields
        if now - self._since >= self.interval_s:
            self._summary(now)

    def _summary(self, now: float) -> None:
        if self._key is not None and self._count:
            self.log.error(f"{self._event} (repeated {self._count} times in the last "
                           f"{round(now - self._since)} s)", repeated=self._count,
                           **self._fields)
        self._count, self._since = 0, now

    def ok(self) -> None:
        """The operation succeeded: the error, if one was repeating, is over."""
        now = self.clock()
        if self._key is None or now - self._last < self.recover_after_s:
            return
        self._summary(now)
        self.log.info(f"{self._event}: recovered", after_s=round(now - self._first, 1))
        self._key = None
