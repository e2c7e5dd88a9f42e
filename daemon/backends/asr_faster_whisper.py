"""Whisper through faster-whisper (CTranslate2): the embedded default transcriber.

int8 on CPU, fp16 on CUDA (``compute_type: auto``), Silero VAD filtering on by default,
word timestamps for speaker splitting, language fixed or detected.
"""

from __future__ import annotations

from pathlib import Path

from daemon.logs import get_logger
from daemon.models import resolve_ct2_whisper
from daemon.privacy import lock_down
from daemon.settings import ASRSettings
from daemon.torchutil import pick_device
from daemon.types import Audio, Progress, Segment, Transcript, Word


class FasterWhisperTranscriber:
    name = "faster-whisper"

    def __init__(self, cfg: ASRSettings, cache_dir: Path):
        lock_down()  # its VAD imports onnxruntime, whose telemetry starts at import
        from faster_whisper import WhisperModel

        self.cfg = cfg
        self.device = pick_device(cfg.device)
        compute_type = cfg.compute_type
        if compute_type == "auto":
            compute_type = "float16" if self.device == "cuda" else "int8"
        self.compute_type = compute_type
        self.model_ref = resolve_ct2_whisper(cfg.model, cache_dir)
        self.model = WhisperModel(
            self.model_ref,
            device=self.device,
            compute_type=compute_type,
            cpu_threads=cfg.cpu_threads,
            download_root=str(cfg.cache_dir) if cfg.cache_dir else None,
        )
        self.multilingual = self.model.model.is_multilingual
        self._batched = None

    def _language(self, language: str | None = None) -> str | None:
        """The language to decode in: this recording's, else ``asr.language``; None to
        detect it. An English-only model decodes English whatever is asked (with a
        warning when something else was)."""
        lang = (language or self.cfg.language or "auto").strip().lower()
        if not self.multilingual:
            if lang not in ("auto", "en"):
                get_logger().warning("English-only Whisper model: decoding English, not the "
                                     "language asked for", language=lang, model=self.cfg.model)
            return "en"
        return None if lang == "auto" else lang

    def transcribe(self, audio: Audio, progress: Progress | None = None,
                   language: str | None = None, prompt: str | None = None) -> Transcript:
        kwargs = dict(
            language=self._language(language),
            beam_size=self.cfg.beam_size,
            vad_filter=self.cfg.vad_filter,
            word_timestamps=self.cfg.word_timestamps,
            initial_prompt=prompt if prompt is not None else self.cfg.initial_prompt,
            condition_on_previous_text=False,
        )
        if self.device == "cuda" and self.cfg.batch_size > 1:
            # Batched long-form pipeline: VAD chunks decoded together, the GPU fast path.
            from faster_whisper import BatchedInferencePipeline

            if self._batched is None:
                self._batched = BatchedInferencePipeline(model=self.model)
            seg_iter, info = self._batched.transcribe(
                audio.samples, batch_size=self.cfg.batch_size, **kwargs
            )
        else:
            seg_iter, info = self.model.transcribe(audio.samples, **kwargs)
        segments: list[Segment] = []
        total = audio.duration_s
        for s in seg_iter:  # a generator: decoding happens as we iterate
            words = [
                Word(float(w.start), float(w.end), w.word, float(w.probability))
                for w in (s.words or [])
            ]
            segments.append(Segment(float(s.start), float(s.end), s.text.strip(), words))
            if progress:
                progress("transcribe", min(float(s.end), total), total)
        return Transcript(segments=segments, language=info.language)
