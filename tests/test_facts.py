"""Per-recording facts: the sidecar's format, its hostile-input limits, and where the date
of a meeting comes from (facts, then container tags, then the file name, then mtime)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from daemon import facts
from daemon.confined import Confined
from daemon.facts import MeetingFactsError, parse
from daemon.pipeline import attendance, meeting_when, roster_prompt, speaker_bounds
from daemon.render import minutes_markdown
from daemon.settings import Settings
from daemon.types import MeetingFacts, MeetingInfo, Minutes, Speaker

GOOD_YAML = b"""\
title: Weekly design review
date: 2026-11-30
time: 14:00
language: EN
attendees:
  - Grace Kim
  - "Tomas  Novak"
  - grace kim
speakers: 2
"""


def test_yaml_sidecar_read_as_text():
    info = parse(GOOD_YAML, "review.meeting.yaml")
    # 14:00 is not YAML 1.1's sexagesimal 840, 2026-11-30 not a date object, EN lowered,
    # whitespace collapsed, a repeated attendee kept once
    assert info == MeetingInfo(title="Weekly design review", date="2026-11-30", time="14:00",
                               language="en", attendees=["Grace Kim", "Tomas Novak"],
                               speakers=2, source="review.meeting.yaml")


def test_json_sidecar_and_empty_one():
    data = {"attendees": ["Ana Ruiz"], "speakers": 3, "time": "9:05"}
    info = parse(json.dumps(data).encode(), "x.meeting.json")
    assert (info.attendees, info.speakers, info.time) == (["Ana Ruiz"], 3, "09:05")
    assert parse(b"", "x.meeting.yaml") == MeetingInfo(source="x.meeting.yaml")


@pytest.mark.parametrize("text, says", [
    (b"a: &x [1]\nb: *x\n", "aliases"),
    (b"atendees: [Grace Kim]\n", "unknown field(s) atendees"),
    (b"date: 2026-13-01\n", "date '2026-13-01' is not a date"),
    (b"time: 25:00\n", "time '25:00' is not a time"),
    (b"language: english\n", "not an ISO 639-1 code"),
    (b"attendees: Grace Kim, Tomas Novak\n", "attendees must be a list"),
    (b"speakers: 0\n", "speakers must be a whole number from 1 to 32"),
    (b"speakers: true\n", "speakers must be a whole number"),  # text here: 'true' is no count
    (b"- just\n- a list\n", "must be a mapping"),
    (b"title: [unclosed\n", "not valid YAML (line 2"),
    (b"title: !!python/object/apply:os.system [echo hi]\n", "not valid YAML"),
    (b"\xff\xfe title", "not UTF-8"),
    (b"title: x\n" + b"#" * (64 * 1024), "larger than 64 KiB"),
])
def test_bad_sidecar_says_which_file_and_what(text, says):
    with pytest.raises(MeetingFactsError) as e:
        parse(text, "standup.meeting.yaml")
    msg = str(e.value)
    assert msg.startswith("standup.meeting.yaml: ") and says in msg, msg
    assert "Fix:" in msg


def test_billion_laughs_refused_before_it_expands():
    lol = b"a: &a [lol]\n" + b"".join(
        b"%c: &%c [%s]\n" % (c, c, b",".join([b"*" + bytes([c - 1])] * 9))
        for c in range(ord("b"), ord("k")))
    with pytest.raises(MeetingFactsError, match="aliases"):
        parse(lol, "x.meeting.yaml")


def test_sidecar_names_and_reading_without_following_links(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    c = Confined(inbox)
    rec = inbox / "2026-11-30 standup.mp3"
    rec.write_bytes(b"audio")
    assert facts.is_sidecar("standup.meeting.yaml") and facts.is_sidecar("A.MEETING.JSON")
    assert not facts.is_sidecar("standup.mp3")
    assert facts.read(c, rec) is None
    side = inbox / "2026-11-30 standup.meeting.yaml"
    side.write_bytes(b"attendees: [Grace Kim]\n")
    info, found = facts.read(c, rec)
    assert info.attendees == ["Grace Kim"] and found.path == side

    # a link in the hostile inbox is refused, never followed (even to a valid file)
    secret = tmp_path / "outside.yaml"
    secret.write_bytes(b"title: from outside\n")
    side.unlink()
    side.symlink_to(secret)
    with pytest.raises(MeetingFactsError, match="is a link or a special file"):
        facts.read(c, rec)
    side.unlink()
    os.mkfifo(side)  # a FIFO: never blocks the daemon
    with pytest.raises(MeetingFactsError, match="is a link or a special file"):
        facts.read(c, rec)
    side.unlink()

    (inbox / "2026-11-30 standup.meeting.yaml").write_bytes(b"title: a\n")
    (inbox / "2026-11-30 standup.meeting.json").write_bytes(b"{}")
    with pytest.raises(MeetingFactsError, match="has 2 sidecars"):
        facts.read(c, rec)


def test_facts_steer_roster_prompt_and_speaker_bounds():
    s = Settings()
    s.minutes.roster = ["Configured Person"]
    info = MeetingInfo(attendees=["Grace Kim", "Tomas Novak", "Ana Ruiz"])
    assert roster_prompt(s, info.attendees) == "Attendees: Grace Kim, Tomas Novak, Ana Ruiz."
    assert roster_prompt(s) == "Attendees: Configured Person."
    assert speaker_bounds(info) == (None, 3)  # at most as many voices as attendees
    info.speakers = 2
    assert speaker_bounds(info) == (2, None)  # the exact count wins
    assert speaker_bounds(None) == (None, None)
    d = s.diarization
    d.max_speakers, d.min_speakers = 6, 4
    assert d.speaker_counts(None, 3) == (None, 3, 3)  # the facts' bound, the minimum lowered
    assert d.speaker_counts(2, None) == (2, None, None)
    assert d.speaker_counts() == (None, 4, 6)


# --------------------------------------------------------------------------- the date


def _tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _write(path: Path, fmt: str, codec: str, tags: dict[str, str]) -> Path:
    import av

    with av.open(str(path), "w", format=fmt) as out:
        out.metadata.update(tags)
        st = out.add_stream(codec, rate=16000)
        st.layout = "mono"
        frame = av.AudioFrame.from_ndarray(_tone()[None, :], format="flt", layout="mono")
        frame.sample_rate = 16000
        for f in [frame, None]:
            for pkt in st.encode(f):
                out.mux(pkt)
    return path


@pytest.fixture
def tagged(tmp_path) -> tuple[Path, Path]:
    """An mp3 with an ID3 recording date and an m4a with an MP4 creation_time (UTC)."""
    pytest.importorskip("av")
    mp3 = _write(tmp_path / "2025-01-02 0800 call.mp3", "mp3", "mp3",
                 {"date": "2026-11-30T14:00"})
    m4a = _write(tmp_path / "call.m4a", "mp4", "aac",
                 {"creation_time": "2026-10-05T09:30:00.000000Z"})
    for p in (mp3, m4a):
        os.utime(p, (1_600_000_000, 1_600_000_000))  # 2020-09-13: the last resort
    return mp3, m4a


def test_date_from_tags_beats_file_name_and_mtime(tagged, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    mp3, m4a = tagged
    assert meeting_when(mp3) == ("2026-11-30", "14:00", "recording tags")  # not the name's
    assert meeting_when(m4a) == ("2026-10-05", "09:30", "recording tags")  # not the mtime
    # without tags (the daemon's intake): the file name, then the mtime
    assert meeting_when(mp3, tags=False) == ("2025-01-02", "08:00", "file name")
    assert meeting_when(m4a, tags=False)[2] == "file time"
    assert meeting_when(m4a, tags=False)[0] == "2020-09-13"


def test_sidecar_date_beats_tags_and_the_minutes_say_so(tagged):
    mp3, m4a = tagged
    info = MeetingInfo(date="2026-12-01", time="10:15")
    for p in (mp3, m4a):
        assert meeting_when(p, info=info) == ("2026-12-01", "10:15", "meeting facts")
    # a sidecar with a date and no time takes the time of a later source of the same date
    assert meeting_when(mp3, info=MeetingInfo(date="2026-11-30")) == (
        "2026-11-30", "14:00", "meeting facts")
    m = Minutes("T", "2026-11-30", [], "", [], [], [], date_source="recording tags")
    assert "**Date:** 2026-11-30 14:00 (from the recording's tags)" in minutes_markdown(m, "14:00")
    assert Minutes.from_json(m.to_json()).date_source == "recording tags"


def test_process_reads_the_sidecar_beside_file(tmp_path):
    """`minutesd process FILE` (and transcribe) read FILE's sidecar; a bad one is exit 65."""
    from daemon.cli import read_facts
    from daemon.errors import EXIT_BAD_INPUT, exit_code
    from daemon.logs import get_logger

    rec = tmp_path / "call.m4a"
    rec.write_bytes(b"x")
    assert read_facts(str(rec), get_logger()) is None
    (tmp_path / "call.meeting.yaml").write_text("attendees: [Ana Ruiz]\nlanguage: ja\n")
    info = read_facts(str(rec), get_logger())
    assert info.attendees == ["Ana Ruiz"] and info.language == "ja"
    (tmp_path / "call.meeting.yaml").write_text("speakers: many\n")
    with pytest.raises(MeetingFactsError) as e:
        read_facts(str(rec), get_logger())
    assert exit_code(e.value) == EXIT_BAD_INPUT


