"""The durable queue (SQLite WAL) and the file helpers under it."""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path

import pytest

from daemon import files
from daemon.errors import EnvironmentProblem, environment_problem
from daemon.files import move_file, unique_path
from daemon.service.queue import DB_NAME, JobStore
from daemon.service.steps import NEXT_STEP
from daemon.service.steps import STEP_NAMES as STEPS


def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / DB_NAME)


def add(s: JobStore, n: int, name: str | None = None):
    return s.add(f"{n:064x}", name or f"f{n}.mp3", f"/in/f{n}.mp3", 100 + n, 1000 + n,
                 "2024-05-14", "09:30")


def test_wal_and_steps(tmp_path):
    s = store(tmp_path)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert STEPS[0] == "received" and NEXT_STEP["archived"] == "done"
    j = add(s, 1)
    assert (j.state, j.step, j.next_step, j.attempts) == ("queued", "received", "transcribed", 0)


def test_reader_of_a_store_killed_before_its_schema_sees_no_jobs(tmp_path):
    """kill -9 between creating the file and writing the schema: status reads it as empty,
    and the next daemon start writes the schema into the same file."""
    path = tmp_path / DB_NAME
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").fetchall()  # file, no tables
    reader = JobStore(path, readonly=True)
    assert reader.jobs() == []
    reader.close()
    JobStore(path).close()
    tables = {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "events"} <= tables
    assert JobStore(path, readonly=True).jobs() == []


def test_queue_is_ordered_and_survives_reopen(tmp_path):
    s = store(tmp_path)
    for n in (3, 1, 2):
        add(s, n)
    s.close()
    s = store(tmp_path)
    order = []
    while (j := s.claim_next()) is not None:
        order.append(j.name)
        assert j.state == "running"
    assert order == ["f3.mp3", "f1.mp3", "f2.mp3"]  # arrival order, not name or hash


def test_step_outputs_recorded_with_the_step(tmp_path):
    s = store(tmp_path)
    sha = add(s, 1).sha256
    s.claim_next()
    assert s.begin_step(sha, "transcribed") == 1
    s.finish_step(sha, "transcribed", transcript_json='{"x": 1}')
    j = s.get(sha)
    assert (j.step, j.attempts, j.current_step, j.transcript_json) == (
        "transcribed", 0, None, '{"x": 1}')
    with pytest.raises(AssertionError):
        s.finish_step(sha, "minutes_written", state="done")  # only known output columns
    for step in ("minutes_written", "archived", "done"):
        s.begin_step(sha, step)
        s.finish_step(sha, step)
    j = s.get(sha)
    assert (j.state, j.step) == ("done", "done")
    assert j.transcript_json is None  # the archive holds it now
    assert [e["kind"] for e in reversed(s.events(sha=sha))] == [
        "received", "transcribed", "minutes_written", "archived", "done"]


def test_retry_backoff_and_due_time(tmp_path):
    s = store(tmp_path)
    sha = add(s, 1).sha256
    s.claim_next()
    s.begin_step(sha, "transcribed")
    s.retry_later(sha, "transcribed", "boom", 60)
    assert s.claim_next() is None  # not due yet
    assert 59 <= s.next_due_in() <= 60
    j = s.claim_next(now=time.time() + 61)
    assert j is not None and j.attempts == 1 and j.last_error == "boom"


def test_environment_wait_and_release_give_the_attempt_back(tmp_path):
    s = store(tmp_path)
    sha = add(s, 1).sha256
    s.claim_next()
    s.begin_step(sha, "transcribed")
    s.wait_environment(sha, "transcribed", "disk full", 0)
    assert s.get(sha).attempts == 0
    s.claim_next()
    s.begin_step(sha, "transcribed")
    s.release(sha)
    j = s.get(sha)
    assert (j.state, j.attempts) == ("queued", 0)


def test_recover_counts_the_interrupted_attempt(tmp_path):
    s = store(tmp_path)
    sha = add(s, 1).sha256
    s.claim_next()
    s.begin_step(sha, "minutes_written")
    s.db.close()  # the process "dies" here: no release
    s = store(tmp_path)
    rec = s.recover()
    assert [j.sha256 for j in rec] == [sha]
    j = s.get(sha)
    assert (j.state, j.attempts, j.current_step) == ("queued", 1, "minutes_written")
    assert s.events("recovered")[0]["step"] == "minutes_written"


