"""The minutesd pipeline in one file: typed stage inputs/outputs, one Protocol per stage.

    recording ──decode──▶ Audio ──Diarizer──▶ Diarization ─┐
                              └──Transcriber──▶ Transcript ─┴─assign_speakers──▶ SpeakerTranscript

Every stage is replaceable: anything that satisfies the Protocol can be passed in. The
backends named in settings are built by :func:`build_transcriber` / :func:`build_diarizer`,
which import heavy libraries (torch, ctranslate2, pyannote) only when that backend is used,
so the CLI starts fast. Models load in the backend's constructor, once per process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from daemon.audio import Audio, decode_audio
from daemon.settings import (
    ASRSettings,
    DiarizationSettings,
    LLMSettings,
    Settings,
    TurnSettings,
)

# --------------------------------------------------------------------------- types


@dataclass
class Word:
    start: float
    end: float
    text: str
    probability: float | None = None


@dataclass
class Segment:
    """One transcribed stretch of speech; ``words`` is empty where a backend gives none."""

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    segments: list[Segment]
    language: str | None = None


@dataclass
class SpeakerTurn:
    start: float
    end: float
    speaker: str


@dataclass
class Diarization:
    turns: list[SpeakerTurn]

    @property
    def speakers(self) -> list[str]:
        return sorted({t.speaker for t in self.turns})


@dataclass
class Speaker:
    id: str
    name: str | None = None
    talk_time_s: float = 0.0


@dataclass
class SpeakerSegment:
    start: float
    end: float
    speaker: str
    text: str


@dataclass
class SpeakerTranscript:
    """The hear half's result, in the shape of the eval contract (transcript.json)."""

    duration_s: float
    speakers: list[Speaker]
    segments: list[SpeakerSegment]
    language: str | None = None
    source: str = ""

    @classmethod
    def from_json(cls, d: dict) -> SpeakerTranscript:
        return cls(
            duration_s=float(d["duration_s"]),
            speakers=[Speaker(s["id"], s.get("name"), float(s.get("talk_time_s", 0.0)))
                      for s in d["speakers"]],
            segments=[SpeakerSegment(float(s["start"]), float(s["end"]), s["speaker"], s["text"])
                      for s in d["segments"]],
            language=d.get("language"),
            source=d.get("source", ""),
        )

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "duration_s": round(self.duration_s, 3),
            "language": self.language,
            "speakers": [
                {"id": s.id, "name": s.name, "talk_time_s": round(s.talk_time_s, 2)}
                for s in self.speakers
            ],
            "segments": [
                {"start": round(s.start, 3), "end": round(s.end, 3), "speaker": s.speaker,
                 "text": s.text}
                for s in self.segments
            ],
        }


# Progress callback: (stage, seconds of audio done, seconds of audio in total)
Progress = Callable[[str, float, float], None]


@dataclass
class ActionItem:
    owner: str  # an attendee's name, or "unassigned": never an invented person
    task: str
    due: str | None = None


@dataclass
class MeetingFacts:
    """What the pipeline knows for certain; never asked of the model."""

    date: str  # YYYY-MM-DD
    duration_s: float
    attendees: list[str]  # named speakers and roster, in order of first speech
    speakers: list[Speaker]
    source: str = ""
    time: str | None = None  # HH:MM, when known


