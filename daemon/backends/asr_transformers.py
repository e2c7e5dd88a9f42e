"""Whisper through transformers: the reference transcriber, and the fast one on a GPU.

A Hugging Face format Whisper (default for users: ``openai/whisper-medium.en``), float16 on
CUDA and float32 on CPU (``compute_type: auto``), decoded long-form in one of two ways
(``asr.long_form``):

- ``batched`` (default): windows cut at silences, ``batch_size`` windows decoded greedily at
  once, word times from the alignment heads (``asr_batched.py``);
- ``pipeline``: ``transformers.pipeline("automatic-speech-recognition")``, chunked with the
  pipeline's overlap, ``batch_size`` windows per forward pass, beam search as set, word
  timestamps from the alignment heads or segment timestamps when word timestamps are off.

Models come from a local HF-format folder or a hub id. A hub id is looked for in the local
Hugging Face cache first, so a cached model loads with no network at all; only a model that
is not cached is downloaded. The embedded CTranslate2 models (``embedded:base``,
``embedded:tiny.en``) are converted once into the cache (``daemon/convert_whisper.py``).
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from daemon.backends.asr_batched import BatchedWhisper, silence_windows
from daemon.errors import ModelNotAvailable
from daemon.logs import get_logger
from daemon.models import EMBEDDED_PREFIX, embedded_whisper_hf_dir
from daemon.settings import ASRSettings
from daemon.torchutil import pick_device
from daemon.types import Audio, Progress, Segment, Transcript, Word

DEFAULT_MODEL = "openai/whisper-medium.en"

# Word-to-segment grouping, used when the pipeline gives word chunks only.
SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "e.g.", "i.e."})
PAUSE_S = 1.0  # a silence longer than this between two words starts a new segment
MAX_SEGMENT_S = 30.0  # no segment grows longer than one Whisper window

# The pipeline's default stride is chunk_length_s / 6 on each side of a window.
_STRIDE_FRACTION = 1 / 6
# Language detection looks at up to this many 30 s windows and takes the majority.
_DETECT_WINDOWS = 3

_DTYPE_NAMES = {
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float32": "float32", "fp32": "float32", "float": "float32",
}


# --------------------------------------------------------------------------- settings


def resolve_dtype(compute_type: str, device: str) -> str:
    """``auto`` → float16 on CUDA, float32 on CPU; explicit float types are kept."""
    ct = compute_type.strip().lower()
    if ct == "auto":
        return "float16" if device == "cuda" else "float32"
    if ct in _DTYPE_NAMES:
        return _DTYPE_NAMES[ct]
    raise ValueError(
        f"asr.compute_type {compute_type!r} is not supported by the transformers backend "
        "(int8 variants are CTranslate2 quantisations for faster-whisper); "
        "use auto, float16, bfloat16 or float32"
    )


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.startswith(".\\")


def _check_hf_folder(folder: Path) -> None:
    """Refuse, in words, a folder that is not a Hugging Face format Whisper model."""
    cfg = folder / "config.json"
    if (folder / "model.bin").exists() and not any(folder.glob("*.safetensors")):
        raise ModelNotAvailable(
            f"{folder} is a CTranslate2 model folder (model.bin), which the transformers backend "
            "cannot read; use asr.backend: faster-whisper for it, or point asr.model at a Hugging "
            f"Face format Whisper folder or hub id (e.g. {DEFAULT_MODEL})"
        )
    if not cfg.exists():
        raise ModelNotAvailable(
            f"{folder} is not a Hugging Face format Whisper folder (no config.json); it needs "
            "config.json, the weights (model.safetensors), the tokenizer and "
            "preprocessor_config.json, as save_pretrained or a hub download writes them"
        )
    try:
        model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as exc:
        raise ModelNotAvailable(f"{cfg} cannot be read: {exc}") from exc
    if model_type != "whisper":
        raise ModelNotAvailable(
            f"{folder} holds a {model_type!r} model, not Whisper; the transformers backend needs a "
            f"Whisper checkpoint (e.g. {DEFAULT_MODEL})"
        )


def _cached_snapshot(repo_id: str, cache_dir: Path | None) -> str | None:
    """The local snapshot folder of a hub model if it is fully cached, else None (no network)."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(
            repo_id, cache_dir=str(cache_dir) if cache_dir else None, local_files_only=True
        )
    except Exception:  # not cached, a bad id, or an old hub client: fall back to the hub
        return None
    folder = Path(path)
    has_weights = any(folder.glob("*.safetensors")) or (folder / "pytorch_model.bin").exists()
    if (folder / "config.json").exists() and has_weights:
        return str(folder)
    return None


