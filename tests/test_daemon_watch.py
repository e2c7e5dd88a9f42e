"""Inbox candidates: ignore patterns, scans, the stability rule, and real watchdog events
(inotify and polling)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from daemon.confined import Confined, NotConfined
from daemon.settings import DEFAULT_IGNORE
from daemon.watch import InboxWatcher, StabilityTracker, ignored, scan


@pytest.mark.parametrize("rel,skip", [
    ("meeting.mp3", False),
    ("sub/meeting.m4a", False),
    ("meeting.mp3.part", True),
    ("meeting.mp3.crdownload", True),
    ("meeting.mp3~", True),
    (".meeting.mp3", True),
    (".DS_Store", True),
    ("@eaDir/meeting.mp3@SynoEAStream", True),
    ("sub/@eaDir/x.mp3", True),
    (".syncthing.meeting.mp3.tmp", True),
    ("~$notes.docx", True),
    ("meeting.tmp", True),
    ("#recycle/old.mp3", True),
])
def test_ignore_patterns(rel, skip):
    assert ignored(Path(rel), DEFAULT_IGNORE) is skip


def test_scan_prunes_ignored_folders(tmp_path):
    for rel in ("a.mp3", "b.mp3.part", "sub/c.wav", "@eaDir/d.mp3", ".hidden/e.mp3"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    os.symlink(tmp_path / "a.mp3", tmp_path / "link.mp3")
    assert [p.relative_to(tmp_path).as_posix() for p in scan(tmp_path, DEFAULT_IGNORE)] == [
        "a.mp3", "sub/c.wav"]


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_stable_size_and_mtime_for_the_set_time(tmp_path):
    clock = Clock()
    tr = StabilityTracker(5.0, clock)
    f = tmp_path / "a.mp3"
    f.write_bytes(b"x" * 10)
    tr.touch(f)  # found by a scan
    assert tr.ready() == []
    clock.t += 4
    with open(f, "ab") as fh:  # still growing
        fh.write(b"y")
    assert tr.ready() == []
    clock.t += 4.9
    assert tr.ready() == []  # 4.9 s since the last change
    clock.t += 0.2
    assert tr.ready() == [f]
    assert tr.ready() == []  # taken once


def test_open_for_writing_waits_for_close(tmp_path):
    clock = Clock()
    tr = StabilityTracker(2.0, clock)
    f = tmp_path / "a.mp3"
    f.write_bytes(b"x")
    for ev in ("created", "opened", "modified"):  # what inotify reports for a writer
        tr.touch(f, ev)
    tr.touch(f, "opened")  # somebody reads it meanwhile (our own hashing, a player)...
    tr.touch(f, "closed_no_write")  # ...and closes it: nets out
    clock.t += 60
    assert tr.ready() == []  # quiet for a minute, but still open (a paused upload)
    tr.touch(f, "closed")  # IN_CLOSE_WRITE
    clock.t += 1.9
    assert tr.ready() == []
    clock.t += 0.2
    assert tr.ready() == [f]


def test_moved_in_and_opened_before_we_looked(tmp_path):
    clock = Clock()
    tr = StabilityTracker(1.0, clock)
    moved, early = tmp_path / "m.mp3", tmp_path / "e.mp3"
    moved.write_bytes(b"x")
    early.write_bytes(b"x")
    tr.touch(moved, "created")  # an unmatched IN_MOVED_TO arrives as "created", no open
    tr.touch(early, "modified")  # written by a handle opened before the daemon started
    clock.t += 5
    assert tr.ready() == [moved]
    tr.touch(early, "closed")
    clock.t += 1.1
    assert tr.ready() == [early]


def test_vanished_candidates_are_dropped(tmp_path):
    tr = StabilityTracker(0.0)
    f = tmp_path / "a.mp3"
    f.write_bytes(b"x")
    tr.touch(f)
    f.unlink()
    assert tr.ready() == [] and not tr.pending


def _events(w: InboxWatcher, want, timeout=10.0):
    got: list[tuple[str, Path]] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got += w.drain()
        if want(got):
            return got
        time.sleep(0.05)
    return got


def test_inotify_sees_close_and_rename(tmp_path):
    inbox = tmp_path / "inbox"
    w = InboxWatcher(inbox, DEFAULT_IGNORE, polling=False, poll_interval_s=1)
    w.start()
    try:
        assert w.mode == "inotify"
        part = inbox / "talk.mp3.part"
        with open(part, "wb") as fh:
            fh.write(b"x" * 1000)
        os.rename(part, inbox / "talk.mp3")
        with open(inbox / "other.wav", "wb") as fh:
            fh.write(b"y")
        got = _events(w, lambda g: ("moved", inbox / "talk.mp3") in g
                      and ("closed", inbox / "other.wav") in g)
        assert ("moved", inbox / "talk.mp3") in got
        assert ("closed", inbox / "other.wav") in got
        assert not any(p.name.endswith(".part") for _, p in got)  # ignored until renamed
    finally:
        w.stop()


def test_polling_observer_for_network_shares(tmp_path):
    inbox = tmp_path / "inbox"
    w = InboxWatcher(inbox, DEFAULT_IGNORE, polling=True, poll_interval_s=0.2)
    w.start()
    try:
        assert w.mode == "polling"
        (inbox / "a.mp3").write_bytes(b"x")
        got = _events(w, lambda g: any(p.name == "a.mp3" for _, p in g))
        assert any(k == "created" and p.name == "a.mp3" for k, p in got)
    finally:
        w.stop()


def test_a_writer_that_paused_and_appended_again_is_waited_for_longer(tmp_path):
    clock = Clock()
    tr = StabilityTracker(1.0, clock)
    f = tmp_path / "rec.mp3"
    f.write_bytes(b"x")
    tr.touch(f, "closed")
    clock.t += 1.0
    assert tr.ready() == [f]  # looked complete: taken
    clock.t += 2.0
    with open(f, "ab") as fh:  # ...but the recorder reopens it and appends after 3 s
        fh.write(b"y")
    tr.touch(f, "modified")
    tr.touch(f, "closed")
    assert tr.wait_s(f) == 6.0  # twice the pause seen
    clock.t += 5.9
    assert tr.ready() == []
    clock.t += 0.2
    assert tr.ready() == [f]


def test_short_pauses_do_not_change_the_rule(tmp_path):
    clock = Clock()
    tr = StabilityTracker(5.0, clock)
    f = tmp_path / "rec.mp3"
    f.write_bytes(b"x")
    tr.touch(f)
    clock.t += 4.0
    f.write_bytes(b"xy")
    tr.touch(f, "modified")
    assert tr.wait_s(f) == 5.0


def test_confined_never_follows_a_link(tmp_path):
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.mp3").write_text("secret")
    (inbox / "real" / "ok.mp3").write_text("ok")
    os.symlink(outside, inbox / "d")
    os.symlink(outside / "secret.mp3", inbox / "f.mp3")
    c = Confined(inbox)
    with c.open(inbox / "real" / "ok.mp3") as (fd, st):
        assert os.read(fd, 10) == b"ok" and st.st_size == 2
    for bad in ("d/secret.mp3", "f.mp3", "../outside/secret.mp3", str(outside / "secret.mp3")):
        with pytest.raises(OSError), c.open(bad):
            pass
        assert c.lstat(bad) is None
    assert [str(p.relative_to(inbox)) for p in scan(c, [])] == ["real/ok.mp3"]
    # moving out: a folder swapped for a link after the file was seen moves nothing outside
    os.rename(inbox / "real", tmp_path / "moved-away")
    os.symlink(outside, inbox / "real")
    (outside / "ok.mp3").write_text("outside")
    with pytest.raises(OSError):
        c.move_out(inbox / "real" / "ok.mp3", tmp_path / "processed" / "ok.mp3")
    assert (outside / "ok.mp3").read_text() == "outside"
    assert not (tmp_path / "processed" / "ok.mp3").exists()
    with pytest.raises(NotConfined):
        c.rel(tmp_path / "elsewhere.mp3")
