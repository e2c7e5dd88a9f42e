"""structlog set-up: key=value lines on a terminal, JSON lines for journald/machines."""

from __future__ import annotations

import logging
import sys

import structlog


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
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
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