def _offline_mode() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:
        return False


def _unavailable(model: str, cache_dir: Path | None, exc: BaseException) -> ModelNotAvailable:
    where = str(cache_dir) if cache_dir else "the default Hugging Face cache (HF_HOME)"
    why = "HF_HUB_OFFLINE is set" if _offline_mode() else "no network, or no such model on the hub"
    return ModelNotAvailable(
        f"Whisper model {model!r} is not in {where} and could not be downloaded ({why}: "
        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). To fix: run once with "
        f"internet access so it is downloaded and cached (check the id, e.g. {DEFAULT_MODEL}); "
        "or download it on a connected machine (hf download ID --local-dir FOLDER), copy the "
        "folder here and set asr.model to its path; or use asr.backend: faster-whisper with an "
        "embedded model, which needs no download"
    )


# --------------------------------------------------------------------------- output mapping


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _timestamp(chunk: dict[str, Any]) -> tuple[float | None, float | None]:
    ts = chunk.get("timestamp") or (None, None)
    start, end = (tuple(ts) + (None, None))[:2]
    return (None if start is None else float(start), None if end is None else float(end))


def segments_from_chunks(chunks: Iterable[dict[str, Any]], duration: float) -> list[Segment]:
    """Segment-level pipeline chunks (``return_timestamps=True``) → ``Segment``s.

    A missing end (Whisper stopped mid-segment at the end of the audio) becomes the next
    chunk's start or the audio's duration; times are clamped into [0, duration] and starts
    made non-decreasing; chunks with no text are dropped.
    """
    out: list[Segment] = []
    for ch, start, end in _sane_times(list(chunks), duration):
        text = " ".join(str(ch.get("text", "")).split())
        if text:
            out.append(Segment(start, end, text))
    return out


def _sane_times(items: list[dict[str, Any]], duration: float):
    """Each chunk with its (start, end) made sane: a missing start is the previous end, a
    missing end the next start (or the duration), clamped into [0, duration], starts
    non-decreasing, ends at or after starts."""
    prev_start, prev_end = 0.0, 0.0
    for i, ch in enumerate(items):
        start, end = _timestamp(ch)
        if start is None:
            start = prev_end
        if end is None:
            nxt = _timestamp(items[i + 1])[0] if i + 1 < len(items) else None
            end = nxt if nxt is not None and nxt >= start else duration
        start = _clamp(start, prev_start, duration)
        end = _clamp(end, start, duration)
        prev_start, prev_end = start, end
        yield ch, start, end


def _ends_sentence(text: str) -> bool:
    t = text.strip()
    return bool(t) and t.endswith(SENTENCE_END) and t.lower() not in ABBREVIATIONS


def words_from_chunks(chunks: Iterable[dict[str, Any]], duration: float) -> list[Word]:
    """Word-level pipeline chunks (``return_timestamps="word"``) → sane ``Word``s.

    Word text keeps its leading space (as faster-whisper's words do, so joining them gives
    the text back). Times are clamped into [0, duration], starts made non-decreasing across
    the chunk seams, ends kept at or after starts; a missing end becomes the next word's
    start, or the duration at the end of the audio.
    """
    items = [c for c in chunks if str(c.get("text", "")).strip()]
    return [Word(start, end, str(ch["text"])) for ch, start, end in _sane_times(items, duration)]


