"""A step that runs past its time budget (relative to the audio length) is reported while it
runs, then fails clearly: the recording to failed/ with the reason, the daemon out with
status 3 for systemd to restart it (model code cannot be interrupted), and the next start
does not try that recording again. The real daemon as a subprocess with fake models that
sleep past a tiny budget (daemon.step_budget_factor scales the table's budgets)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time

import pytest
from test_daemon_crash import drop, ready, start, write_settings

from daemon.service.runner import EXIT_STUCK
from daemon.service.steps import BY_NAME


def test_budgets_scale_with_the_audio_and_the_factor():
    t = BY_NAME["transcribed"]
    assert t.budget(59.0, 1.0) == pytest.approx(300 + 3 * 59)
    assert t.budget(None, 1.0) == 300  # length unknown: the fixed part
    assert t.budget(59.0, 0) is None  # 0: no limit
    assert BY_NAME["minutes_written"].budget(240.0, 2.0) == pytest.approx(2 * (1800 + 2400))
    assert BY_NAME["archived"].budget(240.0, 1.0) is None


def lines_of(out: str) -> list[dict]:
    rows = []
    for ln in out.splitlines():
        with contextlib.suppress(ValueError):
            rows.append(json.loads(ln))
    return rows


@pytest.mark.parametrize("step,env,reason", [
    ("transcribed", {"MINUTESD_FAKE_HEAR_S": "120"},
     "transcribing took longer than 2 s for a recording of unknown length"),
    ("minutes_written", {"MINUTESD_FAKE_UNDERSTAND_S": "120"},
     "writing minutes took longer than 2 s for 10 s of audio"),
])
def test_a_stuck_step_fails_the_job_and_restarts_the_daemon(tmp_path, step, env, reason):
    # budgets: transcribed 0.005 * 300 = 1.5 s; minutes_written 0.001 * (1800 + 10 * 10) = 1.9
    factor = 0.005 if step == "transcribed" else 0.001
    write_settings(tmp_path, step_budget_factor=factor)
    drop(tmp_path / "inbox", "pitch-shifted.mp3", "Whisper loops on this one.\nForever.")
    p = start(tmp_path, **env)
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError("the stuck step was never given up on:\n" + out[-3000:]) from None
    assert p.returncode == EXIT_STUCK, out[-3000:]
    rows = lines_of(out)
    events = [r.get("event") for r in rows]
    assert "step still running" in events  # progress while it ran
    over = next(r for r in rows if str(r.get("event", "")).startswith("step over its time limit"))
    assert over["step"] == step and over["exit_status"] == EXIT_STUCK
    assert "Current thread" in out or "Thread 0x" in out  # every thread's stack, for a bug
    failed = tmp_path / "failed"
    info = json.loads((failed / "pitch-shifted.mp3.error.json").read_text())
    assert info["error"].startswith(reason) and info["permanent"] and info["step"] == step
    assert (failed / "pitch-shifted.mp3").exists()
    assert not list((tmp_path / "inbox").iterdir())

    # restarted (as systemd would): the recording is not tried again; new ones are processed
    drop(tmp_path / "inbox", "next.mp3", "A normal meeting.\nIt ends.")
    p = start(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((tmp_path / "processed").glob("next.mp3")):
            time.sleep(0.2)
        assert ready(tmp_path, p.pid)
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out[-3000:]
    assert (tmp_path / "processed" / "next.mp3").exists()
    assert "pitch-shifted" not in "".join(
        str(r.get("file", "")) for r in lines_of(out) if r.get("event") == "step started")
