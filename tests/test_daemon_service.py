"""The daemon in-process with fake models: where files go, duplicates, failures and retries,
disk-full and permission problems (reported, nothing lost), keep_originals, re-drops, and
the guards (folder layout, one instance, crash loops)."""

from __future__ import annotations

import errno
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from daemon.archive.local import LocalArchive
from daemon.confined import Confined
from daemon.report import collect_status
from daemon.service.lifecycle import Service
from daemon.service.queue import DB_NAME, JobStore
from daemon.settings import DaemonSettings, Settings
from daemon.testing import FakeProcessor


@pytest.fixture(autouse=True)
def _fresh_logging():
    """`main()` points structlog at this test's captured stderr; later tests must not log
    into that closed file."""
    import structlog

    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def settings_for(root: Path, **over) -> Settings:
    s = Settings()
    base = dict(root=root, state_dir=Path("state"), stable_seconds=0.2, retry_backoff_s=0.05,
                retry_backoff_max_s=0.2, rescan_interval_s=1.0, min_free_mb=0)
    base.update(over)
    s.daemon = DaemonSettings(**base)
    return s


def wait_for(cond, timeout: float = 20.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Running:
    """Service.run() in a thread (no signal handlers there); stop() on exit."""

    def __init__(self, settings: Settings, processor=None, archive=None):
        self.proc = processor or FakeProcessor(settings)
        self.svc = Service(settings, processor_factory=lambda s, log: self.proc, archive=archive)
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.rc = self.svc.run()

    def __enter__(self) -> Running:
        self.thread.start()
        wait_for(lambda: self.svc.workers or self.rc is not None, what="daemon ready")
        return self

    def __exit__(self, *exc) -> None:
        self.svc.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()

    def status(self) -> dict:
        return collect_status(self.svc.settings)

    def counts(self) -> dict:
        return self.svc.store.counts()


def drop(inbox: Path, name: str, text: str) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{name}.tmp"
    tmp.write_text(text)
    p = inbox / name
    tmp.rename(p)
    return p


def archived(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / "archive").glob("*/*/*/minutes.json"))


def test_files_end_where_they_should(tmp_path):
    s = settings_for(tmp_path)
    inbox = tmp_path / "inbox"
    with Running(s) as r:
        drop(inbox, "2024-05-14 0930 roof.mp3", "The roof came in under budget.\nWiring is old.")
        drop(inbox, "bad.mp3", "CORRUPT\n")
        (inbox / "empty.m4a").write_bytes(b"")
        part = inbox / "launch.mp3.part"
        part.write_text("Launch readiness for Atlas.\nThe login crash is fixed.")
        time.sleep(0.5)
        assert not (tmp_path / "failed" / "launch.mp3.part").exists()  # ignored while .part
        part.rename(inbox / "launch.mp3")
        wait_for(lambda: r.counts()["done"] == 2, what="two done")
        drop(inbox, "roof again.mp3", "The roof came in under budget.\nWiring is old.")
        wait_for(lambda: list((tmp_path / "duplicates").glob("*")), what="duplicate moved")
        wait_for(lambda: len(list((tmp_path / "failed").glob("*.error.json"))) == 2,
                 what="two failures")
        # the queue records a move right after it (files first: never a record without a move)
        st = wait_for(lambda: (lambda s: s if s["duplicates"] == 1 and s["failed_files"] == 2
                               else None)(r.status()), what="status caught up")
    assert r.rc == 0
    folders = archived(tmp_path)
    assert len(folders) == 2
    assert any(f.name == "2024-05-14 0930 The roof came in under budget" for f in folders)
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == [
        "2024-05-14 0930 roof.mp3", "launch.mp3"]
    assert [p.name for p in (tmp_path / "duplicates").iterdir()] == ["roof again.mp3"]
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == [
        "bad.mp3", "bad.mp3.error.json", "empty.m4a", "empty.m4a.error.json"]
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == []
    bad = json.loads((tmp_path / "failed" / "bad.mp3.error.json").read_text())
    assert set(bad) >= {"file", "sha256", "step", "attempts", "error", "time"}
    assert bad["step"] == "transcribed" and bad["attempts"] == 1 and bad["permanent"]
    assert "cannot decode" in bad["error"] and len(bad["sha256"]) == 64
    empty = json.loads((tmp_path / "failed" / "empty.m4a.error.json").read_text())
    assert empty["error"] == "empty file (0 bytes)" and empty["step"] == "received"
    assert st["counts"]["done"] == 2 and st["duplicates"] == 1 and st["failed_files"] == 2
    assert LocalArchive(tmp_path / "archive").count() == 2


