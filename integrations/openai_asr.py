"""Transcription through the OpenAI audio API (``asr.backend: openai``). Audio leaves the machine.

Audio is encoded in memory as 16-bit mono PCM WAV (stdlib ``wave``) and uploaded as a file
tuple; nothing is written to disk. WAV rather than FLAC because its size is known exactly
before encoding (44 header bytes + 2 bytes a sample), so every piece is planned to fit
``max_upload_mb`` without an encode-measure-re-split loop, and it needs no codec. The cost
is about twice FLAC's upload size (~1.9 MB a minute at 16 kHz).

Pieces. The recording is cut at silences into pieces that each fit the upload limit (1 MB
here is 10^6 bytes, the stricter reading). Models that return text only (gpt-4o-*-transcribe,
gpt-transcribe) are also cut into pieces of at most 30 s, and each piece becomes one
``Segment`` spanning its speech, so segment times stay meaningful for speaker assignment.
Whisper models (``whisper-1``, or a Whisper on an OpenAI-compatible server) are asked for
``verbose_json`` with word and segment timestamps. Every piece's times are offset back to
the recording's clock. Wholly silent pieces are not uploaded. Up to four pieces are in
flight at once (``concurrency``); progress is reported as each piece finishes.

Cut points. Energy is measured in 10 ms blocks; a candidate cut at a block boundary scores
the mean energy of the 300 ms around it, so a low score means a real pause on both sides,
not a stop consonant inside a word. Within the last stretch before each limit (half the
piece, at most 60 s) the quietest score is found and the cut goes in the middle of the last
run of candidates within 3 dB of it. With no pause in reach (music, crosstalk) it still cuts
at the quietest point there: mid-word only where that cannot be avoided.

Retries on 408/409/429/5xx and connection errors are the ``openai`` client's own
(``max_retries``, exponential backoff, honouring ``retry-after-ms``/``retry-after``). What is
still failing after them is raised as an :class:`OpenAIASRError` subclass whose message says
the cause in words a user can act on.
"""

from __future__ import annotations

import io
import wave
from bisect import bisect_right
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openai

from daemon.settings import ASRSettings
from daemon.types import Audio, Progress, Segment, Transcript, Word
from integrations.openai_common import (
    ApiKey,
    CallContext,
    ConfigurationError,
    OpenAIAuthError,
    OpenAIBackendError,
    OpenAIRequestError,
    OpenAIUnavailableError,
    make_client,
    translate_error,
)

MB = 1_000_000
WAV_HEADER_BYTES = 44  # what ``wave`` writes for PCM: RIFF + fmt (16) + data chunk headers
BYTES_PER_SAMPLE = 2  # 16-bit mono
TEXT_ONLY_PIECE_S = 30.0  # piece (and segment) length cap for models without timestamps
MIN_PIECE_S = 1.0  # an upload limit that allows less than this is a configuration mistake
BLOCK_S = 0.010  # energy resolution and cut-point grid
FRAME_BLOCKS = 3  # 30 ms RMS frames for "is there sound here"
PAUSE_BLOCKS = 30  # 300 ms window scored around a candidate cut
SEARCH_MAX_S = 60.0  # how far back from a limit to look for a pause (and at most half a piece)
QUIET_TOLERANCE_DB = 3.0
SILENT_PIECE_DBFS = -60.0  # a piece whose loudest 30 ms frame is below this is not uploaded
VOICED_ABOVE_FLOOR_DB = 10.0  # speech span of a text-only piece: frames this far above the floor
DEFAULT_CONCURRENCY = 4

# Languages written without spaces between words: no leading space on their word texts.
_UNSPACED = {"zh", "ja", "th", "lo", "my", "km", "bo", "yue"}

