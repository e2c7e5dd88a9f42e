"""The minutesd pipeline, top to bottom. Every stage is a Protocol (:mod:`daemon.protocols`),
handed in already built: :mod:`daemon.registry` picks the implementations that settings
name (``registry.build_processor(settings)``). The data between stages are the dataclasses
of :mod:`daemon.types`.

    recording ──decode──▶ Audio ──Diarizer──▶ Diarization ─┐
                              └──Transcriber──▶ Transcript ─┴─join──▶ SpeakerTranscript
                                                                        │ name the speakers
    meeting facts (date, duration, attendees) ──┐                       ▼
                                                └──MinutesWriter──▶ Minutes

:class:`Hearer` is the hear half (decode, diarize, transcribe, join); :class:`Processor` adds
the speaker names and the understand half. With voice profiles on, the hear half also
embeds each diarized speaker's clean speech with the diarizer's model
(:class:`daemon.voices.recognizer.VoiceProfiles`), and naming matches those voices against
the enrolled people before it reads the words. The daemon runs the two halves as separate,
checkpointed steps (``hear``, then ``understand``). Models load in the backends'
constructors, once per process; reuse a Hearer or Processor across files.

A recording's facts (:class:`~daemon.types.MeetingInfo`, from its sidecar: :mod:`daemon.facts`)
steer both halves: the attendees are the roster (names, Whisper's spelling hints) and at most
that many speakers are diarized (``speakers`` gives the exact count); ``language`` is the
language Whisper decodes in; the title, date and time are the minutes'.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from daemon.audio import decode_audio, recorded_at
from daemon.backends.diar_none import NoDiarizer
from daemon.names import apply_names, assign_names
from daemon.protocols import Diarizer, MinutesWriter, Transcriber
from daemon.settings import Settings
from daemon.turns import assign_speakers, renumber, speaker_stats
from daemon.types import (
    Audio,
    HearResult,
    MeetingFacts,
    MeetingInfo,
    Minutes,
    Progress,
    SpeakerTranscript,
    StageTimes,
)
from daemon.voices.learner import learn_guesses
from daemon.voices.recognizer import VoiceProfiles
from daemon.voices.store import ProfileStore

# --------------------------------------------------------------------------- the hear half


class Hearer:
    """Decode → diarize → transcribe → join. Holds its models; reuse it across files."""

    def __init__(self, settings: Settings, transcriber: Transcriber, diarizer: Diarizer,
                 voices: VoiceProfiles | None = None):
        self.settings = settings
        self.transcriber = transcriber
        self.diarizer = diarizer
        self.voices = voices  # None: voice profiles off, nothing embedded

    def hear(self, path: str | Path, progress: Progress | None = None,
             info: MeetingInfo | None = None) -> HearResult:
        times = StageTimes()
        t0 = time.perf_counter()
        audio = decode_audio(path)
        times.decode_s = time.perf_counter() - t0
        if progress:
            progress("decode", audio.duration_s, audio.duration_s)
        return self.hear_audio(audio, progress, times, info)

    def hear_audio(
        self, audio: Audio, progress: Progress | None = None, times: StageTimes | None = None,
        info: MeetingInfo | None = None,
    ) -> HearResult:
        times = times or StageTimes()
        num, most = speaker_bounds(info)
        t0 = time.perf_counter()
        diarization = self.diarizer.diarize(audio, progress, num_speakers=num, max_speakers=most)
        times.diarize_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw = self.transcriber.transcribe(
            audio, progress, language=info.language if info else None,
            prompt=roster_prompt(self.settings, roster_for(self.settings, info)))
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
        heard = HearResult(result, raw, diarization, times)
        if self.voices is not None:
            t0 = time.perf_counter()
            heard.voices = self.voices.embed_speakers(audio, diarization)
            heard.voice_model = self.voices.model_id
            times.voices_s = time.perf_counter() - t0
        return heard


def roster_for(settings: Settings, info: MeetingInfo | None = None) -> list[str]:
    """Who is expected: the recording's attendees when its facts list them, else
    ``minutes.roster``."""
    return list(info.attendees) if info and info.attendees else list(settings.minutes.roster)


def speaker_bounds(info: MeetingInfo | None) -> tuple[int | None, int | None]:
    """(exact, at most) number of speakers the facts give: ``speakers``, else as many as
    the attendees (None: the diarizer's settings decide)."""
    if info is None:
        return None, None
    if info.speakers:
        return info.speakers, None
    return None, (len(info.attendees) or None)


def roster_prompt(settings: Settings, roster: list[str] | None = None) -> str | None:
    """The meeting's roster (``minutes.roster`` unless given) as spelling hints for Whisper
    ("Attendees: Kenji Watanabe, ...": without them Whisper base hears "Kenji" as "Candy"),
    unless a prompt is configured."""
    roster = settings.minutes.roster if roster is None else roster
    if settings.asr.initial_prompt or not roster:
        return settings.asr.initial_prompt
    return "Attendees: " + ", ".join(roster) + "."


# --------------------------------------------------------------------------- meeting facts

_DATE_IN_NAME = re.compile(
    r"(?<!\d)(20\d\d)[-_.]?(0[1-9]|1[0-2])[-_.]?(0[1-9]|[12]\d|3[01])"
    r"(?:[ T_-]?([01]\d|2[0-3])[-_.:h]?([0-5]\d))?(?!\d)"
)


def meeting_when(path: str | Path, configured: str | None = None, name: str | None = None,
                 info: MeetingInfo | None = None,
                 tags: bool = True) -> tuple[str, str | None, str]:
    """(YYYY-MM-DD, HH:MM or None, where they came from: one of ``DATE_SOURCES``): the
    recording's facts, else settings (``--date``), else the container's tags (with
    ``tags``), else the file name (``name``, when ``path`` is a copy under another name),
    else its mtime. A time missing where the date was found is taken from a later source
    only if that one gives the same date."""
    found: list[tuple[str, str | None, str]] = []
    if info and info.date:
        found.append((info.date, info.time, "meeting facts"))
    if configured:
        found.append((configured, None, "settings"))
    if tags:
        at = recorded_at(path)
        if at:
            found.append((*at, "recording tags"))
    m = _DATE_IN_NAME.search(name or Path(path).name)
    if m:
        y, mo, d, hh, mm = m.groups()
        found.append((f"{y}-{mo}-{d}", (f"{hh}:{mm}" if hh else None), "file name"))
    try:
        ts = datetime.fromtimestamp(Path(path).stat().st_mtime)
    except OSError:
        ts = datetime.now()
    found.append((ts.strftime("%Y-%m-%d"), ts.strftime("%H:%M"), "file time"))
    date, hhmm, source = found[0]
    if hhmm is None:
        hhmm = next((t for d, t, _ in found[1:] if d == date and t), None)
    if info and info.time and not (info and info.date):
        hhmm = info.time  # a time of day alone, for the date found elsewhere
    return date, hhmm, source


def meeting_facts(t: SpeakerTranscript, path: str | Path, settings: Settings,
                  info: MeetingInfo | None = None, name: str | None = None) -> MeetingFacts:
    date, hhmm, source = meeting_when(path, settings.minutes.date, name=name, info=info)
    return MeetingFacts(date=date, time=hhmm, duration_s=t.duration_s,
                        attendees=heard_attendees(t),
                        speakers=list(t.speakers), source=t.source, date_source=source)


def heard_attendees(t: SpeakerTranscript) -> list[str]:
    """The speakers heard, by name or "Speaker N", in order of first speech."""
    return list(dict.fromkeys(s.name or f"Speaker {i + 1}" for i, s in enumerate(t.speakers)))


def finish_minutes(m: Minutes, facts: MeetingFacts, info: MeetingInfo | None) -> Minutes:
    """What is certain overrides what the writer made of it: the date and where it came
    from, and the title the facts give."""
    m.date, m.date_source = facts.date, facts.date_source
    if info and info.title:
        m.title = info.title
    if info and info.attendees:
        m.attendees = attendance(facts, info.attendees)
    return m


def attendance(facts: MeetingFacts, listed: list[str]) -> list[str]:
    """Who was there, when the recording's facts list the attendees: the named speakers in
    order of first speech, then the listed people nobody's voice or words named (the list
    says they were there: a quiet attendee, or a name Whisper misheard), then "Speaker N"
    labels only for voices beyond the list (someone who was not on it)."""
    named = [a for a in facts.attendees
             if any(s.name == a for s in facts.speakers)]
    labels = [a for a in facts.attendees if a not in named]
    missing = [p for p in dict.fromkeys(listed) if p not in named]
    return named + missing + (labels if len(labels) > len(missing) else [])


# --------------------------------------------------------------------------- the whole pipeline


@dataclass
class ProcessResult:
    hear: HearResult
    minutes: Minutes
    facts: MeetingFacts
    minutes_s: float
    names_s: float


class Processor:
    """The whole pipeline: hear, name the speakers, write the minutes. Models stay loaded."""

    def __init__(self, settings: Settings, hearer: Hearer, writer: MinutesWriter):
        self.settings = settings
        self.hearer = hearer
        self.writer = writer

    def hear(self, path: str | Path, progress: Progress | None = None,
             info: MeetingInfo | None = None) -> HearResult:
        """Step 1: decode, diarize, transcribe, join, and name the speakers."""
        heard = self.hearer.hear(path, progress, info)
        self.name_speakers(heard, info)
        return heard

    def name_speakers(self, heard: HearResult, info: MeetingInfo | None = None) -> None:
        """Name the heard speakers: enrolled voices, the roster, how people address each
        other (:mod:`daemon.names`); in place, with the evidence."""
        t0 = time.perf_counter()
        voices = self.hearer.voices
        matches = voices.recognize(heard.voices, heard.voice_model) if voices else {}
        names, evidence = assign_names(heard.transcript, roster_for(self.settings, info), matches)
        apply_names(heard.transcript, names, evidence, matches)
        heard.times.names_s = time.perf_counter() - t0

    def remember_voices(self, key: str, heard: HearResult) -> None:
        """Keep the meeting's speaker embeddings in the profiles file under ``key`` (the
        recording's sha256), for learning from names people set later; with
        ``speakers.learn_from_guesses``, also learn the names the pipeline was sure of."""
        voices = self.hearer.voices
        if voices is None or not heard.voices:
            return
        cfg = self.settings.speakers
        with ProfileStore(voices.path) as store:
            store.remember(key, heard.voices, heard.voice_model or voices.model_id)
            if cfg.learn_from_guesses:
                learn_guesses(store, key, heard.transcript, heard.voice_model or voices.model_id,
                              cfg.learn_min_confidence)

    def understand(self, transcript: SpeakerTranscript, path: str | Path,
                   info: MeetingInfo | None = None,
                   name: str | None = None) -> tuple[Minutes, MeetingFacts]:
        """Step 2: minutes from a (named) speaker transcript; the facts, else ``path`` (its
        tags, its ``name`` or own name, its mtime) date the meeting."""
        facts = meeting_facts(transcript, path, self.settings, info, name)
        return finish_minutes(self.writer.write(transcript, facts), facts, info), facts

    def process(self, path: str | Path, progress: Progress | None = None,
                info: MeetingInfo | None = None) -> ProcessResult:
        heard = self.hear(path, progress, info)
        t0 = time.perf_counter()
        minutes, facts = self.understand(heard.transcript, path, info)
        return ProcessResult(heard, minutes, facts, time.perf_counter() - t0, heard.times.names_s)
