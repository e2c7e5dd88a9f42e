#!/usr/bin/env python3
"""Benchmark the pipeline on CPU (or GPU): per stage seconds, real-time factor, peak memory.

    .venv/bin/python bench/hear.py [--eval ../shared/eval] [--asr-model embedded:base] [FILES...]
    .venv/bin/python bench/hear.py --minutes [--llm-model embedded:qwen2.5-coder-1.5b] ...

With --minutes the understand half runs too (speaker names, LLM minutes) and the table
gains the LLM's tokens/s; with an eval dir, score.py's full line is printed per meeting.

Model loading is timed apart from processing (the daemon loads once and stays warm). Peak
memory is the process's resident set size sampled every 20 ms during each stage. With an
eval dir, WER and DER are scored too (score.py from the eval kit, read in place).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class RSSPeak:
    """Peak resident memory (MiB) between start() and stop(), sampled from /proc."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.peak, self._stop = every_s, 0.0, threading.Event()

    @staticmethod
    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def __enter__(self):
        self.peak = self.rss_mib()
        self._stop.clear()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss_mib())


def gpu_peak_mib() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", help="recordings (default: the eval kit's dev meetings)")
    ap.add_argument("--eval", default=str(REPO.parent / "shared" / "eval"), help="eval kit dir")
    ap.add_argument("--asr-backend", default=None)
    ap.add_argument("--asr-model", default=None)
    ap.add_argument("--diarizer", default=None)
    ap.add_argument("--config", default=None)
    ap.add_argument("--minutes", action="store_true", help="also name speakers and write minutes")
    ap.add_argument("--llm-model", default=None)
    ap.add_argument("--out", default=None, help="keep outputs here (one folder per meeting)")
    args = ap.parse_args()

    from daemon.privacy import lock_down

    lock_down()
    from daemon.audio import decode_audio
    from daemon.logs import configure_logging
    from daemon.pipeline import Hearer, Processor, roster_prompt
    from daemon.registry import build_hearer, build_writer
    from daemon.settings import load_settings
    from daemon.types import StageTimes

    configure_logging("warning")
    settings = load_settings(args.config)
    if args.asr_backend:
        settings.asr.backend = args.asr_backend
    if args.asr_model:
        settings.asr.model = args.asr_model
    if args.diarizer:
        settings.diarization.backend = args.diarizer
    if args.llm_model:
        settings.llm.model = args.llm_model

    eval_dir = Path(args.eval)
    files = [Path(f) for f in args.files]
    if not files:
        files = sorted((eval_dir / "dev").glob("*/meeting.mp3"))
    if not files:
        ap.error("no files given and no eval kit found; pass recordings or --eval DIR")
    score = None
    if (eval_dir / "score.py").exists():
        sys.path.insert(0, str(eval_dir))
        import score  # the eval kit's scorer, read in place

    rows = []
    with RSSPeak() as mem:
        t0 = time.perf_counter()
        settings.asr.initial_prompt = roster_prompt(settings)
        hearer = build_hearer(settings)
        load_s = time.perf_counter() - t0
    rows.append(("(all)", "model load: ASR + diarizer", load_s, None, mem.peak))
    processor = None
    if args.minutes:
        with RSSPeak() as mem:
            t0 = time.perf_counter()
            processor = Processor(settings, hearer, build_writer(settings))
            rows.append(("(all)", "model load: LLM", time.perf_counter() - t0, None, mem.peak))
    for f in files:
        name = f.parent.name if f.name == "meeting.mp3" else f.name
        times = StageTimes()
        with RSSPeak() as m_dec:
            t0 = time.perf_counter()
            audio = decode_audio(f)
            times.decode_s = time.perf_counter() - t0
        dur = audio.duration_s
        with RSSPeak() as m_dia:
            t0 = time.perf_counter()
            dia = hearer.diarizer.diarize(audio)
            times.diarize_s = time.perf_counter() - t0
        with RSSPeak() as m_asr:
            t0 = time.perf_counter()
            raw = hearer.transcriber.transcribe(audio)
            times.transcribe_s = time.perf_counter() - t0

        class _Fixed:
            name = "fixed"

            def __init__(self, v):
                self.v = v

            def diarize(self, a, p=None, num_speakers=None, max_speakers=None):
                return self.v

            def transcribe(self, a, p=None, language=None, prompt=None):
                return self.v

        with RSSPeak() as m_join:
            t0 = time.perf_counter()
            res = Hearer(settings, transcriber=_Fixed(raw), diarizer=_Fixed(dia)).hear_audio(audio)
            times.join_s = time.perf_counter() - t0
        total = times.decode_s + times.diarize_s + times.transcribe_s + times.join_s
        quality = ""
        truth = f.parent / "reference.txt"
        if score and truth.exists():
            hyp = " ".join(s.text for s in res.transcript.segments)
            w = score.wer(truth.read_text(), hyp)
            ref_rttm = [(ln.split()[7], float(ln.split()[3]), float(ln.split()[3]) + float(ln.split()[4]))
                        for ln in (f.parent / "reference.rttm").read_text().splitlines() if ln.strip()]
            d = score.der(ref_rttm, [(s.speaker, s.start, s.end) for s in res.transcript.segments])
            d = d[0] if isinstance(d, tuple) else d
            quality = f"WER {w:.3f} DER {d:.3f}"
        stages = [("decode", times.decode_s, m_dec), ("diarize", times.diarize_s, m_dia),
                  ("transcribe", times.transcribe_s, m_asr), ("join", times.join_s, m_join)]
        if processor is not None:
            import tempfile

            from daemon.names import apply_names, assign_names
            from daemon.output import write_minutes, write_transcript

            with RSSPeak() as m_names:
                t0 = time.perf_counter()
                names, _ = assign_names(res.transcript, settings.minutes.roster)
                apply_names(res.transcript, names)
                names_s = time.perf_counter() - t0
            with RSSPeak() as m_llm:
                t0 = time.perf_counter()
                minutes, facts = processor.understand(res.transcript, f)
                llm_s = time.perf_counter() - t0
            st = processor.writer.stats
            stages += [("speaker names", names_s, m_names),
                       (f"minutes (LLM {st.new_tokens} tok, {st.tokens_per_s:.1f} tok/s)", llm_s, m_llm)]
            total += names_s + llm_s
            outdir = Path(args.out) / name if args.out else Path(tempfile.mkdtemp())
            write_transcript(res.transcript, outdir)
            write_minutes(minutes, outdir, facts.time)
            if score and (f.parent / "truth.json").exists():
                import subprocess

                line = subprocess.run([sys.executable, str(eval_dir / "score.py"), str(f.parent),
                                       str(outdir)], capture_output=True, text=True).stdout.strip()
                quality = line
            processor.writer.stats = type(st)()
        for stage, secs, m in stages:
            rows.append((name, stage, secs, dur / secs if secs > 0 else float("inf"), m.peak))
        rows.append((name, f"total ({dur:.0f} s audio)", total, dur / total,
                     max(m.peak for _, _, m in stages), quality))

    cfg = settings.asr
    print(f"\nminutesd hear bench — asr={cfg.backend}:{cfg.model} ({getattr(hearer.transcriber, 'device', '?')}, "
          f"{getattr(hearer.transcriber, 'compute_type', '')}), diarizer={settings.diarization.backend}")
    gpu = gpu_peak_mib()
    if gpu is not None:
        print(f"GPU peak allocated: {gpu:.0f} MiB")
    if processor is not None:
        print(f"llm={settings.llm.backend}:{settings.llm.model} ({settings.llm.quantization})")
    print(f"{'file':<20} {'stage':<40} {'seconds':>8} {'x realtime':>11} {'peak RSS MiB':>13}")
    print("-" * 96)
    for r in rows:
        rtf = "" if r[3] is None else f"{r[3]:.1f}"
        print(f"{r[0]:<20} {r[1]:<40} {r[2]:>8.2f} {rtf:>11} {r[4]:>13.0f}")
        if len(r) > 5 and r[5]:
            print(f"{'':<20} {r[5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