def test_transient_errors_retry_with_backoff_then_give_up(tmp_path):
    s = settings_for(tmp_path, max_attempts=3)
    inbox = tmp_path / "inbox"
    with Running(s) as r:
        drop(inbox, "flaky.mp3", "FLAKY 2\nWe recovered after two failures.")
        drop(inbox, "doomed.mp3", "FLAKY 9\nThis never works.")
        wait_for(lambda: r.counts()["done"] == 1 and r.counts()["failed"] == 1, what="settled")
        retries = r.svc.store.events("retry", limit=50)
    assert {e["name"] for e in retries} == {"flaky.mp3", "doomed.mp3"}
    assert sum(e["name"] == "flaky.mp3" for e in retries) == 2
    assert sum(e["name"] == "doomed.mp3" for e in retries) == 2  # then the 3rd attempt fails
    info = json.loads((tmp_path / "failed" / "doomed.mp3.error.json").read_text())
    assert info["attempts"] == 3 and info["step"] == "transcribed"
    assert "transient failure 3 of 9" in info["error"] and not info["permanent"]
    assert [h["kind"] for h in info["history"]].count("retry") == 2
    assert len(archived(tmp_path)) == 1


class FullDisk(LocalArchive):
    """The archive's disk is full for the first ``n`` stores."""

    def __init__(self, root, n):
        super().__init__(root)
        self.left = n

    def store(self, rec):
        if self.left > 0:
            self.left -= 1
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root / "2024"))
        return super().store(rec)


def test_disk_full_is_reported_and_loses_nothing(tmp_path):
    s = settings_for(tmp_path, max_attempts=1)  # would fail at once if it counted
    inbox = tmp_path / "inbox"
    arch = FullDisk(tmp_path / "archive", 3)
    r = Running(s, archive=arch)
    r.svc.monitor.first_wait_s = 0.2
    with r:
        src = drop(inbox, "m.mp3", "Words that must not be lost.")
        wait_for(lambda: r.svc.health, what="degraded")
        assert "disk full" in r.svc.health and "Nothing is lost" in r.svc.health
        assert "Fix:" in r.svc.health
        info = r.svc.store.daemon_info()
        wait_for(lambda: (r.svc.store.daemon_info() or {}).get("health"), what="health row")
        job = r.svc.store.jobs()[0]
        assert job.state in ("queued", "running") and job.attempts <= 1
        assert src.exists() and not list((tmp_path / "failed").glob("*"))
        wait_for(lambda: r.counts()["done"] == 1, timeout=30, what="done after space freed")
        assert r.svc.health is None
        env_events = r.svc.store.events("environment", limit=10)
    assert info is not None
    assert len(env_events) == 3 and all("disk full" in e["detail"] for e in env_events)
    assert len(archived(tmp_path)) == 1 and (tmp_path / "processed" / "m.mp3").exists()


def test_permission_denied_moving_the_original_waits(tmp_path, monkeypatch):
    s = settings_for(tmp_path, max_attempts=1)
    real = Confined.move_out
    denied = {"n": 2}

    def move(self, src, dest, expect=None):
        if "processed" in str(dest) and denied["n"] > 0:
            denied["n"] -= 1
            raise PermissionError(errno.EACCES, "Permission denied", str(dest.parent))
        return real(self, src, dest, expect)

    monkeypatch.setattr(Confined, "move_out", move)
    r = Running(s)
    r.svc.monitor.first_wait_s = 0.2
    with r:
        drop(tmp_path / "inbox", "m.mp3", "Hello.")
        wait_for(lambda: r.svc.health and "permission denied" in r.svc.health, what="reported")
        assert (tmp_path / "inbox" / "m.mp3").exists()
        wait_for(lambda: r.counts()["done"] == 1, what="done")
    assert len(archived(tmp_path)) == 1
    assert (tmp_path / "processed" / "m.mp3").exists()


def test_low_free_space_pauses_jobs(tmp_path):
    s = settings_for(tmp_path, min_free_mb=10**9)
    r = Running(s)
    r.svc.monitor.first_wait_s = 0.2
    with r:
        drop(tmp_path / "inbox", "m.mp3", "Hello.")
        wait_for(lambda: r.svc.health and "min_free_mb" in r.svc.health, what="paused")
        assert r.counts()["done"] == 0 and r.svc.store.jobs()[0].attempts == 0
        r.svc.cfg.min_free_mb = 0
        wait_for(lambda: r.counts()["done"] == 1, what="resumed")