# Whisper's verbose_json names the language ("english"); the pipeline uses ISO codes ("en").
_WHISPER_LANGUAGE_TABLE = """
english:en chinese:zh german:de spanish:es russian:ru korean:ko french:fr japanese:ja
portuguese:pt turkish:tr polish:pl catalan:ca dutch:nl arabic:ar swedish:sv italian:it
indonesian:id hindi:hi finnish:fi vietnamese:vi hebrew:he ukrainian:uk greek:el
malay:ms czech:cs romanian:ro danish:da hungarian:hu tamil:ta norwegian:no thai:th
urdu:ur croatian:hr bulgarian:bg lithuanian:lt latin:la maori:mi malayalam:ml welsh:cy
slovak:sk telugu:te persian:fa latvian:lv bengali:bn serbian:sr azerbaijani:az
slovenian:sl kannada:kn estonian:et macedonian:mk breton:br basque:eu icelandic:is
armenian:hy nepali:ne mongolian:mn bosnian:bs kazakh:kk albanian:sq swahili:sw
galician:gl marathi:mr punjabi:pa sinhala:si khmer:km shona:sn yoruba:yo somali:so
afrikaans:af occitan:oc georgian:ka belarusian:be tajik:tg sindhi:sd gujarati:gu
amharic:am yiddish:yi lao:lo uzbek:uz faroese:fo haitian_creole:ht pashto:ps
turkmen:tk nynorsk:nn maltese:mt sanskrit:sa luxembourgish:lb myanmar:my tibetan:bo
tagalog:tl malagasy:mg assamese:as tatar:tt hawaiian:haw lingala:ln hausa:ha
bashkir:ba javanese:jw sundanese:su cantonese:yue
"""
_WHISPER_LANGUAGES = dict(pair.split(":") for pair in _WHISPER_LANGUAGE_TABLE.split())


# --------------------------------------------------------------------------- errors

# The error classes live in integrations.openai_common (shared with the LLM backend) and are
# re-exported here under their old names: ConfigurationError, OpenAIAuthError,
# OpenAIUnavailableError, OpenAIRequestError, all subclasses of OpenAIASRError.
OpenAIASRError = OpenAIBackendError

__all__ = [
    "ConfigurationError",
    "Levels",
    "OpenAIASRError",
    "OpenAIAuthError",
    "OpenAIRequestError",
    "OpenAITranscriber",
    "OpenAIUnavailableError",
    "encode_wav",
    "language_code",
    "punctuate_words",
]


