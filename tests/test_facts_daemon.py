"""The daemon with per-recording facts (fake models): a recording and its sidecar become one
meeting that uses the facts, a late sidecar is waited for, a bad one fails its recording with
the reason, and the sidecar is filed with its recording; a sidecar is never a recording."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from test_daemon_service import Running, archived, drop, settings_for, wait_for

SIDECAR = """\
title: Roof budget review
date: 2026-11-30
time: "14:00"
attendees: [Grace Kim, Tomas Novak]
speakers: 2
"""


def _minutes(root: Path) -> list[dict]:
    return [json.loads((p / "minutes.json").read_text()) for p in archived(root)]


def test_recording_and_sidecar_become_one_meeting_filed_together(tmp_path):
    s = settings_for(tmp_path)
    inbox = tmp_path / "inbox" / "team"
    with Running(s) as r:
        drop(inbox, "roof.meeting.yaml", SIDECAR)
        time.sleep(0.6)  # longer than stable_seconds: a sidecar alone is never taken
        assert r.counts() == {k: 0 for k in r.counts()}
        said = "The roof came in under budget.\nWiring is old."
        drop(inbox, "roof.mp3", said)
        wait_for(lambda: r.counts()["done"] == 1, what="done")
        (info,) = r.proc.infos
        assert info.attendees == ["Grace Kim", "Tomas Novak"] and info.speakers == 2
        # the step heard with the facts and still kept the voices, under the job's key
        assert r.proc.remembered == [hashlib.sha256(said.encode()).hexdigest()]
        (m,) = _minutes(tmp_path)
        assert m["title"] == "Roof budget review"
        assert (m["date"], m["time"], m["date_source"]) == ("2026-11-30", "14:00",
                                                           "meeting facts")
        assert [sp["name"] for sp in m["speakers"]] == ["Grace Kim", "Tomas Novak"]
        md = (archived(tmp_path)[0] / "minutes.md").read_text()
        assert "2026-11-30 14:00 (from the meeting's facts file)" in md
        processed = tmp_path / "processed" / "team"
        wait_for(lambda: (processed / "roof.mp3").exists(), what="filed")
        assert (processed / "roof.meeting.yaml").read_text() == SIDECAR
        assert list(inbox.iterdir()) == []
        assert r.counts()["done"] == 1 and r.counts()["failed"] == 0


def test_late_sidecar_is_waited_for(tmp_path):
    s = settings_for(tmp_path, facts_wait_s=4.0)
    inbox = tmp_path / "inbox"
    with Running(s) as r:
        drop(inbox, "late.mp3", "Launch readiness.\nThe login crash is fixed.")
        time.sleep(1.0)  # complete after 0.2 s; waiting for its facts now
        assert r.counts()["queued"] + r.counts()["running"] + r.counts()["done"] == 0
        drop(inbox, "late.meeting.json", json.dumps({"attendees": ["Ana Ruiz", "Bo Li"],
                                                     "language": "de"}))
        wait_for(lambda: r.counts()["done"] == 1, what="done")
        (info,) = r.proc.infos
        assert info.attendees == ["Ana Ruiz", "Bo Li"] and info.language == "de"
        wait_for(lambda: (tmp_path / "processed" / "late.meeting.json").exists(),
                 what="sidecar filed")

        # no sidecar at all: taken once facts_wait_s has passed, without facts
        t0 = time.monotonic()
        drop(inbox, "alone.mp3", "Nobody wrote anything down.\nStill a meeting.")
        wait_for(lambda: r.counts()["done"] == 2, what="second done")
        assert time.monotonic() - t0 >= 4.0
        assert r.proc.infos[-1] is None
        assert _minutes(tmp_path)[-1]["date_source"] in ("file time", "file name")


def test_bad_sidecar_fails_the_recording_with_the_reason(tmp_path):
    s = settings_for(tmp_path)
    inbox = tmp_path / "inbox"
    with Running(s) as r:
        drop(inbox, "bad.meeting.yaml", "attendees: [Grace Kim]\natendees_count: 3\n")
        drop(inbox, "bad.mp3", "The roof came in under budget.\nWiring is old.")
        failed = tmp_path / "failed"
        err = wait_for(lambda: next(failed.glob("bad.mp3.error.json"), None), what="failed")
        info = json.loads(err.read_text())
        assert info["permanent"] is True and info["step"] == "transcribed"
        assert info["error"].startswith("bad.meeting.yaml: unknown field(s) atendees_count")
        assert "Fix:" in info["error"]
        wait_for(lambda: (failed / "bad.mp3").exists(), what="moved")
        assert (failed / "bad.meeting.yaml").exists()  # filed with its recording
        assert r.proc.calls == []  # never heard: nothing made of a recording without its facts
        assert r.counts()["failed"] == 1

        # fixed and dropped again: heard from the start with the new facts
        (failed / "bad.meeting.yaml").rename(inbox / "bad.meeting.yaml")
        (inbox / "bad.meeting.yaml").write_text("attendees: [Grace Kim]\nspeakers: 1\n")
        (failed / "bad.mp3").rename(inbox / "bad.mp3")
        wait_for(lambda: r.counts()["done"] == 1, what="done after the fix")
        assert r.proc.infos[-1].speakers == 1


def test_linked_sidecar_is_refused_not_followed(tmp_path):
    s = settings_for(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside.yaml"
    outside.write_text("title: Secret\n")
    (inbox / "x.meeting.yaml").symlink_to(outside)
    with Running(s) as r:
        drop(inbox, "x.mp3", "Hello there.\nGeneral Kenobi.")
        err = wait_for(lambda: next((tmp_path / "failed").glob("x.mp3.error.json"), None),
                       what="failed")
        assert "x.meeting.yaml is a link or a special file" in json.loads(err.read_text())["error"]
        assert r.proc.calls == []
    assert (inbox / "x.meeting.yaml").is_symlink()  # the link itself stays where it was
    assert outside.read_text() == "title: Secret\n"