def test_keep_originals_processes_once(tmp_path):
    s = settings_for(tmp_path, keep_originals=True, rescan_interval_s=0.3)
    with Running(s) as r:
        p = drop(tmp_path / "inbox", "m.mp3", "Kept in place.")
        wait_for(lambda: r.counts()["done"] == 1, what="done")
        time.sleep(1.5)  # several rescans
        assert p.exists() and r.counts() == {**r.counts(), "done": 1, "queued": 0}
        assert [c for c in r.proc.calls if c[0] == "hear"] == [("hear", "m.mp3")]
        assert r.svc.store.event_count("duplicate") == 0


def test_a_failed_file_dropped_again_is_retried_from_its_last_step(tmp_path):
    s = settings_for(tmp_path, max_attempts=1)
    with Running(s) as r:
        drop(tmp_path / "inbox", "m.mp3", "FLAKY 1\nSecond time lucky.")
        wait_for(lambda: (tmp_path / "failed" / "m.mp3").exists(), what="failed")
        shutil.copy(tmp_path / "failed" / "m.mp3", tmp_path / "inbox" / ".m.tmp")
        (tmp_path / "inbox" / ".m.tmp").rename(tmp_path / "inbox" / "m.mp3")
        wait_for(lambda: r.counts()["done"] == 1, what="done on the second drop")
        assert r.svc.store.event_count("requeued") == 1
        assert r.svc.store.event_count("duplicate") == 0
    assert len(archived(tmp_path)) == 1


def test_file_removed_before_its_turn_is_cancelled(tmp_path, monkeypatch):
    monkeypatch.setenv("MINUTESD_FAKE_HEAR_S", "1.0")
    s = settings_for(tmp_path)
    with Running(s) as r:
        drop(tmp_path / "inbox", "a.mp3", "First.")
        wait_for(lambda: r.svc.store.jobs("state='running'"), what="first running")
        b = drop(tmp_path / "inbox", "b.mp3", "Second.")
        wait_for(lambda: len(r.svc.store.jobs()) == 2, what="second queued")
        b.unlink()
        wait_for(lambda: r.counts()["done"] == 1 and r.counts()["cancelled"] == 1,
                 what="cancelled")


def test_outputs_inside_the_inbox_are_refused(tmp_path):
    s = settings_for(tmp_path, processed=Path("inbox/processed"))
    assert Service(s, processor_factory=lambda s, log: FakeProcessor(s)).run() == 2


def test_one_daemon_per_state_folder(tmp_path):
    s = settings_for(tmp_path)
    with Running(s):
        other = Service(s, processor_factory=lambda s, log: FakeProcessor(s))
        assert other.run() == 2


def test_a_file_that_kills_the_daemon_does_not_crash_loop(tmp_path):
    s = settings_for(tmp_path, max_attempts=3)
    p = drop(tmp_path / "inbox", "killer.mp3", "Pretend this segfaults the decoder.")
    st = p.stat()
    store = JobStore(tmp_path / "state" / DB_NAME)
    sha = "f" * 64
    store.add(sha, p.name, str(p), st.st_size, st.st_mtime_ns, "2024-01-01", None)
    store.claim_next()
    for _ in range(3):  # three starts, each died during the step
        store.begin_step(sha, "transcribed")
    store.close()
    with Running(s) as r:
        wait_for(lambda: (tmp_path / "failed" / "killer.mp3.error.json").exists(),
                 what="failed")
        assert r.proc.calls == []  # not tried a 4th time
    info = json.loads((tmp_path / "failed" / "killer.mp3.error.json").read_text())
    assert "stopped 3 times" in info["error"] and info["attempts"] == 3


def test_llm_giving_no_valid_minutes_fails_at_once_and_a_redrop_resumes(tmp_path):
    s = settings_for(tmp_path, max_attempts=3)
    with Running(s) as r:
        drop(tmp_path / "inbox", "m.mp3", "NOMINUTES the model rambles.\nMore words.")
        wait_for(lambda: (tmp_path / "failed" / "m.mp3").exists(), what="failed")
        info = json.loads((tmp_path / "failed" / "m.mp3.error.json").read_text())
        assert info["step"] == "minutes_written" and info["permanent"]
        assert info["attempts"] == 1 and "no valid minutes" in info["error"]
        assert r.svc.store.event_count("retry") == 0  # not retried: same input, same answer
        wait_for(lambda: "/failed/" in r.svc.store.jobs()[0].path, what="move recorded")
        (tmp_path / "failed" / "m.mp3").rename(tmp_path / "inbox" / "m.mp3")
        wait_for(lambda: r.counts()["done"] == 1, what="done after the re-drop")
        hears = [c for c in r.proc.calls if c[0] == "hear"]
    assert hears == [("hear", "m.mp3")]  # the transcript was kept: not heard again


