#!/usr/bin/env python3
"""Calibrate voice profiles: same-person / different-person similarity on the eval kit.

    python bench/voices.py [EVAL_DIR] [--no-diarizer] [--json OUT.json]

Enrolment: every person of the dev *series* meetings (``truth.json`` "series" set) from
``voices/<Name>.wav`` of those meetings (one sample per clip, as ``minutesd voices enroll``
makes them: the diarizer's VAD finds the speech, the diarizer's CAM++ embeds it).

Meeting speakers: every speaker of every dev meeting, embedded as the pipeline does
(``VoiceProfiles.embed_speakers``: clean, non-overlapped speech, trimmed, capped), twice:

* **truth** — from the reference speaker turns (``reference.rttm``), so diarization errors
  do not blur the distributions;
* **diarizer** — from the real diarizer's speakers, each labelled with the person it
  overlaps most (what the pipeline sees).

Scores (``matching.person_scores``, the mean of the top-k sample cosines):

* same person: a series speaker against their own enrolment; also each speaker of a
  non-series meeting that has ``voices/`` against their own clip (more same-person pairs,
  never enrolled);
* different person, same series: a series speaker against the other enrolled people;
* strangers: every speaker of a non-series meeting against every enrolled person.

Then the margin: for each same-person pair, its score minus the speaker's best score for
anyone else. The threshold goes in the middle of the gap between the highest
different-person / stranger score and the lowest same-person score; the margin below the
smallest same-person margin. Finally the matcher runs on every meeting with the settings'
threshold and margin and counts correct names, missed ones and false accepts (strangers
given an enrolled name must be 0). Cost: milliseconds per meeting for embedding the
speakers and for matching them, on the device the diarizer runs on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from daemon.privacy import lock_down  # noqa: E402

lock_down()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from daemon.audio import decode_audio  # noqa: E402
from daemon.registry import build_diarizer, build_voice_profiles  # noqa: E402
from daemon.settings import load_settings  # noqa: E402
from daemon.types import Diarization, SpeakerTurn  # noqa: E402
from daemon.voices.matching import match_speakers, person_scores  # noqa: E402


def read_rttm(path: Path) -> list[SpeakerTurn]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        p = line.split()
        if len(p) >= 8 and p[0] == "SPEAKER":
            start = float(p[3])
            out.append(SpeakerTurn(start, start + float(p[4]), p[7].replace("_", " ")))
    return out


def label_by_truth(hyp: Diarization, ref: list[SpeakerTurn]) -> dict[str, str]:
    """Each diarized speaker -> the reference person it overlaps most."""
    over: dict[str, dict[str, float]] = {}
    for h in hyp.turns:
        for r in ref:
            ov = min(h.end, r.end) - max(h.start, r.start)
            if ov > 0:
                d = over.setdefault(h.speaker, {})
                d[r.speaker] = d.get(r.speaker, 0.0) + ov
    return {s: max(d, key=d.get) for s, d in over.items()}


def stats(xs: list[float]) -> str:
    if not xs:
        return "(none)"
    a = np.asarray(xs)
    q = np.percentile(a, [0, 5, 50, 95, 100])
    return (f"n={len(a):3d}  min {q[0]:.3f}  p5 {q[1]:.3f}  median {q[2]:.3f}  "
            f"p95 {q[3]:.3f}  max {q[4]:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_dir", nargs="?", default=str(REPO.parent / "shared" / "eval"))
    ap.add_argument("--no-diarizer", action="store_true", help="truth speakers only")
    ap.add_argument("--config", help="settings file (threshold, margin, top_k, backend)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)

    settings = load_settings(args.config)
    tmp = tempfile.mkdtemp(prefix="minutesd-voices-bench-")
    settings.speakers.profiles = Path(tmp) / "voices.sqlite"
    settings.speakers.voice_profiles = True
    cfg = settings.speakers
    dev = Path(args.eval_dir).resolve() / "dev"
    meetings = []
    for d in sorted(p for p in dev.iterdir() if (p / "truth.json").is_file()):
        truth = json.loads((d / "truth.json").read_text())
        meetings.append((d, truth.get("series"), truth["speakers"]))

    t0 = time.perf_counter()
    diarizer = build_diarizer(settings.diarization, settings.resolved_cache_dir())
    voices = build_voice_profiles(settings, diarizer)
    assert voices is not None, "this diarizer has no embedding model"
    print(f"model {voices.model_id} on {getattr(diarizer, 'device', '?')}, "
          f"loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    # Enrol the series people; own clips of everyone else, for same-person pairs.
    enrolled: set[str] = set()
    own_clip: dict[str, np.ndarray] = {}
    for d, series, _people in meetings:
        for clip in sorted((d / "voices").glob("*.wav")):
            name = clip.stem.replace("_", " ")
            if series:
                voices.enroll(name, [clip], diarizer)
                enrolled.add(name)
            else:
                own_clip[name] = voices.embed_clip(decode_audio(clip), diarizer)[0]
    samples = voices.samples()
    print(f"enrolled {len(enrolled)} people ({sum(len(v) for v in samples.values())} "
          f"samples) from the series meetings' voices/", file=sys.stderr)

    views = ["truth"] + ([] if args.no_diarizer else ["diarizer"])
    figures: dict = {"model_id": voices.model_id, "views": {}}
    for view in views:
        same, diff, strangers, margins, own = [], [], [], [], []
        embed_ms, match_ms, outcome = [], [], []
        for d, series, _people in meetings:
            audio = decode_audio(d / "meeting.wav")
            ref = read_rttm(d / "reference.rttm")
            if view == "truth":
                dia = Diarization([SpeakerTurn(t.start, t.end, t.speaker) for t in ref])
                person = {s: s for s in dia.speakers}
            else:
                dia = diarizer.diarize(audio)
                person = label_by_truth(dia, ref)
            t1 = time.perf_counter()
            emb = voices.embed_speakers(audio, dia)
            embed_ms.append((time.perf_counter() - t1) * 1000)
            t1 = time.perf_counter()
            got = match_speakers(emb, samples, voices.model_id, threshold=cfg.threshold,
                                 margin=cfg.margin, top_k=cfg.top_k)
            match_ms.append((time.perf_counter() - t1) * 1000)
            for spk, vec in emb.items():
                who = person.get(spk)
                sc = person_scores(vec, samples, cfg.top_k)
                if series and who in sc:
                    same.append(sc[who])
                    others = [v for n, v in sc.items() if n != who]
                    margins.append(sc[who] - max(others))
                    diff += others
                else:
                    strangers += list(sc.values())
                    if who in own_clip:
                        own.append(float(own_clip[who] @ vec))
                m = got.get(spk)
                outcome.append({
                    "meeting": d.name, "speaker": spk, "person": who, "series": bool(series),
                    "named": m.name if m else None,
                    "similarity": round(m.similarity, 4) if m else None,
                    "best": max(sc.items(), key=lambda kv: kv[1]) if sc else None,
                })
            unnamed = [s for s in person if s not in emb]
            print(f"  {view:<8} {d.name:<20} {len(emb)} speakers embedded "
                  f"({len(unnamed)} with too little clean speech), embed "
                  f"{embed_ms[-1]:.0f} ms, match {match_ms[-1]:.1f} ms", file=sys.stderr)
        correct = sum(1 for o in outcome if o["series"] and o["named"] == o["person"])
        wrong = sum(1 for o in outcome if o["series"] and o["named"] not in (None, o["person"]))
        missed = sum(1 for o in outcome if o["series"] and o["named"] is None)
        false_acc = sum(1 for o in outcome if not o["series"] and o["named"])
        lowest_same = min(same + own) if same or own else float("nan")
        highest_diff = max(diff + strangers) if diff or strangers else float("nan")
        figures["views"][view] = {
            "same": same, "same_own_clip": own, "different_series": diff,
            "strangers": strangers, "margins": margins,
            "gap": [highest_diff, lowest_same],
            "suggested_threshold": round((highest_diff + lowest_same) / 2, 3),
            "min_margin": min(margins) if margins else None,
            "embed_ms": embed_ms, "match_ms": match_ms, "outcome": outcome,
            "correct": correct, "wrong": wrong, "missed": missed, "false_accepts": false_acc,
        }
        print(f"\n== {view} speakers (model {voices.model_id}, top_k {cfg.top_k})")
        print(f"same person, enrolled   {stats(same)}")
        print(f"same person, own clip   {stats(own)}")
        print(f"different, same series  {stats(diff)}")
        print(f"strangers vs enrolled   {stats(strangers)}")
        print(f"margin over runner-up   {stats(margins)}")
        print(f"gap: highest different {highest_diff:.3f} < lowest same {lowest_same:.3f} "
              f"(width {lowest_same - highest_diff:.3f}); middle "
              f"{(highest_diff + lowest_same) / 2:.3f}")
        print(f"settings: threshold {cfg.threshold}, margin {cfg.margin}: series speakers "
              f"{correct} named right, {wrong} wrong, {missed} unnamed; strangers "
              f"{false_acc} false accepts")
        print(f"cost per meeting: embed {np.mean(embed_ms):.0f} ms (max {max(embed_ms):.0f}), "
              f"match {np.mean(match_ms):.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
