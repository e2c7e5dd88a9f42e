"""structlog set-up: key=value lines on a terminal, JSON lines for journald/machines.

File names, titles and errors come from outside (whoever can write to the inbox), so the
console lines show their control characters, ANSI escapes and bidi overrides escaped
(:func:`daemon.text.printable`); JSON lines are exact, json escapes them itself."""

from __future__ import annotations

import logging
import sys

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