@dataclass
class Minutes:
    title: str
    date: str
    attendees: list[str]
    summary: str
    discussion_points: list[str]
    decisions: list[str]
    action_items: list[ActionItem]
    duration_s: float = 0.0
    speakers: list[Speaker] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "title": self.title,
            "date": self.date,
            "duration_s": round(self.duration_s, 1),
            "attendees": list(self.attendees),
            "speakers": [{"id": s.id, "name": s.name, "talk_time_s": round(s.talk_time_s, 1)}
                         for s in self.speakers],
            "summary": self.summary,
            "discussion_points": list(self.discussion_points),
            "decisions": list(self.decisions),
            "action_items": [asdict(a) for a in self.action_items],
        }

    @classmethod
    def from_json(cls, d: dict) -> Minutes:
        return cls(
            title=d["title"], date=d["date"], attendees=list(d.get("attendees", [])),
            summary=d.get("summary", ""), discussion_points=list(d.get("discussion_points", [])),
            decisions=list(d.get("decisions", [])),
            action_items=[ActionItem(a["owner"], a["task"], a.get("due"))
                          for a in d.get("action_items", [])],
            duration_s=float(d.get("duration_s", 0.0)),
            speakers=[Speaker(s["id"], s.get("name"), float(s.get("talk_time_s", 0.0)))
                      for s in d.get("speakers", [])],
        )


@dataclass
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


# Token callback for streaming generation: receives each new piece of text.
TokenSink = Callable[[str], None]


# --------------------------------------------------------------------------- stages


@runtime_checkable
class Transcriber(Protocol):
    name: str

    def transcribe(self, audio: Audio, progress: Progress | None = None) -> Transcript: ...


@runtime_checkable
class Diarizer(Protocol):
    name: str

    def diarize(self, audio: Audio, progress: Progress | None = None) -> Diarization: ...


@runtime_checkable
class ChatModel(Protocol):
    """An instruction-tuned LLM behind a chat interface (local transformers, or an
    OpenAI-compatible server). Deterministic unless settings ask for sampling."""

    name: str
    context_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def chat(
        self,
        messages: list[ChatMessage],
        max_new_tokens: int,
        json_output: bool = False,
        on_token: TokenSink | None = None,
    ) -> str: ...


@runtime_checkable
class MinutesWriter(Protocol):
    name: str

    def write(self, transcript: SpeakerTranscript, facts: MeetingFacts) -> Minutes: ...


class NoDiarizer:
    """Everyone is one speaker: for dictation, or when diarization is switched off."""

    name = "none"

    def diarize(self, audio: Audio, progress: Progress | None = None) -> Diarization:
        return Diarization([SpeakerTurn(0.0, audio.duration_s, "SPEAKER_00")])


def build_transcriber(cfg: ASRSettings, cache_dir: Path) -> Transcriber:
    if cfg.backend == "faster-whisper":
        from daemon.backends.asr_faster_whisper import FasterWhisperTranscriber

        return FasterWhisperTranscriber(cfg, cache_dir)
    if cfg.backend == "transformers":
        from daemon.backends.asr_transformers import TransformersTranscriber

        return TransformersTranscriber(cfg, cache_dir)
    if cfg.backend == "openai":
        from integrations.openai_asr import OpenAITranscriber

        return OpenAITranscriber(cfg)
    raise ValueError(f"unknown ASR backend {cfg.backend!r}")


def build_diarizer(cfg: DiarizationSettings, cache_dir: Path) -> Diarizer:
    if cfg.backend == "senko":
        from daemon.backends.diar_senko import SenkoDiarizer

        return SenkoDiarizer(cfg)
    if cfg.backend == "pyannote":
        from daemon.backends.diar_pyannote import PyannoteDiarizer

        return PyannoteDiarizer(cfg, cache_dir)
    if cfg.backend == "none":
        return NoDiarizer()
    raise ValueError(f"unknown diarization backend {cfg.backend!r}")


def build_chat(cfg: LLMSettings, cache_dir: Path) -> ChatModel:
    if cfg.backend == "transformers":
        from daemon.backends.llm_transformers import TransformersChat

        return TransformersChat(cfg, cache_dir)
    if cfg.backend == "openai":
        from integrations.openai_llm import OpenAIChat

        return OpenAIChat(cfg)
    raise ValueError(f"unknown LLM backend {cfg.backend!r}")


