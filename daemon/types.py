"""What flows between the stages: plain dataclasses, and the two callback types.

This module is the bottom of the house: it imports nothing of minutesd, so every stage,
backend and integration can depend on it without depending on each other. The Protocols
the stages implement are beside it, in :mod:`daemon.protocols`.

    recording ──decode──▶ Audio ──Diarizer──▶ Diarization ─┐
                              └──Transcriber──▶ Transcript ─┴─join──▶ SpeakerTranscript
    SpeakerTranscript + MeetingFacts ──MinutesWriter──▶ Minutes
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

SAMPLE_RATE = 16_000

# Progress callback: (stage, seconds of audio done, seconds of audio in total)
Progress = Callable[[str, float, float], None]

# Token callback for streaming generation: receives each new piece of text.
TokenSink = Callable[[str], None]


# --------------------------------------------------------------------------- hearing


@dataclass(frozen=True)
class Audio:
    """Decoded audio: mono float32 samples in [-1, 1] at ``sample_rate``."""

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE
    source: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)

    def slice(self, start_s: float, end_s: float) -> np.ndarray:
        a = max(0, int(round(start_s * self.sample_rate)))
        b = min(len(self.samples), int(round(end_s * self.sample_rate)))
        return self.samples[a:b]


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
class Evidence:
    """Why a speaker got a name: ``kind`` "voice" (``similarity`` of the speaker's voice to the
    enrolled ``profile``), or "words" (how people addressed each other; ``detail`` says how)."""

    kind: str
    name: str
    similarity: float | None = None
    profile: str | None = None
    score: float | None = None
    detail: str | None = None

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: dict) -> Evidence:
        return cls(d["kind"], d.get("name", ""), d.get("similarity"), d.get("profile"),
                   d.get("score"), d.get("detail"))


@dataclass
class Speaker:
    id: str
    name: str | None = None
    talk_time_s: float = 0.0
    evidence: list[Evidence] = field(default_factory=list)
    confidence: float | None = None  # 0..1, how sure the name is (None: unnamed)

    def to_json(self, talk_digits: int = 2) -> dict:
        d: dict = {"id": self.id, "name": self.name,
                   "talk_time_s": round(self.talk_time_s, talk_digits)}
        if self.evidence or self.confidence is not None:
            d["evidence"] = [e.to_json() for e in self.evidence]
            d["confidence"] = None if self.confidence is None else round(self.confidence, 3)
        return d


@dataclass
class VoiceMatch:
    """A diarized speaker recognised as an enrolled person."""

    speaker: str
    name: str
    similarity: float
    runner_up: float | None  # best similarity to any other person (None: nobody else)
    model_id: str
    confidence: float | None = None


@dataclass
class SpeakerSegment:
    start: float
    end: float
    speaker: str
    text: str
    confidence: float | None = None  # mean ASR word probability, where the ASR gives one


def _speakers_from_json(items: list[dict]) -> list[Speaker]:
    return [Speaker(s["id"], s.get("name"), float(s.get("talk_time_s", 0.0)),
                    [Evidence.from_json(e) for e in s.get("evidence", [])], s.get("confidence"))
            for s in items]


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
            speakers=_speakers_from_json(d["speakers"]),
            segments=[SpeakerSegment(float(s["start"]), float(s["end"]), s["speaker"], s["text"],
                                     s.get("confidence"))
                      for s in d["segments"]],
            language=d.get("language"),
            source=d.get("source", ""),
        )

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "duration_s": round(self.duration_s, 3),
            "language": self.language,
            "speakers": [s.to_json() for s in self.speakers],
            "segments": [
                {"start": round(s.start, 3), "end": round(s.end, 3), "speaker": s.speaker,
                 "text": s.text,
                 **({} if s.confidence is None else {"confidence": round(s.confidence, 3)})}
                for s in self.segments
            ],
        }


# --------------------------------------------------------------------------- understanding


@dataclass
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass
class Quote:
    """A sentence said in the meeting, that an item of the minutes rests on: where it is in
    the transcript (``turn``: index of the segment; ``start``: seconds), who said it (speaker
    id and, when known, name) and the words as transcribed."""

    turn: int
    start: float
    speaker: str
    text: str
    name: str | None = None

    def to_json(self) -> dict:
        return {"turn": self.turn, "start": round(self.start, 2), "speaker": self.speaker,
                "name": self.name, "text": self.text}

    @classmethod
    def from_json(cls, d: dict) -> Quote:
        return cls(int(d["turn"]), float(d["start"]), d["speaker"], d["text"], d.get("name"))


# How an action item's owner was established (ActionItem.how).
OWNER_HOW = {
    "took it on": "said they would do it",
    "accepted": "was asked and accepted",
    "handed over": "took it over from someone else",
    "model": "the model's reading only: check it",
}


@dataclass
class ActionItem:
    owner: str  # an attendee's name, a "Speaker N" label, or "unassigned": never invented
    task: str
    due: str | None = None
    evidence: list[Quote] = field(default_factory=list)  # what was said, first to last
    how: str = ""  # one of OWNER_HOW ("" for items made before evidence was kept)
    weak: bool = False  # the evidence checked out only in part: the reader should check

    def to_json(self) -> dict:
        d: dict = {"owner": self.owner, "task": self.task, "due": self.due}
        if self.evidence:
            d["evidence"] = [q.to_json() for q in self.evidence]
        if self.how:
            d["how"] = self.how
        if self.weak:
            d["weak"] = True
        return d

    @classmethod
    def from_json(cls, d: dict) -> ActionItem:
        return cls(d["owner"], d["task"], d.get("due"),
                   [Quote.from_json(q) for q in d.get("evidence", [])], d.get("how", ""),
                   bool(d.get("weak", False)))


@dataclass
class QualityFlag:
    """Something in the minutes a reader should check: ``kind`` is one of FLAG_KINDS."""

    kind: str
    message: str
    start: float | None = None  # where in the recording, when it is one place

    def to_json(self) -> dict:
        d: dict = {"kind": self.kind, "message": self.message}
        if self.start is not None:
            d["start"] = round(self.start, 2)
        return d

    @classmethod
    def from_json(cls, d: dict) -> QualityFlag:
        return cls(d["kind"], d["message"], d.get("start"))


FLAG_KINDS = ("unnamed speaker", "low asr confidence", "weak evidence", "model repair",
              "not in transcript", "dropped")


@dataclass
class Topic:
    """Discussion points about one subject, in the order the meeting reached them."""

    title: str
    points: list[str] = field(default_factory=list)


@dataclass
class MeetingFacts:
    """What the pipeline knows for certain; never asked of the model."""

    date: str  # YYYY-MM-DD
    duration_s: float
    attendees: list[str]  # named speakers and roster, in order of first speech
    speakers: list[Speaker]
    source: str = ""
    time: str | None = None  # HH:MM, when known
    date_source: str = ""  # where date and time came from: one of DATE_SOURCES


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
    date_source: str = ""  # one of DATE_SOURCES ("" when not known)
    decision_evidence: list[list[Quote]] = field(default_factory=list)  # per decision
    topics: list[Topic] = field(default_factory=list)  # the discussion points, grouped
    flags: list[QualityFlag] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "title": self.title,
            "date": self.date,
            "date_source": self.date_source,
            "duration_s": round(self.duration_s, 1),
            "attendees": list(self.attendees),
            "speakers": [s.to_json(talk_digits=1) for s in self.speakers],
            "summary": self.summary,
            "discussion_points": list(self.discussion_points),
            "decisions": list(self.decisions),
            "decision_evidence": [[q.to_json() for q in qs] for qs in self.decision_evidence],
            "topics": [{"title": t.title, "points": list(t.points)} for t in self.topics],
            "action_items": [a.to_json() for a in self.action_items],
            "quality_flags": [f.to_json() for f in self.flags],
        }

    @classmethod
    def from_json(cls, d: dict) -> Minutes:
        return cls(
            title=d["title"], date=d["date"], attendees=list(d.get("attendees", [])),
            summary=d.get("summary", ""), discussion_points=list(d.get("discussion_points", [])),
            decisions=list(d.get("decisions", [])),
            action_items=[ActionItem.from_json(a) for a in d.get("action_items", [])],
            duration_s=float(d.get("duration_s", 0.0)),
            speakers=_speakers_from_json(d.get("speakers", [])),
            date_source=d.get("date_source", ""),
            decision_evidence=[[Quote.from_json(q) for q in qs]
                               for qs in d.get("decision_evidence", [])],
            topics=[Topic(t.get("title", ""), list(t.get("points", [])))
                    for t in d.get("topics", [])],
            flags=[QualityFlag.from_json(f) for f in d.get("quality_flags", [])],
        )


# --------------------------------------------------------------------------- results


@dataclass
class StageTimes:
    decode_s: float = 0.0
    diarize_s: float = 0.0
    transcribe_s: float = 0.0
    join_s: float = 0.0
    voices_s: float = 0.0
    names_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


@dataclass
class HearResult:
    transcript: SpeakerTranscript
    raw_transcript: Transcript
    diarization: Diarization
    times: StageTimes
    # speaker id -> L2-normalised voice embedding of its clean speech (voice profiles on)
    voices: dict[str, np.ndarray] = field(default_factory=dict)
    voice_model: str | None = None


# --------------------------------------------------------------------------- per-recording facts

# Where a meeting's date and time came from, best first (daemon.pipeline.meeting_when).
DATE_SOURCES = ("meeting facts", "settings", "recording tags", "file name", "file time")


@dataclass
class MeetingInfo:
    """What people said about one recording in its sidecar (``<stem>.meeting.yaml``, parsed
    by :mod:`daemon.facts`): every field optional. ``attendees`` become the roster for naming
    and Whisper's spelling hints, and bound the diarizer's speaker count; ``speakers`` is the
    exact count when known."""

    title: str | None = None
    date: str | None = None  # YYYY-MM-DD
    time: str | None = None  # HH:MM
    language: str | None = None  # ISO 639-1 code, e.g. "en"
    attendees: list[str] = field(default_factory=list)
    speakers: int | None = None
    source: str = ""  # the sidecar's file name

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> MeetingInfo:
        return cls(title=d.get("title"), date=d.get("date"), time=d.get("time"),
                   language=d.get("language"), attendees=list(d.get("attendees") or []),
                   speakers=d.get("speakers"), source=d.get("source", ""))