def test_listed_attendees_nobody_named_are_still_attendees():
    spk = [Speaker("S0", "Elena Rossi", 60), Speaker("S1", None, 40), Speaker("S2", None, 30)]
    facts = MeetingFacts("2026-01-01", 60.0, ["Elena Rossi", "Speaker 2", "Speaker 3"], spk)
    listed = ["Elena Rossi", "Jun Tanaka", "Tomasz Nowak"]
    # two voices nobody named, two listed people nobody recognised: they are those two
    assert attendance(facts, listed) == listed
    # three unnamed voices for two unrecognised names: someone was not on the list
    spk.append(Speaker("S3", None, 10))
    facts.attendees.append("Speaker 4")
    assert attendance(facts, listed) == listed + ["Speaker 2", "Speaker 3", "Speaker 4"]


# --------------------------------------------------------------------------- facts with voices


class _Stage:
    """A diarizer and transcriber in one that remember what each call was given."""

    name = "stub"

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def diarize(self, audio, progress=None, num_speakers=None, max_speakers=None):
        from daemon.types import Diarization, SpeakerTurn

        self.calls.append(("diarize", {"num": num_speakers, "most": max_speakers}))
        return Diarization([SpeakerTurn(0.0, 1.0, "a"), SpeakerTurn(1.0, 2.0, "b")])

    def transcribe(self, audio, progress=None, language=None, prompt=None):
        from daemon.types import Segment, Transcript

        self.calls.append(("transcribe", {"language": language, "prompt": prompt}))
        return Transcript([Segment(0.1, 0.9, "Let us start."),
                           Segment(1.1, 1.9, "Fine by me.")], language or "en")


