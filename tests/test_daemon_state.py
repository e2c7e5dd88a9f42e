"""The daemon's state against the real daemon (``python -m daemon.testing --fake-all -- run``):
a full state disk (status says blocked and where, the log says it once with a count), a job
queue truncated to 0 bytes or corrupt, and two daemons on one inbox."""

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
from test_daemon_crash import REPO, counts, drop, ready, start, write_settings

from daemon.service.queue import DB_NAME, JobStore


def status_text(root: Path) -> str:
    env = {**os.environ, "MINUTESD_CONFIG": str(root / "s.yaml")}
    env.pop("MINUTESD_FAKE_STATE_FULL", None)
    r = subprocess.run([sys.executable, "-m", "daemon.testing", "--fake-all", "--", "status"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"daemon exited while waiting for {what}: "
                                 f"{proc.communicate()[0]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def stop(p: subprocess.Popen) -> list[dict]:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    lines = []
    for ln in out.splitlines():
        try:
            lines.append(json.loads(ln))
        except ValueError:
            lines.append({"event": ln})
    return lines


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                        str(path)], capture_output=True)
    return r.returncode == 0


def _fill(folder: Path) -> Path:
    """Write a file until the disk holding ``folder`` has no block left."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("how", ["fault", "tmpfs"])
def test_status_says_blocked_when_the_state_disk_is_full(tmp_path, how):
    """`status` says running + blocked + the state folder + the fix while the daemon cannot
    write its queue, and the main loop logs the error once and then a count, not 4 a second."""
    state = tmp_path / "state"
    env = {}
    if how == "tmpfs":
        if not _mount_tmpfs(state, "2m"):
            pytest.skip("cannot mount a small tmpfs here (needs root and mount); the "
                        "fault-injected case covers it")
    else:
        env["MINUTESD_FAKE_STATE_FULL"] = str(tmp_path / "disk-is-full")
    write_settings(tmp_path)
    p = start(tmp_path, **env)
    filler = None
    try:
        wait(lambda: ready(tmp_path, p.pid), 60, "ready", p)
        drop(tmp_path / "inbox", "before.mp3", "Archived before the disk filled up.")
        wait(lambda: counts(tmp_path).get("done") == 1, 60, "first job done", p)
        if how == "tmpfs":
            filler = _fill(state)
        else:
            (tmp_path / "disk-is-full").touch()
        drop(tmp_path / "inbox", "during.mp3", "Dropped while the state disk was full.")
        out = wait(lambda: (lambda t: "BLOCKED" in t and t)(status_text(tmp_path)), 60,
                   "status to say blocked", p)
        time.sleep(6)  # 24 ticks of the main loop, each meeting the full disk
        out = status_text(tmp_path)
        assert f"running, pid {p.pid}" in out, out
        assert f"BLOCKED: state disk full ({state})" in out, out
        assert f"fix:      free space on the disk holding {state}" in out, out
        assert "health:   ok" not in out and "not running" not in out, out
        # freed: the blocked job goes through, status is healthy again
        if filler is not None:
            filler.unlink()
        else:
            (tmp_path / "disk-is-full").unlink()
        wait(lambda: counts(tmp_path).get("done") == 2, 60, "second job done", p)
        wait(lambda: "health:   ok" in status_text(tmp_path), 30, "healthy status", p)
        time.sleep(6)  # quiet for longer than RepeatLog.recover_after_s: "recovered"
    finally:
        lines = stop(p)
        if how == "tmpfs":
            subprocess.run(["umount", "-l", str(state)], capture_output=True)
    assert p.returncode == 0
    loop = [ln for ln in lines if str(ln.get("event", "")).startswith("main loop error")]
    firsts = [ln for ln in loop if ln["event"] == "main loop error"]
    repeats = [ln for ln in loop if "repeated" in ln["event"]]
    assert len(firsts) == 1, [ln["event"] for ln in loop]
    assert "disk full" in firsts[0]["error"] and str(state) in firsts[0]["error"]
    assert repeats and sum(r["repeated"] for r in repeats) >= 10, repeats
    assert len(loop) <= 3, [ln["event"] for ln in loop]
    assert any(ln.get("event") == "main loop error: recovered" for ln in lines)
    queue = [ln for ln in lines if str(ln.get("event", "")).startswith("cannot read the job")]
    assert len([ln for ln in queue if ln["event"] == "cannot read the job queue"]) <= 1, queue


def test_a_queue_truncated_to_zero_bytes_is_rebuilt_from_the_archive(tmp_path):
    """History and duplicate memory survive: the damaged file is kept aside, the meetings
    come back from the archive, and the same recording dropped again is a duplicate."""
    write_settings(tmp_path)
    p = start(tmp_path)
    try:
        wait(lambda: ready(tmp_path, p.pid), 60, "ready", p)
        drop(tmp_path / "inbox", "a.mp3", "First meeting of the week.")
        drop(tmp_path / "inbox", "b.mp3", "Second meeting of the week.")
        wait(lambda: counts(tmp_path).get("done") == 2, 60, "both done", p)
    finally:
        stop(p)
    db = tmp_path / "state" / DB_NAME
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(b"")  # truncated to 0 bytes
    p = start(tmp_path)
    try:
        wait(lambda: ready(tmp_path, p.pid), 60, "ready again", p)
        drop(tmp_path / "inbox", "a again.mp3", "First meeting of the week.")
        wait(lambda: list((tmp_path / "duplicates").glob("*.mp3")), 30, "duplicate", p)
    finally:
        lines = stop(p)
    assert (tmp_path / "duplicates" / "a again.mp3").exists()
    assert len(list((tmp_path / "archive").glob("*/*/*/minutes.json"))) == 2
    aside = list((tmp_path / "state").glob(f"{DB_NAME}.lost-*"))
    assert len(aside) == 1 and aside[0].stat().st_size == 0
    loud = [ln for ln in lines if "THE JOB QUEUE WAS EMPTY" in str(ln.get("event"))]
    assert loud and loud[0]["recovered"] == 2 and loud[0]["kept_aside"] == str(aside[0])
    s = JobStore(db, readonly=True)
    try:
        assert s.counts()["done"] == 2 and s.event_count("rebuilt") == 2
    finally:
        s.close()


def test_a_corrupt_queue_stops_the_daemon_and_is_left_alone(tmp_path):
    write_settings(tmp_path)
    (tmp_path / "state").mkdir()
    db = tmp_path / "state" / DB_NAME
    garbage = b"this is not an SQLite database\n" * 200
    db.write_bytes(garbage)
    p = start(tmp_path)
    lines = stop(p) if p.wait(timeout=60) is not None else []
    assert p.returncode == 1
    err = next(ln for ln in lines if ln.get("event") == "cannot start")["error"]
    assert str(db) in err and "damaged" in err and "move it aside" in err
    assert db.read_bytes() == garbage


def test_two_daemons_on_one_inbox_with_different_state_folders(tmp_path):
    """The second refuses to start, naming the first one's pid and the inbox; every file is
    processed once."""
    write_settings(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    # the same root (inbox, outputs), another state folder
    (other / "s.yaml").write_text((tmp_path / "s.yaml").read_text().replace(
        "state_dir: state", f"state_dir: {other / 'state'}"))
    p1 = start(tmp_path)
    try:
        wait(lambda: ready(tmp_path, p1.pid), 60, "first ready", p1)
        p2 = start(other)
        try:
            rc = p2.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = None
        second = stop(p2)
        assert rc == 2, "the second daemon did not refuse to start"
        err = next(ln for ln in second if ln.get("event") == "cannot start")["error"]
        assert f"pid {p1.pid}" in err and str(tmp_path / "inbox") in err, err
        drop(tmp_path / "inbox", "m.mp3", "Only one daemon takes this.")
        wait(lambda: counts(tmp_path).get("done") == 1, 60, "done", p1)
    finally:
        stop(p1)
    assert len(list((tmp_path / "archive").glob("*/*/*/minutes.json"))) == 1
