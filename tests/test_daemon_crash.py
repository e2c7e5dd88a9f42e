"""kill -9 at every step (and at random instants), SIGTERM mid-step: the real daemon as a
subprocess (`python -m daemon.testing --fake-all -- run`, fake models so a step takes what
the test says). After each series: every recording archived exactly once, none lost, nothing
left half-done, and the counts printed."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.archive.local import MARKER, STAGING, LocalArchive
from daemon.files import sha256_file
from daemon.service.queue import DB_NAME, JobStore

REPO = Path(__file__).resolve().parent.parent

# Every place a step's record can be cut off: after each step is committed, inside the
# archive write (name reserved / files staged / folder renamed, not yet indexed / indexed but
# not yet recorded in the queue) and in the final move (original moved, not yet recorded).
CRASH_POINTS = ["received", "transcribed", "minutes_written", "archive:reserved",
                "archive:staged", "archive:moved", "archive:indexed", "archived", "done:moved",
                "done"]


def write_settings(root: Path, **daemon) -> None:
    # max_attempts: a kill during a step counts as an attempt (the crash-loop guard, tested in
    # test_daemon_service); these series kill the same step of a job up to 3 times on purpose.
    d = {"root": str(root), "state_dir": "state", "stable_seconds": 0.2, "retry_backoff_s": 0.1,
         "retry_backoff_max_s": 0.5, "rescan_interval_s": 1, "min_free_mb": 0,
         "stop_timeout_s": 10, "max_attempts": 10, "facts_wait_s": 0}
    d.update(daemon)
    (root / "s.yaml").write_text("daemon:\n" + "".join(f"  {k}: {v}\n" for k, v in d.items()))


def start(root: Path, **env_extra: str) -> subprocess.Popen:
    env = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "MINUTESD_TEST_CRASH_AT"):
        env.pop(k, None)
    env.update({"MINUTESD_CONFIG": str(root / "s.yaml"), "PYTHONUNBUFFERED": "1"})
    env.update(env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "daemon.testing", "--fake-all", "--", "run", "--json-logs"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def drop(inbox: Path, name: str, text: str) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{name}.part"
    tmp.write_text(text)
    os.replace(tmp, inbox / name)
    return inbox / name


def in_step(db: Path, step: str) -> bool:
    """A job is inside ``step`` now (read-only, tolerating a queue still being created)."""
    if not db.exists():
        return False
    try:
        s = JobStore(db, readonly=True)
        try:
            return bool(s.jobs("current_step=?", (step,)))
        finally:
            s.close()
    except sqlite3.Error:
        return False


def ready(root: Path, pid: int) -> bool:
    """The daemon with this pid says it is ready (its SIGTERM handler is installed)."""
    try:
        s = JobStore(root / "state" / DB_NAME, readonly=True)
        try:
            info = s.daemon_info() or {}
        finally:
            s.close()
    except sqlite3.Error:
        return False
    return info.get("pid") == pid and info.get("phase") == "ready"


def counts(root: Path) -> dict[str, int]:
    db = root / "state" / DB_NAME
    if not db.exists():
        return {}
    try:
        s = JobStore(db, readonly=True)
        try:
            return s.counts()
        finally:
            s.close()
    except sqlite3.Error:
        return {}


def run_until_settled(root: Path, n_done: int, timeout: float = 60, **env) -> str:
    """A clean run: wait until n_done jobs are done, then SIGTERM; returns its log."""
    p = start(root, **env)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end and not ready(root, p.pid):
            time.sleep(0.05)
            assert p.poll() is None, p.communicate()[0]
        while time.monotonic() < end and counts(root).get("done", 0) < n_done:
            time.sleep(0.1)
            assert p.poll() is None, p.communicate()[0]
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out
    assert counts(root).get("done", 0) == n_done, out
    return out


def check_exactly_once(root: Path, contents: dict[str, str]) -> dict[str, int]:
    """Every distinct recording archived once, its original in processed/, nothing else."""
    shas = set(contents.values())
    arch = LocalArchive(root / "archive")
    folders = sorted(p.parent for p in (root / "archive").glob("*/*/*/minutes.json"))
    keys = [json.loads((f / MARKER).read_text())["key"] for f in folders]
    assert sorted(keys) == sorted(shas), "archive folders != recordings"
    assert arch.count() == len(shas)
    rows = arch.db().execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM meetings_fts").fetchone()
    assert tuple(rows) == (len(shas), len(shas)), "FTS rows duplicated"
    for sha in shas:
        assert arch.lookup(sha) is not None
    assert not any((root / "archive" / STAGING).glob("*")), "staging left behind"
    store = JobStore(root / "state" / DB_NAME, readonly=True)
    jobs = store.jobs()
    assert sorted(j.sha256 for j in jobs) == sorted(shas)
    assert all(j.state == "done" for j in jobs), [(j.name, j.state, j.last_error) for j in jobs]
    per_sha = {sha: len([e for e in store.events("archived", limit=1000) if e["sha256"] == sha])
               for sha in shas}
    assert set(per_sha.values()) == {1}, per_sha
    recovered = store.event_count("recovered")
    store.close()
    processed = sorted(p.name for p in (root / "processed").rglob("*") if p.is_file())
    originals = sorted({name for name, sha in contents.items()
                        if name == min(n for n, s in contents.items() if s == sha)})
    assert len(processed) == len(shas)
    assert set(processed) <= set(contents)
    assert [p.name for p in (root / "inbox").iterdir() if not p.name.startswith(".")] == []
    assert not (root / "failed").exists() or not any((root / "failed").iterdir())
    return {"recordings": len(shas), "archived": len(folders), "recovered_jobs": recovered,
            "processed": len(processed), "originals": len(originals)}


def test_kill9_at_every_step_archives_each_recording_exactly_once(tmp_path):
    root = tmp_path
    write_settings(root)
    contents: dict[str, str] = {}

    def new_recording(i: int) -> None:
        p = drop(root / "inbox", f"meeting-{i:02d}.mp3",
                 f"Meeting number {i} about topic {i * 7}.\nWe decided item {i}.")
        contents[p.name] = sha256_file(p)

    new_recording(0)
    new_recording(1)
    kills, outcomes = 0, []
    for cycle in range(2):
        for point in CRASH_POINTS:
            if point == "received":
                new_recording(len(contents))  # something new to receive
            p = start(root, MINUTESD_TEST_CRASH_AT=point)
            try:
                rc = p.wait(timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
            out = p.communicate()[0]
            assert rc == -signal.SIGKILL, f"{point}: exit {rc}\n{out}"
            assert f"crash point {point}: SIGKILL" in out
            kills += 1
            outcomes.append((cycle, point, dict(counts(root))))
    # a duplicate of the first recording, then a clean run finishes everything
    dup = drop(root / "inbox", "meeting-00 copy.mp3",
               (root / "processed" / "meeting-00.mp3").read_text()
               if (root / "processed" / "meeting-00.mp3").exists()
               else "Meeting number 0 about topic 0.\nWe decided item 0.")
    assert sha256_file(dup) == contents["meeting-00.mp3"]
    run_until_settled(root, n_done=len(set(contents.values())))
    result = check_exactly_once(root, contents)
    assert [p.name for p in (root / "duplicates").iterdir()] == ["meeting-00 copy.mp3"]
    result["kills"] = kills
    print(f"\nkill -9 at each step: {kills} kills at {len(CRASH_POINTS)} points x 2 cycles; "
          f"result {result}")
    for cycle, point, c in outcomes:
        print(f"  cycle {cycle} {point:<17} -> {c}")
    assert kills == 2 * len(CRASH_POINTS)


def test_kill9_at_random_instants(tmp_path):
    """SIGKILL from outside while steps run (each fake step takes 0.6 s)."""
    root = tmp_path
    write_settings(root)
    rnd = random.Random(4)
    contents: dict[str, str] = {}
    for i in range(4):
        p = drop(root / "inbox", f"talk-{i}.m4a", f"Talk {i}: budget {i * 1000} dollars.\nDone.")
        contents[p.name] = sha256_file(p)
    env = {"MINUTESD_FAKE_HEAR_S": "0.6", "MINUTESD_FAKE_UNDERSTAND_S": "0.6"}
    kills, during = 0, []
    for _ in range(10):
        p = start(root, **env)
        time.sleep(rnd.uniform(1.0, 2.5))  # python start ~0.8 s, then steps
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=30)
        p.communicate()
        s = JobStore(root / "state" / DB_NAME, readonly=True) if (
            root / "state" / DB_NAME).exists() else None
        if s:
            during.append([j.current_step for j in s.jobs("current_step IS NOT NULL")])
            s.close()
    run_until_settled(root, n_done=4, **env)
    result = check_exactly_once(root, contents)
    steps = [x for d in during for x in d]
    result["kills"] = kills
    print(f"\nkill -9 at random instants: {kills} kills; interrupted steps "
          f"{ {s: steps.count(s) for s in set(steps)} }; result {result}")
    assert kills >= 8
    assert result["recovered_jobs"] >= 3  # the kills did land inside steps


def sigterm_during(p: subprocess.Popen, db: Path, step: str) -> tuple[str, float]:
    """SIGTERM the daemon once it is inside ``step``; its output and seconds to exit."""
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and not in_step(db, step):
            time.sleep(0.05)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
        return out, time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()


def test_sigterm_finishes_or_checkpoints_the_current_step(tmp_path):
    root = tmp_path
    # 1. the step fits in stop_timeout_s: it finishes, is recorded, exit 0
    write_settings(root, stop_timeout_s=10)
    drop(root / "inbox", "a.mp3", "Alpha.\nBeta.")
    db = root / "state" / DB_NAME
    p = start(root, MINUTESD_FAKE_HEAR_S="2")
    out, stop_s = sigterm_during(p, db, "transcribed")
    assert p.returncode == 0, out
    assert 1.0 < stop_s < 8
    j = JobStore(db, readonly=True).jobs()[0]
    assert (j.step, j.state, j.current_step, j.attempts) == ("transcribed", "queued", None, 0)
    assert '"event": "step finished"' in out and '"event": "stopped"' in out
    # 2. the step does not fit: abandoned, exit 0 within the budget, attempt not counted
    write_settings(root, stop_timeout_s=0.5)
    p = start(root, MINUTESD_FAKE_UNDERSTAND_S="20")
    out, stop_s = sigterm_during(p, db, "minutes_written")
    assert p.returncode == 0, out
    assert stop_s < 5
    assert "step abandoned at shutdown" in out
    j = JobStore(db, readonly=True).jobs()[0]
    assert (j.step, j.state, j.current_step, j.attempts) == ("transcribed", "queued", None, 0)
    # 3. the next start resumes after "transcribed" (hear is not run again)
    write_settings(root)
    out = run_until_settled(root, n_done=1)
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    started = [ln["step"] for ln in lines if ln.get("event") == "step started"]
    assert started == ["minutes_written", "archived", "done"]


def test_every_job_log_line_names_the_job_and_file(tmp_path):
    root = tmp_path
    write_settings(root)
    drop(root / "inbox", "x.mp3", "Hello.\nWorld.")
    drop(root / "inbox", "bad.mp3", "CORRUPT")
    drop(root / "inbox", "flaky.mp3", "FLAKY 1\nAgain.")
    out = run_until_settled(root, n_done=2)
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert lines and all("timestamp" in ln and "level" in ln for ln in lines)
    job_lines = [ln for ln in lines if "step" in ln or ln["event"] in (
        "received", "job done", "progress")]
    assert len(job_lines) >= 15
    for ln in job_lines:
        assert len(ln.get("job", "")) == 12 and ln.get("file"), ln
    assert {ln["file"] for ln in job_lines} == {"x.mp3", "bad.mp3", "flaky.mp3"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs unshare + mount (root)")
def test_runs_with_proc_hidden_like_protectproc_invisible(tmp_path):
    """The unit sets ProtectProc=invisible: other processes vanish from /proc. The daemon
    must not need them (and torch must still see the CPU's vector units, see the unit)."""
    import shutil

    if not shutil.which("unshare"):
        pytest.skip("unshare not available")
    mount = "mount -t proc -o hidepid=invisible proc /proc"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", mount],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot mount a restricted /proc here")
    write_settings(tmp_path)
    drop(tmp_path / "inbox", "x.mp3", "Hello.")
    env = dict(os.environ, MINUTESD_CONFIG=str(tmp_path / "s.yaml"))
    script = (f"{mount} && exec timeout -s TERM 5 "
              f"{sys.executable} -m daemon.testing --fake-all -- run")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert counts(tmp_path).get("done") == 1, r.stdout + r.stderr