class _Voices:
    """Voice profiles that recognise the first speaker as Grace Kim."""

    model_id = "stub-model"
    path = None

    def embed_speakers(self, audio, diarization):
        return {s: np.ones(4, np.float32) / 2 for s in diarization.speakers}

    def recognize(self, voices, model_id):
        from daemon.types import VoiceMatch

        assert model_id == self.model_id and set(voices) == {"SPEAKER_00", "SPEAKER_01"}
        return {"SPEAKER_00": VoiceMatch("SPEAKER_00", "Grace Kim", 0.8, 0.2, model_id, 0.9)}


def test_hear_uses_the_facts_and_the_voices_together(tmp_path):
    """Processor.hear with voice profiles on and a sidecar's facts: the diarizer gets the
    attendees' count, Whisper their names and the language, and naming takes both the voice
    match and the attendees as roster (the one attendee left names the other speaker)."""
    from conftest import encode

    from daemon.pipeline import Hearer, Processor

    rec = encode(tmp_path / "call.wav", _tone(2.0))
    s = Settings()
    stage = _Stage()
    proc = Processor(s, Hearer(s, stage, stage, _Voices()), writer=None)
    info = MeetingInfo(attendees=["Grace Kim", "Tomas Novak"], language="de")
    heard = proc.hear(rec, info=info)
    assert stage.calls == [
        ("diarize", {"num": None, "most": 2}),
        ("transcribe", {"language": "de", "prompt": "Attendees: Grace Kim, Tomas Novak."})]
    named = {sp.id: (sp.name, [e.kind for e in sp.evidence]) for sp in heard.transcript.speakers}
    assert named == {"SPEAKER_00": ("Grace Kim", ["voice"]),
                     "SPEAKER_01": ("Tomas Novak", ["roster"])}
    assert heard.voice_model == "stub-model" and set(heard.voices) == {"SPEAKER_00", "SPEAKER_01"}
    # without facts: the settings decide, and the stranger stays unnamed
    stage.calls.clear()
    heard = proc.hear(rec)
    assert stage.calls[0] == ("diarize", {"num": None, "most": None})
    assert stage.calls[1] == ("transcribe", {"language": None, "prompt": None})
    assert [sp.name for sp in heard.transcript.speakers] == ["Grace Kim", None]