# --------------------------------------------------------------------------- joining


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def speaker_at(turns: list[SpeakerTurn], start: float, end: float) -> str | None:
    """The speaker with the most overlap with [start, end]; if no turn overlaps (a word in a
    gap the diarizer called silence), the speaker of the nearest turn within 2 s."""
    best, best_ov = None, 0.0
    totals: dict[str, float] = {}
    for t in turns:
        ov = _overlap(start, end, t.start, t.end)
        if ov > 0:
            totals[t.speaker] = totals.get(t.speaker, 0.0) + ov
    for spk, ov in totals.items():
        if ov > best_ov:
            best, best_ov = spk, ov
    if best is not None:
        return best
    mid = (start + end) / 2
    nearest, dist = None, 2.0
    for t in turns:
        d = 0.0 if t.start <= mid <= t.end else min(abs(mid - t.start), abs(mid - t.end))
        if d < dist:
            nearest, dist = t.speaker, d
    return nearest


def _join_text(parts: list[str]) -> str:
    text = "".join(parts).strip()
    return " ".join(text.split())


_SENTENCE_END = (".", "?", "!")


def snap_to_sentences(
    units: list[tuple[float, float, str, str | None]], max_edge_words: int = 3
) -> list[tuple[float, float, str, str | None]]:
    """Move speaker changes that fall a word or three inside a sentence to its boundary.

    Whisper's word times drift by a few hundred ms at segment edges, so the first word of a
    reply ("From marketing, ...") often lands in the previous speaker's turn. Within each
    sentence, a run of at most ``max_edge_words`` words at its start or end that disagrees
    with the rest of the sentence is given to the sentence's speaker. Real changes of speaker
    mid-sentence (interruptions) keep their split, since they leave more than a few words on
    each side.
    """
    out = list(units)
    start = 0
    for i, u in enumerate(units + [(0.0, 0.0, ".", None)]):
        if i < len(units) and not u[2].strip().endswith(_SENTENCE_END):
            continue
        end = min(i, len(units) - 1)
        sent = list(range(start, end + 1))
        start = i + 1
        if len(sent) < 2:
            continue
        spks = [out[j][3] for j in sent]
        for edge in ("head", "tail"):
            seq = sent if edge == "head" else sent[::-1]
            vals = spks if edge == "head" else spks[::-1]
            run = 1
            while run < len(vals) and vals[run] == vals[0]:
                run += 1
            rest = len(vals) - run
            if run <= max_edge_words and rest > run and len(set(vals[run:])) == 1:
                for j in seq[:run]:
                    a, b, t, _ = out[j]
                    out[j] = (a, b, t, vals[run])
                spks = [out[j][3] for j in sent]
    return out


def assign_speakers(
    transcript: Transcript,
    diarization: Diarization,
    cfg: TurnSettings | None = None,
) -> list[SpeakerSegment]:
    """Join ASR output and diarization into speaker-attributed segments.

    Word strategy (default, where the ASR gives word times): each word goes to the speaker
    whose turn overlaps it most, so a segment in which the speaker changes is split at the
    word where it changes. Overlapped speech: the word goes to whichever speaker covers
    more of it (ASR yields one word stream, so it can't be given to both). Words no turn
    covers go to the nearest turn's speaker within 2 s, else stay with the previous word's
    speaker, so no words are dropped. Consecutive runs of one speaker are merged while the
    gap is under ``merge_gap_s`` and the segment under ``max_turn_s``.
    """
    cfg = cfg or TurnSettings()
    turns = sorted(diarization.turns, key=lambda t: t.start)
    units: list[tuple[float, float, str, str | None]] = []  # start, end, text, speaker
    for seg in transcript.segments:
        if cfg.strategy == "word" and seg.words:
            for w in seg.words:
                units.append((w.start, w.end, w.text, speaker_at(turns, w.start, w.end)))
        else:
            units.append((seg.start, seg.end, " " + seg.text.strip(),
                          speaker_at(turns, seg.start, seg.end)))
    if cfg.strategy == "word" and cfg.snap_to_sentences:
        units = snap_to_sentences(units)
    out: list[SpeakerSegment] = []
    cur: list[tuple[float, float, str, str | None]] = []
    prev_spk = turns[0].speaker if turns else "SPEAKER_00"

    def flush() -> None:
        if cur:
            text = _join_text([u[2] for u in cur])
            if text:
                out.append(SpeakerSegment(cur[0][0], cur[-1][1], cur[0][3] or prev_spk, text))
            cur.clear()

    for start, end, text, spk in units:
        spk = spk or prev_spk
        if cur and (
            spk != cur[0][3]
            or start - cur[-1][1] > cfg.merge_gap_s
            or end - cur[0][0] > cfg.max_turn_s
        ):
            flush()
        cur.append((start, end, text, spk))
        prev_spk = spk
    flush()
    return out