def test_polling_mode_for_network_shares(tmp_path):
    s = settings_for(tmp_path, polling=True, poll_interval_s=0.2, rescan_interval_s=0)
    with Running(s) as r:
        assert r.svc.watcher.mode == "polling"
        drop(tmp_path / "inbox", "share.mp3", "Seen by polling.")
        wait_for(lambda: r.counts()["done"] == 1, what="done")


def test_the_periodic_rescan_catches_what_the_watcher_missed(tmp_path):
    s = settings_for(tmp_path, rescan_interval_s=0.5)
    with Running(s) as r:
        r.svc.watcher._accept = lambda path: None  # the watcher goes deaf (overflow, NFS...)
        drop(tmp_path / "inbox", "missed.mp3", "Nobody told us.")
        wait_for(lambda: r.counts()["done"] == 1, what="found by a rescan")


def test_concurrency_runs_jobs_side_by_side_with_a_processor_each(tmp_path, monkeypatch):
    monkeypatch.setenv("MINUTESD_FAKE_HEAR_S", "1.0")
    s = settings_for(tmp_path, concurrency=2)
    built = []

    def factory(settings, log):
        built.append(FakeProcessor(settings))
        return built[-1]

    svc = Service(s, processor_factory=factory)
    th = threading.Thread(target=svc.run, daemon=True)
    th.start()
    try:
        wait_for(lambda: len(svc.workers) == 2, what="two workers")
        drop(tmp_path / "inbox", "a.mp3", "A.")
        drop(tmp_path / "inbox", "b.mp3", "B.")
        wait_for(lambda: len(svc.store.jobs("state='running'")) == 2, what="both running")
        wait_for(lambda: svc.store.counts()["done"] == 2, what="both done")
    finally:
        svc.stop()
        th.join(30)
    assert len(built) == 2 and all(len(p.calls) == 2 for p in built)  # one job each


def test_status_while_running(tmp_path):
    s = settings_for(tmp_path)
    with Running(s) as r:
        drop(tmp_path / "inbox", "m.mp3", "Status check.")
        wait_for(lambda: r.counts()["done"] == 1, what="done")
        wait_for(lambda: r.status()["daemon"]["running"], what="heartbeat")
        st = r.status()
    assert st["daemon"]["phase"] == "ready" and st["daemon"]["backends"]["watch"] == "inotify"
    assert st["recent"][0]["file"] == "m.mp3" and st["recent"][0]["archive"]
    assert collect_status(s)["daemon"]["running"] is False  # stopped now


def test_a_touched_file_is_the_same_recording(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("MINUTESD_FAKE_HEAR_S", "2.0")
    s = settings_for(tmp_path)
    with Running(s) as r:
        drop(tmp_path / "inbox", "a.mp3", "First.")
        wait_for(lambda: r.svc.store.jobs("state='running'"), what="first running")
        b = drop(tmp_path / "inbox", "b.mp3", "Second.")
        wait_for(lambda: len(r.svc.store.jobs()) == 2, what="second queued")
        os.utime(b, (time.time() + 5, time.time() + 5))  # touched while waiting its turn
        wait_for(lambda: r.counts()["done"] == 2, what="both done")
        assert r.counts()["cancelled"] == 0
        assert r.svc.store.event_count("duplicate") == 0
    assert len(archived(tmp_path)) == 2


def test_queue_database_full_is_reported_and_the_file_taken_later(tmp_path):
    import sqlite3

    s = settings_for(tmp_path, rescan_interval_s=0.5)
    with Running(s) as r:
        real_add = r.svc.store.add
        fails = {"n": 2}

        def add(*a, **k):
            if fails["n"] > 0:
                fails["n"] -= 1
                raise sqlite3.OperationalError("database or disk is full")
            return real_add(*a, **k)

        r.svc.store.add = add
        p = drop(tmp_path / "inbox", "m.mp3", "Queued once the disk has room.")
        wait_for(lambda: r.svc.health and "disk full" in r.svc.health, what="reported")
        assert p.exists()
        wait_for(lambda: r.counts()["done"] == 1, what="taken after all")
        assert r.svc.health is None
