"""Names from outside the daemon: a recording's name of up to 255 bytes (multibyte too) and a
name, title or transcript carrying control characters, ANSI escapes or bidi overrides.

Long names go through the real filing paths (the daemon in-process, fake models): every
name minutesd derives from them (processed/, failed/ with its error.json, duplicates/, the
" (2)" of a second file of that name, the archive folder of a long title) fits in 255 bytes,
keeps its extension and is cut at a character boundary, and nothing stays in the inbox.
Control characters reach no human-facing surface raw; JSON stays exact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import structlog
from test_daemon_service import Running, archived, settings_for, wait_for

from daemon.files import NAME_MAX, NAME_RESERVE, fit_name, unique_path
from daemon.logs import configure_logging
from daemon.render import minutes_markdown, transcript_markdown
from daemon.report import search, status
from daemon.text import cut_utf8, printable
from daemon.types import Minutes, Speaker, SpeakerSegment, SpeakerTranscript


@pytest.fixture(autouse=True)
def _fresh_logging():
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def nbytes(name: str) -> int:
    return len(os.fsencode(name))


def name_of(n: int, unit: str, ext: str = ".mp3") -> str:
    """A file name of exactly ``n`` bytes (``unit`` repeated, padded with 'x', then ext)."""
    body = n - nbytes(ext)
    k = body // nbytes(unit)
    s = unit * k + "x" * (body - k * nbytes(unit))
    assert nbytes(s + ext) == n
    return s + ext


# ------------------------------------------------------------------ the helpers


def test_cut_utf8_never_splits_a_character():
    for unit in ("a", "é", "€", "🎙"):
        s = unit * 100
        for limit in range(0, 60):
            cut = cut_utf8(s, limit)
            assert nbytes(cut) <= limit and nbytes(cut) > limit - nbytes(unit)
            assert s.startswith(cut)


@pytest.mark.parametrize("n", [235, 250, 255])
@pytest.mark.parametrize("unit", ["a", "é", "会", "🎙"])
def test_fit_name_keeps_room_the_extension_and_whole_characters(n, unit):
    name = name_of(n, unit)
    fitted = fit_name(name)
    assert nbytes(fitted) <= NAME_MAX - NAME_RESERVE
    assert fitted.endswith(".mp3") and fitted[:-4] and name.startswith(fitted[:-4])
    fitted.encode("utf-8")  # whole characters only (a split one would not encode back)
    assert fit_name("short name.mp3") == "short name.mp3"


def test_unique_path_of_a_fitted_name_still_fits(tmp_path):
    name = fit_name(name_of(255, "🎙"))
    for _ in range(3):
        p = unique_path(tmp_path, name)
        p.write_text("x")
        sidecar = p.with_name(p.name + ".error.json")
        sidecar.write_text("{}")  # would raise ENAMETOOLONG if the name had no room
        assert nbytes(p.name) + NAME_RESERVE - 8 <= NAME_MAX  # " (99999)" is in the reserve
    assert len(list(tmp_path.iterdir())) == 6


# ------------------------------------------------------------------ long names, real filing


def drop(inbox: Path, name: str, text: str) -> Path:
    """Written beside the inbox, renamed in whole (a 255-byte name has no room for a temp)."""
    tmp = inbox.parent / "drop.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.rename(tmp, inbox / name)
    return inbox / name


LONG = [name_of(235, "a"), name_of(250, "é"), name_of(255, "会"), name_of(255, "🎙", ".wav"),
        name_of(254, "ab", ".m4a")]


def test_long_names_through_every_filing_path(tmp_path):
    s = settings_for(tmp_path)
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    good, bad = LONG[:3], LONG[3:]
    # a title of six 4-byte-character words: 80 characters but 320 bytes as a folder name
    long_title = " ".join(["🎙" * 13] * 6)
    with Running(s) as r:
        for i, n in enumerate(good):
            drop(inbox, n, f"{long_title if i == 0 else f'Meeting number {i}'}.\nSecond line.")
        for i, n in enumerate(bad):
            drop(inbox, n, f"CORRUPT {i}\n")
        (inbox / "sub" / LONG[1]).write_bytes(b"")  # refused before it becomes a job
        wait_for(lambda: r.counts()["done"] == 3 and r.counts()["failed"] == 2, what="filed")
        drop(inbox, LONG[2], "Meeting number 2 again.\nA different recording.")  # " (2)"
        drop(inbox, LONG[0], "Meeting number 1.\nSecond line.")  # same content as LONG[1]
        wait_for(lambda: r.counts()["done"] == 4 and r.status()["duplicates"] == 1
                 and r.status()["failed_files"] == 3, what="second round filed")
        st = r.status()
    assert r.rc == 0
    assert [p for p in inbox.rglob("*") if p.is_file()] == []  # nothing stayed behind
    processed = sorted(p.name for p in (tmp_path / "processed").iterdir())
    assert len(processed) == 4 and sum(" (2)" in n for n in processed) == 1
    failed = [p for p in (tmp_path / "failed").rglob("*") if p.is_file()]
    errors = [p for p in failed if p.name.endswith(".error.json")]
    assert len(failed) == 6 and len(errors) == 3
    for e in errors:
        info = json.loads(e.read_text())
        assert info["file"] in LONG  # the full name is kept where it is only data
        assert e.with_name(e.name[:-len(".error.json")]).exists()  # beside its recording
    assert len(list((tmp_path / "duplicates").iterdir())) == 1
    folders = archived(tmp_path)
    assert len(folders) == 4
    for name in [p.name for p in tmp_path.rglob("*")]:
        assert nbytes(name) <= NAME_MAX
    for name in processed + [p.name for p in failed if p not in errors]:
        assert Path(name).suffix in (".mp3", ".wav", ".m4a"), name
        name.encode("utf-8")
    for f in st["failures"]:  # what the log and status say is where the file is
        assert f.get("moved_to") and Path(f["moved_to"]).exists(), f


# ------------------------------------------------------------------ controls and escapes

EVIL_BAD = "evil\x1b[2J\x1b]0;pwned\x07\u202egpj.mp3"  # clears the screen, retitles, reverses
EVIL_GOOD = "ok\x9b31m\tnote\u2066.mp3"  # a one-character CSI (C1), a tab, a bidi isolate
EVIL_TEXT = "Budget \x1b[31mred\x1b[0m review.\nWiring \u202eis old."
RAW = ("\x1b", "\x07", "\x9b", "\t", "\u202e", "\u2066")


def test_printable_escapes_controls_and_bidi_and_nothing_else():
    assert printable("a\x1b[31mb\x00c\x7fd\x85e\u202ef\u2069g") == \
        "a\\x1b[31mb\\x00c\\x7fd\\x85e\\u202ef\\u2069g"
    assert printable("line\nnext\ttab") == "line\\x0anext\\x09tab"
    plain = "Réunion 会议 🎙 — \"quoted\" 'x' \\ done"
    assert printable(plain) == plain


def assert_clean(text: str) -> None:
    for c in RAW:
        assert c not in text, (c, text)


def test_console_log_escapes_and_json_log_is_exact(capsys):
    configure_logging("info")
    structlog.get_logger("t").info("received", file=EVIL_BAD)
    err = capsys.readouterr().err
    assert_clean(err)
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07\\u202egpj.mp3" in err
    configure_logging("info", json_lines=True)
    structlog.get_logger("t").info("received", file=EVIL_BAD)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(line)["file"] == EVIL_BAD


def test_render_escapes_what_came_from_outside():
    t = SpeakerTranscript(duration_s=9.0, speakers=[Speaker("S0", "Ann\x1b[5m", 9.0)],
                          segments=[SpeakerSegment(0.0, 9.0, "S0", EVIL_TEXT)],
                          source=f"/in/{EVIL_BAD}")
    md = transcript_markdown(t, title="T\x1b[1m")
    assert_clean(md)
    assert "evil\\x1b[2J" in md and "Ann\\x1b[5m" in md and "\\x1b[31mred" in md
    m = Minutes(title="Roof\x1b[31m", date="2026-01-02", attendees=["Ann\u202e"],
                summary=EVIL_TEXT, discussion_points=[EVIL_TEXT], decisions=["ok\x07"],
                action_items=[], duration_s=9.0, speakers=[])
    mm = minutes_markdown(m)
    assert_clean(mm)
    assert "# Roof\\x1b[31m" in mm and "\\u202e" in mm


def test_status_search_and_archive_show_names_escaped_json_exact(tmp_path, capsys):
    s = settings_for(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with Running(s) as r:
        drop(inbox, EVIL_BAD, "CORRUPT\n")
        drop(inbox, EVIL_GOOD, EVIL_TEXT)
        wait_for(lambda: r.counts()["done"] == 1 and r.status()["failed_files"] == 1,
                 what="filed")
    capsys.readouterr()
    status(s)
    out = capsys.readouterr().out
    assert_clean(out)
    assert "evil\\x1b[2J" in out and "ok\\x9b31m\\x09note\\u2066.mp3" in out
    status(s, as_json=True)
    st = json.loads(capsys.readouterr().out)
    assert st["failures"][0]["file"] == EVIL_BAD and st["recent"][0]["file"] == EVIL_GOOD
    assert search(s, "wiring") == 0
    out = capsys.readouterr().out
    assert_clean(out)
    assert "\\x1b[31mred" in out and "**Wiring**" in out  # the match still marked
    search(s, "wiring", as_json=True)
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert "\x1b[31mred" in hit["title"]  # exact
    (folder,) = archived(tmp_path)
    assert_clean(folder.name)  # no controls in a folder name either
    for md in ("transcript.md", "minutes.md"):
        text = (folder / md).read_text(encoding="utf-8")
        assert_clean(text)
        assert "\\x1b[31m" in text