def group_words(
    words: list[Word], pause_s: float = PAUSE_S, max_segment_s: float = MAX_SEGMENT_S
) -> list[Segment]:
    """Group words into segments: split after sentence punctuation, at pauses longer than
    ``pause_s``, and before a segment would grow past ``max_segment_s``."""
    segments: list[Segment] = []
    cur: list[Word] = []

    def flush() -> None:
        if cur:
            text = " ".join("".join(w.text for w in cur).split())
            segments.append(Segment(cur[0].start, max(w.end for w in cur), text, list(cur)))
            cur.clear()

    for w in words:
        if cur and (
            _ends_sentence(cur[-1].text)
            or w.start - cur[-1].end > pause_s
            or w.end - cur[0].start > max_segment_s
        ):
            flush()
        cur.append(w)
    flush()
    return segments


# --------------------------------------------------------------------------- the backend


def _chunk_layout(chunk_length_s: float) -> tuple[float, float]:
    """(window length, step between window starts) in seconds, as the pipeline chunks."""
    stride = chunk_length_s * _STRIDE_FRACTION
    return chunk_length_s, chunk_length_s - 2 * stride


def _pipeline_class():
    """The transformers ASR pipeline, plus a hook called after each batch of windows."""
    from transformers import AutomaticSpeechRecognitionPipeline

    class ProgressASRPipeline(AutomaticSpeechRecognitionPipeline):
        on_windows: Callable[[int], None] | None = None

        def _forward(self, model_inputs, **kwargs):
            feats = model_inputs.get("input_features")
            n = int(feats.shape[0]) if feats is not None and feats.ndim == 3 else 1
            out = super()._forward(model_inputs, **kwargs)
            if self.on_windows is not None:
                self.on_windows(n)
            return out

    return ProgressASRPipeline


def _dtw_numba():
    """transformers' ``_dynamic_time_warping``, compiled with numba: the same path, ~100x faster.

    Word timestamps align each window's tokens to its audio frames by DTW over a
    tokens x 750 matrix. transformers does this in a pure-Python double loop, about 0.2 s per
    30 s window, so at batch 64 on a GPU it took longer than decoding the window. Same float32
    cost table, same tie-breaking, same backtrace; None when numba is missing.
    """
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=False)
    def _tables(matrix):  # pragma: no cover - compiled
        n, m = matrix.shape
        cost = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
        trace = -np.ones((n + 1, m + 1), dtype=np.float32)
        cost[0, 0] = 0
        for j in range(1, m + 1):
            for i in range(1, n + 1):
                c0 = cost[i - 1, j - 1]
                c1 = cost[i - 1, j]
                c2 = cost[i, j - 1]
                if c0 < c1 and c0 < c2:
                    c, t = c0, 0
                elif c1 < c0 and c1 < c2:
                    c, t = c1, 1
                else:
                    c, t = c2, 2
                cost[i, j] = matrix[i - 1, j - 1] + c
                trace[i, j] = t
        i, j = n, m
        trace[0, :] = 2
        trace[:, 0] = 1
        text = np.empty(n + m, dtype=np.int64)
        time = np.empty(n + m, dtype=np.int64)
        k = 0
        while i > 0 or j > 0:
            text[k] = i - 1
            time[k] = j - 1
            k += 1
            t = trace[i, j]
            if t == 0:
                i -= 1
                j -= 1
            elif t == 1:
                i -= 1
            elif t == 2:
                j -= 1
            else:
                return text[:0], time[:0]
        return text[:k][::-1].copy(), time[:k][::-1].copy()

    def dynamic_time_warping(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _tables(np.ascontiguousarray(matrix, dtype=np.float64))

    return dynamic_time_warping


@functools.cache
def use_fast_dtw() -> bool:
    """Swap transformers' Whisper DTW for the compiled one, once, if it gives the same answer."""
    try:
        from transformers.models.whisper import generation_whisper as gw
    except ImportError:
        return False
    fast = _dtw_numba()
    original = getattr(gw, "_dynamic_time_warping", None)
    if fast is None or original is None:
        return False
    rng = np.random.default_rng(0)
    for shape in ((7, 40), (23, 61)):
        m = -rng.standard_normal(shape)
        a, b = original(m), fast(m)
        if not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])):
            return False
    gw._minutesd_original_dtw = original  # kept for the tests' comparison
    gw._dynamic_time_warping = fast
    return True


