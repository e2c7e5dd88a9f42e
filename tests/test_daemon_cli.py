"""`minutesd search`, `status` and `doctor` as a user sees them (text and --json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_archive import record

import daemon.doctor as doctor_mod
from daemon.archive.local import LocalArchive
from daemon.cli import main


@pytest.fixture(autouse=True)
def _fresh_logging():
    """`main()` points structlog at this test's captured stderr; later tests must not log
    into that closed file."""
    import structlog

    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> Path:
    (tmp_path / "s.yaml").write_text(f"daemon:\n  root: {tmp_path}\n  state_dir: state\n")
    monkeypatch.setenv("MINUTESD_CONFIG", str(tmp_path / "s.yaml"))
    return tmp_path


def test_search_text_and_json(cfg, capsys):
    a = LocalArchive(cfg / "archive")
    a.store(record("1" * 64, "Library renovation", [
        "The electrical work will cost more than we planned.",
        "David will collect three quotes."], date="2024-05-14"))
    a.store(record("2" * 64, "Atlas launch", ["The login crash affects Android phones."],
                   date="2024-06-03", time=None))
    assert main(["search", "electrical", "work"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2024-05-14 09:30  Library renovation"
    assert "**electrical** **work**" in out[1]  # not a terminal: markdown bold
    assert out[2].strip().endswith("2024-05-14 0930 Library renovation")
    assert main(["search", "--json", '"login crash"']) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [h["title"] for h in hits] == ["Atlas launch"]
    assert hits[0]["date"] == "2024-06-03" and "**login crash**" in hits[0]["snippet"]
    assert main(["search", "--json", "crash login"]) == 1  # one argument: a phrase
    capsys.readouterr()
    assert main(["search", "--json", "crash", "login"]) == 0  # two words, any order
    capsys.readouterr()
    assert main(["search", "nothing-like-this"]) == 1
    assert "no matches" in capsys.readouterr().err
    assert main(["search", "( )"]) == 2  # nothing searchable


def test_search_before_anything_was_archived(cfg, capsys):
    assert main(["search", "x"]) == 1
    assert "no archive yet" in capsys.readouterr().err


def test_status_without_and_with_a_queue(cfg, capsys):
    assert main(["status"]) == 0
    assert "no job queue yet" in capsys.readouterr().out
    from daemon.service.queue import DB_NAME, JobStore

    s = JobStore(cfg / "state" / DB_NAME)
    s.add("a" * 64, "ok.mp3", "/in/ok.mp3", 1, 1, "2024-01-01", None)
    s.add("b" * 64, "slow.mp3", "/in/slow.mp3", 2, 2, "2024-01-01", None)
    for step in ("transcribed", "minutes_written", "archived", "done"):
        s.begin_step("a" * 64, step)
        s.finish_step("a" * 64, step, **({"archive_ref": "/arch/x"} if step == "archived" else {}))
    s.begin_step("b" * 64, "transcribed")
    s.retry_later("b" * 64, "transcribed", "RuntimeError: boom", 300)
    s.note("failed", "c" * 64, "bad.mp3", "transcribed", {"error": "cannot decode"})
    s.note("duplicate", "a" * 64, "ok copy.mp3", None, {"original": "ok.mp3",
                                                          "moved_to": "/dup/ok copy.mp3"})
    s.close()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "daemon:   not running" in out
    assert "1 queued, 0 running, 1 done" in out
    assert "1 moved to failed/, 1 duplicates" in out
    assert "slow.mp3" in out and "retry in" in out and "RuntimeError: boom" in out
    assert "ok.mp3  -> /arch/x" in out
    assert "bad.mp3  [transcribed] cannot decode" in out
    assert "ok copy.mp3  same as ok.mp3" in out
    assert main(["status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["counts"]["done"] == 1 and st["duplicates"] == 1 and st["failed_files"] == 1


def test_doctor_all_good_and_json(cfg, capsys, monkeypatch):
    monkeypatch.setattr(doctor_mod, "check_gpu", lambda s: [doctor_mod.Check("info", "gpu", "x")])
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "ok    layout" in out and "ok    sqlite" in out and "ok    asr model" in out
    assert "info  inbox" in out and "will be created" in out
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and {c["name"] for c in data["checks"]} >= {"settings", "layout", "llm model"}


def test_doctor_says_what_to_fix(cfg, capsys, monkeypatch):
    (cfg / "s.yaml").write_text(f"daemon:\n  root: {cfg}\n  state_dir: state\n"
                                "  processed: inbox/done\n"
                                "asr:\n  model: embedded:nope\n"
                                "llm:\n  backend: openai\n")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (cfg / "inbox").mkdir()
    (cfg / "failed").mkdir()
    real_access = doctor_mod.os.access
    monkeypatch.setattr(doctor_mod.os, "access",
                        lambda p, m: False if str(p).endswith("failed") else real_access(p, m))
    monkeypatch.setattr(doctor_mod, "_mount_of", lambda p: ("/srv", "nfs4"))
    monkeypatch.setattr(doctor_mod, "check_gpu", lambda s: [doctor_mod.Check("info", "gpu", "x")])
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  layout" in out and "inside the inbox" in out
    assert "FAIL  failed" in out and "fix: chown" in out
    assert "WARN  inbox fs" in out and "daemon.polling: true" in out
    assert "FAIL  asr model" in out and "embedded:base or embedded:tiny.en" in out
    assert "FAIL  llm credentials" in out and "OPENAI_API_KEY" in out
    assert "to fix" in out.splitlines()[-1]


def test_doctor_shows_a_hostile_path_escaped(cfg, capsys, monkeypatch):
    """A folder name with an ANSI escape reaches doctor's text escaped, its JSON exact."""
    evil = "in\x1b[2Jbox"
    (cfg / "s.yaml").write_text(f"daemon:\n  root: {cfg}\n  state_dir: state\n"
                                f"  inbox: {json.dumps(evil)}\n")
    monkeypatch.setattr(doctor_mod, "check_gpu", lambda s: [doctor_mod.Check("info", "gpu", "x")])
    main(["doctor"])
    out = capsys.readouterr().out
    assert "\x1b[2J" not in out and "in\\x1b[2Jbox" in out
    main(["doctor", "--json"])
    checks = json.loads(capsys.readouterr().out)["checks"]
    assert any(evil in c["message"] for c in checks)