def speaker_stats(segments: list[SpeakerSegment], diarization: Diarization) -> list[Speaker]:
    """Speakers in order of first appearance in the transcript; talk time from diarization."""
    talk: dict[str, float] = {}
    for t in diarization.turns:
        talk[t.speaker] = talk.get(t.speaker, 0.0) + (t.end - t.start)
    order: list[str] = []
    for s in segments:
        if s.speaker not in order:
            order.append(s.speaker)
    return [Speaker(id=spk, talk_time_s=talk.get(spk, 0.0)) for spk in order]


def renumber(segments: list[SpeakerSegment], diarization: Diarization) -> None:
    """Name speakers SPEAKER_00, SPEAKER_01, … in order of first speech, in place."""
    mapping: dict[str, str] = {}
    for s in segments:
        if s.speaker not in mapping:
            mapping[s.speaker] = f"SPEAKER_{len(mapping):02d}"
    for t in sorted(diarization.turns, key=lambda t: t.start):
        if t.speaker not in mapping:
            mapping[t.speaker] = f"SPEAKER_{len(mapping):02d}"
    for s in segments:
        s.speaker = mapping[s.speaker]
    for t in diarization.turns:
        t.speaker = mapping[t.speaker]


# --------------------------------------------------------------------------- the hear half


@dataclass
class StageTimes:
    decode_s: float = 0.0
    diarize_s: float = 0.0
    transcribe_s: float = 0.0
    join_s: float = 0.0
    names_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


@dataclass
class HearResult:
    transcript: SpeakerTranscript
    raw_transcript: Transcript
    diarization: Diarization
    times: StageTimes


class Hearer:
    """Decode → diarize → transcribe → join. Holds its models; reuse it across files."""

    def __init__(
        self,
        settings: Settings,
        transcriber: Transcriber | None = None,
        diarizer: Diarizer | None = None,
    ):
        self.settings = settings
        cache = settings.resolved_cache_dir()
        self.transcriber = transcriber or build_transcriber(settings.asr, cache)
        self.diarizer = diarizer or build_diarizer(settings.diarization, cache)

    def hear(self, path: str | Path, progress: Progress | None = None) -> HearResult:
        times = StageTimes()
        t0 = time.perf_counter()
        audio = decode_audio(path)
        times.decode_s = time.perf_counter() - t0
        if progress:
            progress("decode", audio.duration_s, audio.duration_s)
        return self.hear_audio(audio, progress, times)

    def hear_audio(
        self, audio: Audio, progress: Progress | None = None, times: StageTimes | None = None
    ) -> HearResult:
        times = times or StageTimes()
        t0 = time.perf_counter()
        diarization = self.diarizer.diarize(audio, progress)
        times.diarize_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw = self.transcriber.transcribe(audio, progress)
        times.transcribe_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if not diarization.turns:  # silence or one unclustered voice: keep the words
            diarization = NoDiarizer().diarize(audio)
        segments = assign_speakers(raw, diarization, self.settings.turns)
        renumber(segments, diarization)
        result = SpeakerTranscript(
            duration_s=audio.duration_s,
            speakers=speaker_stats(segments, diarization),
            segments=segments,
            language=raw.language,
            source=audio.source,
        )
        times.join_s = time.perf_counter() - t0
        return HearResult(result, raw, diarization, times)


