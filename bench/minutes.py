#!/usr/bin/env python3
"""Minutes quality over many meetings: the whole pipeline per meeting, scored with score.py.

    .venv/bin/python bench/minutes.py ../shared/eval/dev /work/scratch/own --out OUT
    .venv/bin/python bench/minutes.py ... --out OUT --reuse      # hear once, re-run the minutes
    .venv/bin/python bench/minutes.py ... --json OUT/scores.json --enroll

Each argument is a meeting folder (``meeting.wav`` or ``meeting.mp3`` + ``truth.json``, as the
eval kit's ``make_meeting.py`` writes them) or a folder of such folders. Per meeting, through
the daemon's own classes (``Processor``): hear (decode, diarize, transcribe, join, name the
speakers), then write the minutes; then score.py (read in place from the eval kit) and the
evidence check (:func:`daemon.minutes.evidence.check_minutes`: every item's quoted sentences
are in the transcript, said by whom the item says). A table per meeting and the sums.

* ``--roster truth`` (default): the meeting's people (from truth.json) are its attendee list,
  as a user gives it in the recording's facts file or ``minutes.roster``; ``--roster none``
  gives nothing.
* ``--enroll``: the ``voices/`` clips of every meeting of a series (``truth.json`` "series")
  are enrolled into a fresh profiles file first, as the regular members would have been.
* ``--reuse``: the heard transcript (named speakers) is kept as ``OUT/NAME/heard.json``; with
  ``--reuse`` it is read back, so only the minutes are re-written (the LLM is the slow part to
  iterate on). Scores are the same as a full run's as long as hearing has not changed.

Seconds are wall clock on this machine, model loading excluded (the daemon loads once).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def meeting_dirs(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "truth.json").is_file():
            out.append(p)
        else:
            out += sorted(d for d in p.iterdir() if (d / "truth.json").is_file())
    return out


def recording(d: Path) -> Path:
    for name in ("meeting.wav", "meeting.mp3"):
        if (d / name).is_file():
            return d / name
    raise SystemExit(f"{d}: no meeting.wav or meeting.mp3")


def frac(s: str) -> tuple[int, int]:
    a, b = s.split("/")
    return int(a), int(b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--eval", default=str(REPO.parent / "shared" / "eval"),
                    help="the eval kit (for score.py)")
    ap.add_argument("--out", required=True, help="one folder per meeting is written here")
    ap.add_argument("--config", default=None, help="settings.yaml (default: the shipped one)")
    ap.add_argument("--roster", choices=("truth", "none"), default="truth")
    ap.add_argument("--enroll", action="store_true", help="enroll series members' voices/")
    ap.add_argument("--reuse", action="store_true", help="reuse OUT/NAME/heard.json")
    ap.add_argument("--only", action="append", default=[], help="only these meeting names")
    ap.add_argument("--hear-only", action="store_true",
                    help="only hear (and keep OUT/NAME/heard.json for --reuse); no LLM is loaded")
    ap.add_argument("--llm-model", default=None)
    ap.add_argument("--json", default=None, help="write the figures here too")
    ap.add_argument("--trace", action="store_true",
                    help="keep every question to the model and its answer in OUT/NAME/llm.jsonl")
    args = ap.parse_args()

    from daemon.privacy import lock_down

    lock_down()
    from daemon.logs import configure_logging
    from daemon.minutes.evidence import check_minutes
    from daemon.output import write_minutes, write_transcript
    from daemon.pipeline import Processor
    from daemon.registry import build_hearer, standard_processor
    from daemon.settings import load_settings
    from daemon.types import HearResult, MeetingInfo, SpeakerTranscript, StageTimes

    configure_logging("warning")
    meetings = [d for d in meeting_dirs(args.folders) if not args.only or d.name in args.only]
    if not meetings:
        ap.error("no meeting folders (with truth.json) found")
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    settings = load_settings(args.config)
    if args.llm_model:
        settings.llm.model = args.llm_model
    settings.speakers.profiles = out_root / "voices.sqlite"
    if settings.speakers.profiles.exists() and not args.reuse:
        settings.speakers.profiles.unlink()
    fresh_profiles = not settings.speakers.profiles.exists()
    truths = {d: json.loads((d / "truth.json").read_text()) for d in meetings}

    t0 = time.perf_counter()
    if args.hear_only:
        processor = Processor(settings, build_hearer(settings, voices=True), None)  # type: ignore
    else:
        processor = standard_processor(settings)  # what the daemon runs
    hearer, writer = processor.hearer, processor.writer
    if args.enroll and fresh_profiles and hearer.voices is not None:
        for d, truth in truths.items():
            if truth.get("series") and (d / "voices").is_dir():
                for clip in sorted((d / "voices").glob("*.wav")):
                    hearer.voices.enroll(clip.stem.replace("_", " "), [clip], hearer.diarizer)
    trace: list[dict] = []
    if args.trace and writer is not None:
        real_chat = writer.chat.chat

        def traced(messages, max_new_tokens, json_output=False, on_token=None):
            answer = real_chat(messages, max_new_tokens, json_output=json_output,
                               on_token=on_token)
            trace.append({"system": messages[0].content[:60], "user": messages[-1].content,
                          "answer": answer, "stats": getattr(writer.chat, "last_stats", None)})
            return answer

        writer.chat.chat = traced
    load_s = time.perf_counter() - t0

    rows: list[dict] = []
    for d in meetings:
        truth = truths[d]
        name = d.name
        out = out_root / name
        out.mkdir(parents=True, exist_ok=True)
        people = [s["name"] if isinstance(s, dict) else s for s in truth.get("speakers", [])]
        info = MeetingInfo(attendees=people if args.roster == "truth" else [],
                           date=truth.get("date"), title=truth.get("title"))
        heard_path, voices_path = out / "heard.json", out / "heard-voices.npz"
        hear_s = None
        if args.reuse and heard_path.exists():
            # What hearing gave (speakers not yet named) and the speakers' voice embeddings
            cached = json.loads(heard_path.read_text())
            emb = dict(np.load(voices_path)) if voices_path.exists() else {}
            heard = HearResult(SpeakerTranscript.from_json(cached), None, None,  # type: ignore
                               StageTimes(), emb, cached.get("voice_model"))
            for s in heard.transcript.speakers:  # named again below, by today's code
                s.name, s.evidence, s.confidence = None, [], None
        else:
            t1 = time.perf_counter()
            heard = hearer.hear(recording(d), info=info)
            hear_s = time.perf_counter() - t1
            heard_path.write_text(json.dumps({**heard.transcript.to_json(),
                                              "voice_model": heard.voice_model},
                                             indent=1, ensure_ascii=False))
            np.savez(voices_path, **heard.voices)
        processor.name_speakers(heard, info)
        transcript = heard.transcript
        if args.hear_only:
            print(f"{name}: heard in {hear_s or 0:.0f} s", flush=True)
            continue
        t1 = time.perf_counter()
        writer.stats = type(writer.stats)()
        try:
            minutes, facts = processor.understand(transcript, recording(d), info)
        except Exception as exc:  # one meeting's failure is a figure, not the end of the run
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}", flush=True)
            rows.append({"meeting": name, "failed": f"{type(exc).__name__}: {exc}"})
            continue
        minutes_s = time.perf_counter() - t1
        if args.trace:
            (out / "llm.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n"
                                                   for x in trace))
            trace.clear()
        write_transcript(transcript, out)
        write_minutes(minutes, out, facts.time)
        res = subprocess.run([sys.executable, str(Path(args.eval) / "score.py"), str(d), str(out),
                              "--json"], capture_output=True, text=True)
        try:
            score = json.loads(res.stdout)
        except ValueError:
            raise SystemExit(f"score.py failed on {name}: {res.stderr or res.stdout}") from None
        problems = check_minutes(minutes.to_json(), transcript.to_json())
        row = {"meeting": name, "duration_s": round(transcript.duration_s, 1),
               "hear_s": None if hear_s is None else round(hear_s, 1),
               "minutes_s": round(minutes_s, 1), "llm_calls": writer.stats.calls,
               "new_tokens": writer.stats.new_tokens, "evidence_problems": problems,
               "flags": len(minutes.flags), **score}
        rows.append(row)
        print(f"{name}: found {score['action_items_found']} owner {score['action_owner_correct']}"
              f" extra {score['action_items_extra']} decisions {score['decisions_found']}"
              f" names {score.get('speaker_name_acc')} evidence problems {len(problems)}"
              f" minutes {minutes_s:.0f} s", flush=True)

    if args.hear_only:
        return 0

    failed = [r for r in rows if "failed" in r]
    rows = [r for r in rows if "failed" not in r]
    for r in failed:
        print(f"FAILED {r['meeting']}: {r['failed']}")
    if not rows:
        return 1

    def total(key: str) -> tuple[int, int]:
        a = b = 0
        for r in rows:
            x, y = frac(r[key])
            a, b = a + x, b + y
        return a, b

    def ratio(ab: tuple[int, int]) -> str:
        return f"{ab[0]}/{ab[1]} = {ab[0] / ab[1]:.2f}" if ab[1] else f"{ab[0]}/0"

    cols = ["meeting", "length", "names", "actions found", "right owner", "extra", "decisions",
            "attendees", "evidence ok", "flags", "minutes s"]
    print(f"\nminutesd minutes bench — llm={settings.llm.backend}:{settings.llm.model}, "
          f"roster={args.roster}, enroll={args.enroll}; models loaded in {load_s:.0f} s\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        n_items = len(json.loads((out_root / r["meeting"] / "minutes.json").read_text())
                      ["action_items"])
        ev = f"{n_items - len({p['item'] for p in r['evidence_problems']})}/{n_items}"
        print(f"| {r['meeting']} | {r['duration_s'] / 60:.1f} min | {r.get('speaker_name_acc')} | "
              f"{r['action_items_found']} | {r['action_owner_correct']} | "
              f"{r['action_items_extra']} | {r['decisions_found']} | {r['attendees_found']} | "
              f"{ev} | {r['flags']} | {r['minutes_s']:.0f} |")
    extra = [r["action_items_extra"] for r in rows]
    summary = {"actions_found": total("action_items_found"),
               "owner_correct": total("action_owner_correct"),
               "decisions_found": total("decisions_found"),
               "attendees_found": total("attendees_found"),
               "extra_total": sum(extra), "extra_max": max(extra),
               "evidence_problems": sum(len(r["evidence_problems"]) for r in rows),
               "minutes_s_total": round(sum(r["minutes_s"] for r in rows), 1)}
    print(f"| **all {len(rows)}** | {sum(r['duration_s'] for r in rows) / 60:.1f} min | | "
          f"{ratio(summary['actions_found'])} | {ratio(summary['owner_correct'])} | "
          f"{summary['extra_total']} (max {summary['extra_max']}) | "
          f"{ratio(summary['decisions_found'])} | {ratio(summary['attendees_found'])} | "
          f"{summary['evidence_problems']} problems | | {summary['minutes_s_total']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "failed": failed, "summary": summary,
                                               "llm": settings.llm.model}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