def test_requeue_after_failure_keeps_finished_steps(tmp_path):
    s = store(tmp_path)
    sha = add(s, 1).sha256
    s.claim_next()
    s.begin_step(sha, "transcribed")
    s.finish_step(sha, "transcribed", transcript_json="{}")
    s.fail(sha, "minutes_written", "bad", None)
    j = s.requeue(sha, "again.mp3", "/in/again.mp3", 5, 6, "2024-01-01", None)
    assert (j.state, j.step, j.attempts, j.name) == ("queued", "transcribed", 0, "again.mp3")


def test_readers_see_committed_state_while_a_writer_is_busy(tmp_path):
    s = store(tmp_path)
    add(s, 1)
    s.db.execute("BEGIN IMMEDIATE")
    s.db.execute("UPDATE jobs SET state='running'")
    r = JobStore(tmp_path / DB_NAME, readonly=True)  # `minutesd status` meanwhile
    assert r.counts()["queued"] == 1
    s.db.execute("COMMIT")
    assert r.counts()["running"] == 1
    with pytest.raises(sqlite3.OperationalError):
        r.db.execute("DELETE FROM jobs")


# ----------------------------------------------------------------------------- files


def test_environment_problems_are_recognised():
    e = environment_problem(OSError(errno.ENOSPC, "No space left on device", "/srv/a"))
    assert isinstance(e, EnvironmentProblem) and e.kind == "disk full" and e.path == "/srv/a"
    assert "Nothing is lost" in str(e) and "free space on the disk holding /srv/a" in str(e)
    assert environment_problem(PermissionError(errno.EACCES, "Permission denied")).kind == \
        "permission denied"
    assert environment_problem(sqlite3.OperationalError("database or disk is full")).kind == \
        "disk full"
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert environment_problem(outer).kind == "read-only file system"
    assert environment_problem(ValueError("x")) is None
    assert environment_problem(FileNotFoundError(errno.ENOENT, "gone")) is None


def test_unique_path(tmp_path):
    assert unique_path(tmp_path, "a.mp3") == tmp_path / "a.mp3"
    (tmp_path / "a.mp3").touch()
    (tmp_path / "a (2).mp3").touch()
    assert unique_path(tmp_path, "a.mp3") == tmp_path / "a (3).mp3"
    (tmp_path / "2024.05.01 sync").touch()
    assert unique_path(tmp_path, "2024.05.01 sync").name == "2024.05 (2).01 sync"
    (tmp_path / "noext").touch()
    assert unique_path(tmp_path, "noext").name == "noext (2)"


def test_move_across_file_systems_copies_then_removes(tmp_path, monkeypatch):
    src = tmp_path / "in" / "m.mp3"
    src.parent.mkdir()
    src.write_bytes(b"x" * 5000)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    real_rename = os.rename
    calls = []

    def rename(a, b):
        calls.append((a, b))
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(a, b)

    monkeypatch.setattr(files.os, "rename", rename)
    dest = move_file(src, tmp_path / "out" / "m.mp3")
    assert not src.exists() and dest.read_bytes() == b"x" * 5000
    assert int(dest.stat().st_mtime) == 1_600_000_000  # kept: it may date the meeting
    assert not list(dest.parent.glob(".*minutesd-copy"))


def test_a_repeated_error_is_logged_once_then_counted():
    from daemon.logs import RepeatLog

    lines: list[tuple[str, dict]] = []

    class Log:
        def error(self, event, **kw):
            lines.append((event, kw))

        info = error

    now = [0.0]
    r = RepeatLog(Log(), interval_s=60, recover_after_s=5, clock=lambda: now[0])
    for _ in range(241):  # a minute of ticks at 4 a second
        r.error("main loop error", error="disk full")
        now[0] += 0.25
        r.ok()  # a tick in between that worked is not a recovery
    assert [e for e, _ in lines] == ["main loop error",
                                     "main loop error (repeated 240 times in the last 60 s)"]
    now[0] += 10
    r.ok()
    assert [e for e, _ in lines][-1] == "main loop error: recovered"
    r.error("main loop error", error="another")
    assert lines[-1] == ("main loop error", {"error": "another"})