# --------------------------------------------------------------------------- the understand half

_DATE_IN_NAME = re.compile(
    r"(?<!\d)(20\d\d)[-_.]?(0[1-9]|1[0-2])[-_.]?(0[1-9]|[12]\d|3[01])"
    r"(?:[ T_-]?([01]\d|2[0-3])[-_.:h]?([0-5]\d))?(?!\d)"
)


def meeting_when(path: str | Path, configured: str | None = None) -> tuple[str, str | None]:
    """(YYYY-MM-DD, HH:MM or None): from settings, else the file name, else its mtime."""
    if configured:
        return configured, None
    m = _DATE_IN_NAME.search(Path(path).name)
    if m:
        y, mo, d, hh, mm = m.groups()
        return f"{y}-{mo}-{d}", (f"{hh}:{mm}" if hh else None)
    try:
        ts = datetime.fromtimestamp(Path(path).stat().st_mtime)
    except OSError:
        ts = datetime.now()
    return ts.strftime("%Y-%m-%d"), ts.strftime("%H:%M")


def meeting_facts(t: SpeakerTranscript, path: str | Path, settings: Settings) -> MeetingFacts:
    date, hhmm = meeting_when(path, settings.minutes.date)
    attendees: list[str] = []
    for i, s in enumerate(t.speakers):
        label = s.name or f"Speaker {i + 1}"
        if label not in attendees:
            attendees.append(label)
    return MeetingFacts(date=date, time=hhmm, duration_s=t.duration_s, attendees=attendees,
                        speakers=list(t.speakers), source=t.source)


@dataclass
class ProcessResult:
    hear: HearResult
    minutes: Minutes
    facts: MeetingFacts
    minutes_s: float
    names_s: float


class Processor:
    """The whole pipeline: hear, name the speakers, write the minutes. Models stay loaded."""

    def __init__(self, settings: Settings, hearer: Hearer | None = None,
                 writer: MinutesWriter | None = None, on_token: TokenSink | None = None,
                 log=None):
        from daemon.minutes import LLMMinutesWriter

        self.settings = settings
        if settings.minutes.roster and not settings.asr.initial_prompt:
            # Attendee names as spelling hints for Whisper, for the CLI and the daemon alike.
            settings.asr.initial_prompt = "Attendees: " + ", ".join(settings.minutes.roster) + "."
        self.hearer = hearer or Hearer(settings)
        if writer is None:
            chat = build_chat(settings.llm, settings.resolved_cache_dir())
            writer = LLMMinutesWriter(chat, settings.llm.max_new_tokens,
                                      settings.minutes.max_attempts, on_token=on_token, log=log,
                                      action_items=settings.minutes.action_items)
        self.writer = writer

    def hear(self, path: str | Path, progress: Progress | None = None) -> HearResult:
        """Step 1: decode, diarize, transcribe, join, and name the speakers."""
        from daemon.names import apply_names, assign_names

        heard = self.hearer.hear(path, progress)
        t0 = time.perf_counter()
        names, _evidence = assign_names(heard.transcript, self.settings.minutes.roster)
        apply_names(heard.transcript, names)
        heard.times.names_s = time.perf_counter() - t0
        return heard

    def understand(self, transcript: SpeakerTranscript, path: str | Path) -> tuple[Minutes, MeetingFacts]:
        """Step 2: minutes from a (named) speaker transcript; ``path`` dates the meeting."""
        facts = meeting_facts(transcript, path, self.settings)
        return self.writer.write(transcript, facts), facts

    def process(self, path: str | Path, progress: Progress | None = None) -> ProcessResult:
        heard = self.hear(path, progress)
        t0 = time.perf_counter()
        minutes, facts = self.understand(heard.transcript, path)
        return ProcessResult(heard, minutes, facts, time.perf_counter() - t0, heard.times.names_s)
