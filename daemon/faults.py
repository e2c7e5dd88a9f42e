"""Fault injection for the crash tests: ``MINUTESD_TEST_CRASH_AT=<point>[,<point>...]`` makes
the process ``SIGKILL`` itself -- a real ``kill -9``, no cleanup, no flush -- when it reaches
one of the named points (after a step is recorded, or inside the archive's write). Unset in
production; checking it costs one environment lookup per point."""

from __future__ import annotations

import os
import signal
import sys

ENV = "MINUTESD_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    want = os.environ.get(ENV)
    if want and name in want.split(","):
        sys.stderr.write(f"minutesd: crash point {name}: SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