# --------------------------------------------------------------------------- audio helpers


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """Float samples in [-1, 1] as a 16-bit mono PCM WAV file, in memory."""
    pcm = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    pcm = np.round(pcm * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(BYTES_PER_SAMPLE)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


class Levels:
    """Energy of a recording in 10 ms blocks, for finding pauses and the speech in a piece."""

    def __init__(self, samples: np.ndarray, sample_rate: int):
        self.n = len(samples)
        self.sample_rate = sample_rate
        self.hop = max(1, int(round(sample_rate * BLOCK_S)))
        nb = -(-self.n // self.hop)
        whole = (self.n // self.hop) * self.hop
        blocks = samples[:whole].reshape(-1, self.hop)
        energy = np.einsum("ij,ij->i", blocks, blocks).astype(np.float64)
        if whole < self.n:
            tail = samples[whole:].astype(np.float64)
            energy = np.append(energy, float(np.dot(tail, tail)))
        self.nb = nb
        self.cum = np.concatenate([[0.0], np.cumsum(energy)])
        frames = max(1, nb - FRAME_BLOCKS + 1)
        idx = np.arange(frames)
        hi = np.minimum(idx + FRAME_BLOCKS, nb)
        # mean square of each 30 ms frame (10 ms hop), in dB re full-scale square wave
        self.frame_db = self._db((self.cum[hi] - self.cum[idx]) / ((hi - idx) * self.hop))
        self.floor_db = float(np.percentile(self.frame_db, 10)) if nb else -120.0

    @staticmethod
    def _db(mean_square: np.ndarray) -> np.ndarray:
        return 10.0 * np.log10(np.maximum(mean_square, 0.0) + 1e-12)

    def pause_score_db(self, boundaries: np.ndarray) -> np.ndarray:
        """Mean energy (dB) of the 300 ms centred on each block boundary."""
        half = PAUSE_BLOCKS // 2
        lo = np.clip(boundaries - half, 0, self.nb)
        hi = np.clip(boundaries + half, 0, self.nb)
        width = np.maximum(hi - lo, 1) * self.hop
        return self._db((self.cum[hi] - self.cum[lo]) / width)

    def find_cut(self, start: int, limit: int) -> int:
        """A sample index in (start, limit] at the middle of the quietest late pause."""
        b0 = -(-start // self.hop)
        b_hi = limit // self.hop
        search = min((limit - start) / 2.0, SEARCH_MAX_S * self.sample_rate)
        b_lo = max(b0 + 1, int((limit - search) // self.hop))
        if b_hi < b_lo:  # a limit under one block: cut exactly there
            return limit
        cand = np.arange(b_lo, b_hi + 1)
        score = self.pause_score_db(cand)
        quiet = score <= score.min() + QUIET_TOLERANCE_DB
        last = int(np.flatnonzero(quiet)[-1])
        first = last
        while first > 0 and quiet[first - 1]:
            first -= 1
        return int(cand[(first + last) // 2]) * self.hop

    def plan(self, max_piece: int) -> list[tuple[int, int]]:
        """Cut [0, n) into pieces of at most ``max_piece`` samples, at pauses."""
        pieces: list[tuple[int, int]] = []
        start = 0
        while self.n - start > max_piece:
            cut = self.find_cut(start, start + max_piece)
            pieces.append((start, cut))
            start = cut
        if start < self.n or not pieces:
            pieces.append((start, self.n))
        return pieces

    def _frames_in(self, a: int, b: int) -> tuple[int, int]:
        f0 = -(-a // self.hop)
        f1 = b // self.hop - FRAME_BLOCKS + 1  # frames lying wholly inside [a, b)
        if f1 <= f0:  # shorter than a frame: every frame touching it
            f0, f1 = a // self.hop, max(a // self.hop + 1, -(-b // self.hop))
        return max(0, f0), min(len(self.frame_db), f1)

    def is_silent(self, a: int, b: int) -> bool:
        f0, f1 = self._frames_in(a, b)
        return f1 <= f0 or float(self.frame_db[f0:f1].max()) < SILENT_PIECE_DBFS

    def speech_span(self, a: int, b: int) -> tuple[int, int]:
        """First and last sample of sound clearly above the recording's noise floor in [a, b)."""
        f0, f1 = self._frames_in(a, b)
        thr = max(SILENT_PIECE_DBFS, self.floor_db + VOICED_ABOVE_FLOOR_DB)
        loud = np.flatnonzero(self.frame_db[f0:f1] > thr)
        if loud.size == 0:
            return a, b
        centre = FRAME_BLOCKS * self.hop // 2
        s = (f0 + int(loud[0])) * self.hop + centre - self.hop // 2
        e = (f0 + int(loud[-1])) * self.hop + centre + self.hop // 2
        return max(a, s), min(b, e)


# --------------------------------------------------------------------------- text helpers


def _norm(token: str) -> str:
    return "".join(c for c in token.casefold() if c.isalnum())


def punctuate_words(words: list[str], text: str) -> list[str]:
    """Whisper's word list has no punctuation; take each word's spelling from the segment
    text when they line up (so word-level speaker splits keep commas and full stops)."""
    tokens = text.split()
    out: list[str] = []
    j = 0
    for w in words:
        key = _norm(w)
        found = None
        if key:
            for k in range(j, min(j + 4, len(tokens))):
                if _norm(tokens[k]) == key:
                    found = k
                    break
        if found is None:
            out.append(w.strip())
        else:
            out.append(tokens[found])
            j = found + 1
    return out


def language_code(name: str | None) -> str | None:
    if not name:
        return None
    key = name.strip().lower()
    return _WHISPER_LANGUAGES.get(key.replace(" ", "_"), key)


# --------------------------------------------------------------------------- the backend


@dataclass(frozen=True)
class _Piece:
    index: int
    start: int  # samples
    end: int
    upload: bool  # False: silent, not sent


class OpenAITranscriber:
    """``Transcriber`` over the OpenAI audio transcription endpoint (or a compatible server)."""

    name = "openai"

    def __init__(self, cfg: ASRSettings, cache_dir: Path | None = None, *,
                 concurrency: int = DEFAULT_CONCURRENCY):
        self.cfg = cfg
        oc = cfg.openai
        self.model = oc.model
        env = oc.api_key_env
        self.key = ApiKey(env, oc.api_key_file, backend="openai ASR",
                          setting="asr.openai.api_key_env")
        key = self.key.current()
        self.api_key_env = env
        self.max_upload_bytes = int(oc.max_upload_mb * MB)
        self.timestamps = "whisper" in self.model.lower()  # verbose_json with word times
        self.concurrency = max(1, int(concurrency))
        self.client = make_client(key, oc.base_url, oc.max_retries, oc.timeout_s)
        self.endpoint = str(self.client.base_url).rstrip("/") + "/audio/transcriptions"
        self._ctx = CallContext(
            task="transcription", model=self.model, endpoint=self.endpoint, key_env=env,
            max_retries=oc.max_retries, timeout_s=oc.timeout_s,
            base_url_setting="asr.openai.base_url",
            key_file=str(self.key.file) if self.key.file else None,
        )

    # ------------------------------------------------------------------ planning

    def max_piece_samples(self, sample_rate: int) -> int:
        by_size = (self.max_upload_bytes - WAV_HEADER_BYTES) // BYTES_PER_SAMPLE
        limit = by_size if self.timestamps else min(by_size, int(TEXT_ONLY_PIECE_S * sample_rate))
        if limit < MIN_PIECE_S * sample_rate:
            raise ConfigurationError(
                f"asr.openai.max_upload_mb = {self.cfg.openai.max_upload_mb} allows only "
                f"{limit / sample_rate:.2f} s of audio an upload; use at least 0.05"
            )
        return limit

    def plan(self, audio: Audio) -> tuple[Levels, list[_Piece]]:
        samples = np.ascontiguousarray(audio.samples, dtype=np.float32).reshape(-1)
        levels = Levels(samples, audio.sample_rate)
        spans = levels.plan(self.max_piece_samples(audio.sample_rate))
        pieces = [_Piece(i, a, b, not levels.is_silent(a, b)) for i, (a, b) in enumerate(spans)]
        return levels, pieces

    # ------------------------------------------------------------------ requests

    def _language(self, language: str | None = None) -> str | None:
        """This recording's language, else ``asr.language``; None: the service detects it."""
        lang = (language or self.cfg.language or "auto").strip().lower()
        return None if lang == "auto" else lang

    def _request(self, wav: bytes, index: int, language: str | None = None,
                 prompt: str | None = None):
        kwargs: dict = {"model": self.model, "file": (f"piece-{index:04d}.wav", wav, "audio/wav")}
        if language:
            kwargs["language"] = language
        if prompt:
            kwargs["prompt"] = prompt
        if self.timestamps:
            kwargs["response_format"] = "verbose_json"
            kwargs["timestamp_granularities"] = ["word", "segment"]
        else:
            kwargs["response_format"] = "json"
        try:
            self.client.api_key = self.key.current()  # a fixed key file takes effect now
            return self.client.audio.transcriptions.create(**kwargs)
        except openai.OpenAIError as exc:
            raise translate_error(exc, self._ctx) from exc

    def _transcribe_piece(
        self, samples: np.ndarray, sr: int, levels: Levels, piece: _Piece,
        asked: str | None = None, prompt: str | None = None,
    ) -> tuple[list[Segment], str | None]:
        wav = encode_wav(samples[piece.start:piece.end], sr)  # planned to fit the limit
        resp = self._request(wav, piece.index, asked, prompt)
        offset = piece.start / sr
        end = piece.end / sr
        segments = getattr(resp, "segments", None)
        words = getattr(resp, "words", None)
        language = language_code(getattr(resp, "language", None))
        if language is None:
            detected = getattr(resp, "languages", None) or []
            language = detected[0].code if detected else None
        language = language or asked
        if segments or words:
            return self._timed(resp.text, segments or [], words or [], offset, end, language), language
        text = (getattr(resp, "text", None) or "").strip()
        if not text:
            return [], language
        a, b = levels.speech_span(piece.start, piece.end)
        return [Segment(a / sr, b / sr, text)], language

    def _timed(self, text, raw_segments, raw_words, offset, end, language) -> list[Segment]:
        def t(x: float) -> float:
            return min(max(offset + float(x), offset), end)

        spaced = (language or self.cfg.language) not in _UNSPACED
        segs = [Segment(t(s.start), t(s.end), (s.text or "").strip())
                for s in sorted(raw_segments, key=lambda s: s.start)]
        if not segs:  # words only: one segment holding them all
            ws = sorted(raw_words, key=lambda w: w.start)
            segs = [Segment(t(ws[0].start), t(ws[-1].end), (text or "").strip())]
        starts = [s.start for s in segs]
        groups: list[list] = [[] for _ in segs]
        for w in sorted(raw_words, key=lambda w: w.start):
            mid = (t(w.start) + t(w.end)) / 2
            i = max(0, bisect_right(starts, mid) - 1)
            if mid > segs[i].end and i + 1 < len(segs) and (
                segs[i + 1].start - mid < mid - segs[i].end
            ):
                i += 1
            groups[i].append(w)
        out: list[Segment] = []
        for seg, ws in zip(segs, groups, strict=True):
            if ws:
                spelled = (punctuate_words([w.word for w in ws], seg.text) if spaced
                           else [w.word.strip() for w in ws])
                lead = " " if spaced else ""
                seg.words = [
                    Word(t(w.start), t(w.end), lead + s) for w, s in zip(ws, spelled, strict=True)
                ]
            if seg.text or seg.words:
                out.append(seg)
        return out

    # ------------------------------------------------------------------ Transcriber

    def transcribe(self, audio: Audio, progress: Progress | None = None,
                   language: str | None = None, prompt: str | None = None) -> Transcript:
        total = audio.duration_s
        fixed = self._language(language)
        prompt = prompt if prompt is not None else self.cfg.initial_prompt
        sr = audio.sample_rate
        samples = np.ascontiguousarray(audio.samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            return Transcript(segments=[], language=None)
        levels, pieces = self.plan(audio)
        results: dict[int, tuple[list[Segment], str | None]] = {}
        done_s = 0.0

        def finished(piece: _Piece) -> None:
            nonlocal done_s
            done_s += (piece.end - piece.start) / sr
            if progress:
                progress("transcribe", min(done_s, total), total)

        todo = [p for p in pieces if p.upload]
        for p in pieces:
            if not p.upload:
                results[p.index] = ([], None)
                finished(p)
        if self.concurrency == 1 or len(todo) <= 1:
            for p in todo:
                results[p.index] = self._transcribe_piece(samples, sr, levels, p, fixed, prompt)
                finished(p)
        else:
            pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai-asr")
            ok = False
            try:
                futures: dict[Future, _Piece] = {
                    pool.submit(self._transcribe_piece, samples, sr, levels, p, fixed,
                                prompt): p for p in todo
                }
                pending = set(futures)
                while pending:
                    complete, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for f in complete:
                        p = futures[f]
                        results[p.index] = f.result()  # raises the first failure
                        finished(p)
                ok = True
            finally:
                # On a failure (or Ctrl-C) queued pieces are dropped and the error surfaces
                # now; requests already in flight end on their own (bounded by timeout_s).
                pool.shutdown(wait=ok, cancel_futures=True)
        segments: list[Segment] = []
        languages: list[str] = []
        for p in pieces:
            segs, lang = results[p.index]
            segments.extend(segs)
            if lang:
                languages.append(lang)
        found = fixed or (max(set(languages), key=languages.count) if languages else None)
        return Transcript(segments=segments, language=found)