def _encoder_without_attentions(model) -> None:
    """Stop the encoder from returning its attention weights.

    Word timestamps make Whisper's generate() ask the whole model for attention weights. Only
    the decoder's cross-attentions are used (DTW over the alignment heads), but the encoder's
    would be kept for the whole decode: layers × batch × heads × 1500 × 1500 floats, about
    27 GB for whisper-medium at batch 8 in float32. The words and times are the same without.
    """
    encoder = model.get_encoder()
    forward = encoder.forward

    @functools.wraps(forward)
    def forward_without_attentions(*args, **kwargs):
        kwargs["output_attentions"] = False
        return forward(*args, **kwargs)

    encoder.forward = forward_without_attentions


class TransformersTranscriber:
    name = "transformers"

    def __init__(self, cfg: ASRSettings, cache_dir: Path):
        self.cfg = cfg
        model = cfg.model.strip()
        if model.startswith(EMBEDDED_PREFIX):
            # The embedded CTranslate2 model, converted once into the cache (no download).
            model = str(embedded_whisper_hf_dir(model, cache_dir))
        self.device = pick_device(cfg.device)
        self.dtype_name = resolve_dtype(cfg.compute_type, self.device)
        self.model_ref = cfg.model.strip()
        # Where hub models are cached (None: the library's default, HF_HOME).
        self.hub_cache = (
            Path(os.path.expandvars(str(cfg.cache_dir))).expanduser() if cfg.cache_dir else None
        )
        self.model_path = self._locate(model, self.hub_cache)
        try:
            self.pipe = self._load(self.model_path, self.hub_cache)
        except ModelNotAvailable:
            if self.model_path == model or Path(model).expanduser().is_dir():
                raise
            # A partly cached hub model (an interrupted download): let the hub complete it.
            self.model_path = model
            self.pipe = self._load(model, self.hub_cache)

        gen = self.pipe.model.generation_config
        flag = getattr(gen, "is_multilingual", None)
        self.multilingual = (
            bool(flag) if flag is not None else self.pipe.model.config.vocab_size >= 51865
        )
        self.language = self._fixed_language(cfg.language)
        self.word_timestamps = bool(cfg.word_timestamps)
        if self.word_timestamps and getattr(gen, "alignment_heads", None) is None:
            get_logger().warning(
                "model has no alignment heads: word timestamps off, segment timestamps used",
                model=model,
            )
            self.word_timestamps = False
        if self.word_timestamps:
            _encoder_without_attentions(self.pipe.model)
            self.fast_dtw = use_fast_dtw()
        tok = self.pipe.tokenizer
        if tok.pad_token_id is None:  # batching pads the decoder outputs
            tok.pad_token = tok.eos_token
        self._prompts: dict[str, Any] = {}  # prompt text -> its token ids, made once each
        self._prompt_ids = self._make_prompt_ids(cfg.initial_prompt)
        self.batched = None
        if cfg.long_form == "batched":
            dtw = _dtw_numba() or _transformers_dtw()
            self.batched = BatchedWhisper(
                self.pipe.model, self.pipe.tokenizer, self.pipe.feature_extractor, dtw
            )

    # ------------------------------------------------------------------ loading

    @staticmethod
    def _locate(model: str, hub_cache: Path | None) -> str:
        """A local folder to load from, or the hub id itself when it is not cached."""
        folder = Path(model).expanduser()
        if folder.is_dir():
            _check_hf_folder(folder)
            return str(folder)
        if folder.exists():
            raise ModelNotAvailable(
                f"asr.model {model!r} is a file; it must be a model folder or a hub id"
            )
        if _looks_like_path(model):
            raise ModelNotAvailable(f"model folder not found: {model}")
        return _cached_snapshot(model, hub_cache) or model

    def _load(self, ref: str, hub_cache: Path | None):
        import torch
        from transformers import pipeline

        try:
            return pipeline(
                "automatic-speech-recognition",
                model=ref,
                dtype=getattr(torch, self.dtype_name),
                device=self.device,
                model_kwargs={"cache_dir": str(hub_cache)} if hub_cache else None,
                pipeline_class=_pipeline_class(),
            )
        except OSError as exc:  # transformers' "not found / cannot connect" errors
            if Path(ref).is_dir():
                raise ModelNotAvailable(f"cannot load the Whisper model in {ref}: {exc}") from exc
            raise _unavailable(self.model_ref, hub_cache, exc) from exc
        except Exception as exc:
            if type(exc).__module__.startswith("huggingface_hub"):
                raise _unavailable(self.model_ref, hub_cache, exc) from exc
            raise

    def _fixed_language(self, setting: str) -> str | None:
        """The language code to decode with, or None to detect it per recording."""
        from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

        lang = setting.strip().lower()
        if lang != "auto":
            lang = TO_LANGUAGE_CODE.get(lang, lang)
            if lang not in LANGUAGES:
                raise ValueError(
                    f"asr.language {setting!r} is not a language Whisper knows; use auto or a "
                    "code such as en, de, fr"
                )
        if not self.multilingual:
            if lang not in ("auto", "en"):
                raise ValueError(
                    f"{self.model_ref} is an English-only Whisper model and cannot transcribe "
                    f"language {setting!r}; set asr.language to en or auto, or use a multilingual "
                    "model such as openai/whisper-medium"
                )
            return "en"
        return None if lang == "auto" else lang

    def _make_prompt_ids(self, prompt: str | None):
        if not prompt or not prompt.strip():
            return None
        if prompt not in self._prompts:
            if len(self._prompts) > 64:
                self._prompts.clear()
            self._prompts[prompt] = self._encode_prompt(prompt)
        return self._prompts[prompt]

    def _encode_prompt(self, prompt: str):
        tok = self.pipe.tokenizer
        if not hasattr(tok, "get_prompt_ids"):
            get_logger().warning("tokenizer cannot encode prompts: initial_prompt ignored")
            return None
        import torch

        ids = tok.get_prompt_ids(prompt.strip(), return_tensors="pt")
        # Like OpenAI's Whisper: keep <|startofprev|> and the last n_ctx/2 - 1 prompt tokens.
        keep = self.pipe.model.config.max_target_positions // 2 - 1
        if ids.shape[-1] - 1 > keep:
            ids = torch.cat([ids[:1], ids[-keep:]])
        return ids.to(self.pipe.device)

    # ------------------------------------------------------------------ decoding

    def _detect_language(self, samples: np.ndarray) -> str | None:
        """Majority language over the first few 30 s windows (one encoder batch)."""
        gen = self.pipe.model.generation_config
        if not getattr(gen, "lang_to_id", None):
            return None
        fe = self.pipe.feature_extractor
        n = fe.n_samples
        windows = [samples[i : i + n] for i in range(0, len(samples), n)][:_DETECT_WINDOWS]
        if len(windows) > 1 and len(windows[-1]) < n // 3:
            windows = windows[:-1]  # a short tail is mostly padding
        feats = fe(windows, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features
        feats = feats.to(self.pipe.device, dtype=self.pipe.model.dtype)
        ids = self.pipe.model.detect_language(input_features=feats).tolist()
        best = Counter(ids).most_common(1)[0][0]
        return self.pipe.tokenizer.convert_ids_to_tokens(int(best)).strip("<|>")

    def _generate_kwargs(self, language: str | None, prompt_ids=None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"num_beams": self.cfg.beam_size}
        if self.multilingual and language:
            # English-only (.en) models reject language/task: only multilingual ones get them.
            kwargs["language"] = language
            kwargs["task"] = "transcribe"
        if prompt_ids is not None:
            kwargs["prompt_ids"] = prompt_ids
        return kwargs

    def _call_language(self, language: str | None) -> str | None:
        """This recording's language if it has one (an English-only model decodes English
        whatever is asked, with a warning), else the one fixed by ``asr.language``."""
        if not language:
            return self.language
        try:
            return self._fixed_language(language)
        except ValueError as exc:
            get_logger().warning("cannot decode in the recording's language; using "
                                 "asr.language", language=language, reason=str(exc))
            return self.language

    def transcribe(self, audio: Audio, progress: Progress | None = None,
                   language: str | None = None, prompt: str | None = None) -> Transcript:
        total = audio.duration_s
        samples = np.ascontiguousarray(audio.samples, dtype=np.float32)
        if samples.size == 0:
            return Transcript(segments=[], language=self.language)
        rate = self.pipe.feature_extractor.sampling_rate
        if audio.sample_rate != rate:  # decode_audio gives 16 kHz; other callers may not
            import torch
            from torchaudio.functional import resample

            samples = resample(torch.from_numpy(samples), audio.sample_rate, rate).numpy()
        language = self._call_language(language)
        if language is None and self.multilingual:
            language = self._detect_language(samples)
        prompt_ids = self._prompt_ids if prompt is None else self._make_prompt_ids(prompt)

        if self.batched is not None:
            segments = self._transcribe_batched(samples, language, total, progress, prompt_ids)
            return Transcript(segments=segments, language=language)

        window_s, step_s = _chunk_layout(self.cfg.chunk_length_s)
        done = 0

        def on_windows(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress("transcribe", min(total, (done - 1) * step_s + window_s), total)

        self.pipe.on_windows = on_windows
        try:
            out = self.pipe(
                samples,
                chunk_length_s=self.cfg.chunk_length_s,
                batch_size=self.cfg.batch_size,
                return_timestamps="word" if self.word_timestamps else True,
                ignore_warning=True,
                generate_kwargs=self._generate_kwargs(language, prompt_ids),
            )
        finally:
            self.pipe.on_windows = None
        chunks = out.get("chunks") or []
        if self.word_timestamps:
            segments = group_words(words_from_chunks(chunks, total))
        else:
            segments = segments_from_chunks(chunks, total)
        if progress:
            progress("transcribe", total, total)
        return Transcript(segments=segments, language=language)

    def _transcribe_batched(
        self, samples: np.ndarray, language: str | None, total: float, progress: Progress | None,
        prompt_ids=None,
    ) -> list[Segment]:
        """``asr.long_form: batched``: windows cut at silences, decoded batch_size at a time."""
        assert self.batched is not None
        rate = self.pipe.feature_extractor.sampling_rate
        windows = silence_windows(samples, rate, max_s=min(30.0, self.cfg.chunk_length_s))
        prompt = None
        if prompt_ids is not None:
            prompt = [int(t) for t in prompt_ids.tolist()]
        words: list[Word] = []
        size = self.cfg.batch_size
        for i in range(0, len(windows), size):
            batch = windows[i : i + size]
            chunks = [samples[a:b] for a, b in batch]
            found_words = self.batched.transcribe_batch(chunks, language, prompt)
            for (a, _), found in zip(batch, found_words, strict=True):
                t0 = a / rate
                words.extend(Word(t0 + w.start, t0 + w.end, w.text) for w in found)
            if progress:
                progress("transcribe", min(total, batch[-1][1] / rate), total)
        if progress:
            progress("transcribe", total, total)
        chunks = [{"text": w.text, "timestamp": (w.start, w.end)} for w in words]
        return group_words(words_from_chunks(chunks, total))


def _transformers_dtw():
    from transformers.models.whisper.generation_whisper import _dynamic_time_warping

    return _dynamic_time_warping
