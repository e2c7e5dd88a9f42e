"""The local archive: folder layout, exactly-once store (also across crashes inside it), and
FTS5 search with bm25 ranking and highlighted snippets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import daemon.archive.local as archive_mod
from daemon.archive.base import (
    Archive,
    ArchiveRecord,
    SearchableArchive,
    folder_name,
    render_snippet,
    safe_title,
)
from daemon.archive.local import MARKER, STAGING, LocalArchive, fts_query
from daemon.types import ActionItem, Minutes, Speaker, SpeakerSegment, SpeakerTranscript


def record(key: str, title: str, lines: list[str], date: str = "2024-05-14",
           time: str | None = "09:30", summary: str = "") -> ArchiveRecord:
    t = SpeakerTranscript(
        duration_s=60.0, speakers=[Speaker("SPEAKER_00", "Maria", 30.0),
                                   Speaker("SPEAKER_01", None, 30.0)],
        segments=[SpeakerSegment(i * 5.0, i * 5.0 + 4, f"SPEAKER_{i % 2:02d}", ln)
                  for i, ln in enumerate(lines)], language="en", source="x.mp3")
    m = Minutes(title=title, date=date, attendees=["Maria", "Speaker 2"],
                summary=summary or lines[0], discussion_points=lines[:2], decisions=[],
                action_items=[ActionItem("Maria", f"Follow up on {title}", "Friday")],
                duration_s=60.0, speakers=t.speakers)
    return ArchiveRecord(key=key, source_name="x.mp3", minutes=m, transcript=t, date=date,
                         time=time)


def folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/*/*/minutes.json"))


def test_protocols():
    a = LocalArchive(Path("/nonexistent"))
    assert isinstance(a, Archive) and isinstance(a, SearchableArchive)


def test_layout_and_files(tmp_path):
    a = LocalArchive(tmp_path)
    ref = a.store(record("k1" * 32, "Library renovation: budget / wiring?",
                         ["The roof came in under budget.", "The wiring is older than we thought."]))
    p = Path(ref)
    assert p == tmp_path / "2024" / "05" / "2024-05-14 0930 Library renovation budget wiring"
    assert sorted(x.name for x in p.iterdir()) == sorted(
        [MARKER, "minutes.json", "minutes.md", "transcript.json", "transcript.md"])
    assert json.loads((p / "minutes.json").read_text())["title"].startswith("Library renovation")
    assert json.loads((p / "minutes.json").read_text())["time"] == "09:30"
    assert json.loads((p / "transcript.json").read_text())["segments"][1]["text"].startswith("The wiring")
    assert json.loads((p / MARKER).read_text())["key"] == "k1" * 32
    assert "# Library renovation" in (p / "minutes.md").read_text()
    assert a.lookup("k1" * 32) == ref and a.lookup("nope") is None
    assert not (tmp_path / STAGING).exists() or not any((tmp_path / STAGING).iterdir())


def test_store_is_idempotent_per_key(tmp_path):
    a = LocalArchive(tmp_path)
    rec = record("a" * 64, "Weekly sync", ["Hello there."])
    first = a.store(rec)
    rec.minutes.title = "A different title the second time"
    assert a.store(rec) == first
    assert LocalArchive(tmp_path).store(rec) == first  # also from a new process
    assert len(folders(tmp_path)) == 1 and a.count() == 1
    assert len(a.search("hello")) == 1


def test_same_name_different_meetings_get_distinct_folders(tmp_path):
    a = LocalArchive(tmp_path)
    r1 = a.store(record("a" * 64, "Weekly sync", ["One."]))
    r2 = a.store(record("b" * 64, "Weekly sync", ["Two."]))
    assert r1 != r2 and r2.endswith("Weekly sync (2)")
    (tmp_path / "2024/05/2024-05-14 0930 Weekly sync (3)").mkdir()  # somebody's own folder
    r3 = a.store(record("c" * 64, "Weekly sync", ["Three."]))
    assert r3.endswith("(4)")


def test_unknown_time_and_odd_titles():
    assert folder_name("2024-01-02", None, "x") == "2024/01/2024-01-02 0000 x"
    assert safe_title("") == "Meeting"
    assert safe_title("  ../../etc/passwd  ") == "etc passwd"
    assert safe_title("a\x00b\nc") == "a b c"
    assert len(safe_title("word " * 100)) <= 80


class Crash(BaseException):
    pass


@pytest.mark.parametrize("point", ["archive:reserved", "archive:staged", "archive:moved",
                                   "archive:indexed"])
def test_crash_inside_store_then_retry_archives_once(tmp_path, monkeypatch, point):
    def crash(name):
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(archive_mod, "crash_point", crash)
    rec = record("d" * 64, "Launch review", ["The login crash affects two percent of users."])
    with pytest.raises(Crash):
        LocalArchive(tmp_path).store(rec)
    monkeypatch.setattr(archive_mod, "crash_point", lambda name: None)
    a = LocalArchive(tmp_path)  # a fresh process
    if point != "archive:indexed":
        assert a.lookup(rec.key) is None  # not done until indexed
    ref = a.store(rec)
    assert a.store(rec) == ref
    assert folders(tmp_path) == [Path(ref)]
    assert a.count() == 1 and len(a.search("login crash")) == 1
    a.clean_staging()
    assert not (tmp_path / STAGING).exists() or not any((tmp_path / STAGING).iterdir())


def test_disk_full_while_writing_leaves_no_half_folder(tmp_path, monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(archive_mod, "write_transcript", full)
    rec = record("e" * 64, "Sync", ["Words."])
    with pytest.raises(OSError):
        LocalArchive(tmp_path).store(rec)
    assert folders(tmp_path) == []
    assert not any((tmp_path / STAGING).glob("*"))
    monkeypatch.undo()
    assert Path(LocalArchive(tmp_path).store(rec)).is_dir()


def test_fts_query_is_safe():
    assert fts_query("budget wiring") == '"budget" "wiring"'
    assert fts_query('"login crash" android') == '"login crash" "android"'
    assert fts_query("launch-day") == '"launch day"'
    assert fts_query("renov*") == '"renov"*'
    assert fts_query('AND OR NOT ( ) " ^') == '"AND" "OR" "NOT"'
    with pytest.raises(ValueError):
        fts_query("  ( )  ")


def test_search_ranks_highlights_and_filters(tmp_path):
    a = LocalArchive(tmp_path)
    a.store(record("1" * 64, "Library renovation", [
        "The electrical work will cost more than we planned.",
        "The wiring in the east wing is older than we thought.",
        "David will collect three quotes for the electrical work."], date="2024-05-14"))
    a.store(record("2" * 64, "Atlas launch review", [
        "We fixed forty two bugs since last week.",
        "The login crash affects older Android phones.",
        "Samuel will run the load test before launch day."], date="2024-06-01", time=None))
    a.store(record("3" * 64, "Budget", [
        "The quarterly budget review covered travel, software licences and the new desks.",
        "Someone asked whether the electrical contractor had sent an invoice yet.",
        "The finance team will circulate the spreadsheet before the next review meeting."],
        date="2024-07-01"))
    hits = a.search("electrical")
    assert [h.key[0] for h in hits][:1] == ["1"]  # bm25: two mentions beat one
    assert {h.key[0] for h in hits} == {"1", "3"}
    h = hits[0]
    assert h.date == "2024-05-14" and h.title == "Library renovation"
    assert "\x02" in h.snippet and render_snippet(h.snippet, "[", "]").count("[") >= 1
    assert "[electrical]" in render_snippet(h.snippet, "[", "]").lower()
    js = h.as_json()
    assert "**" in js["snippet"] and js["ref"].endswith("Library renovation")
    assert [h.key[0] for h in a.search('"login crash"')] == ["2"]
    assert a.search('"crash login"') == []  # a phrase is a phrase
    assert [h.key[0] for h in a.search("android phones")] == ["2"]
    assert [h.key[0] for h in a.search("atlas")] == ["2"]  # titles are indexed
    assert [h.key[0] for h in a.search("quotes")] == ["1"]  # action items too
    assert len(a.search("electrical", limit=1)) == 1
    assert {h.key[0] for h in a.search("electrical OR android", raw=True)} == {"1", "2", "3"}
    # porter stemming: "planning" finds "planned"
    assert [h.key[0] for h in a.search("planning")] == ["1"]
