"""Corrections that stick: ``minutesd speakers MEETING --set/--merge/--confirm``.

1. The correction itself, on a record: names in the speakers, the attendees, the owners of
   action items and the text; merges; labels as people type them.
2. End to end with the real daemon (stand-in models) and the fake Drive server, under its
   fault injection: the local archive, the search index and both Docs are updated in place
   (the same file ids, no new file, no duplicate).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fakedrive import FakeDrive
from test_drive_daemon import (
    check_exactly_once,
    cli,
    drop,
    meeting_text,
    start,
    stop,
    uploads,
    wait_for,
    write_settings,
)

from daemon.archive.base import ArchiveRecord
from daemon.corrections import CorrectionError, correct, learn, parse_pairs
from daemon.types import ActionItem, Minutes, Speaker, SpeakerSegment, SpeakerTranscript
from daemon.voices.learner import ProfileLearner
from daemon.voices.store import ProfileStore


def record() -> ArchiveRecord:
    t = SpeakerTranscript(60.0, [Speaker("SPEAKER_00", None, 30.0),
                                 Speaker("SPEAKER_01", "Grace", 20.0),
                                 Speaker("SPEAKER_02", None, 10.0)],
                          [SpeakerSegment(0, 5, "SPEAKER_00", "I'll send the quotes."),
                           SpeakerSegment(5, 9, "SPEAKER_01", "Thanks."),
                           SpeakerSegment(9, 12, "SPEAKER_02", "Agreed.")])
    m = Minutes("Weekly sync", "2026-12-01", ["Speaker 1", "Grace", "Speaker 3"],
                "Speaker 1 will send the quotes; Grace agreed. Speaker 10 is not a speaker.",
                ["Speaker 1 raised the budget."], ["Grace's plan is accepted."],
                [ActionItem("Speaker 1", "Send the quotes to Grace"),
                 ActionItem("Grace", "Review the plan")], 60.0,
                [Speaker("SPEAKER_00", None, 30.0), Speaker("SPEAKER_01", "Grace", 20.0),
                 Speaker("SPEAKER_02", None, 10.0)])
    return ArchiveRecord("ab" * 32, "m.mp3", m, t, "2026-12-01", "10:00")


def test_set_renames_everywhere_the_minutes_say_who():
    rec = record()
    changes = correct(rec, parse_pairs(['SPEAKER_00=Omar  Haddad', "Grace=Grace Kim"], "--set"))
    m = rec.minutes
    assert [c.kind for c in changes] == ["set", "set"]
    assert [s.name for s in rec.transcript.speakers] == ["Omar Haddad", "Grace Kim", None]
    assert [s.name for s in m.speakers] == ["Omar Haddad", "Grace Kim", None]
    assert m.attendees == ["Omar Haddad", "Grace Kim", "Speaker 3"]
    assert [a.owner for a in m.action_items] == ["Omar Haddad", "Grace Kim"]
    assert m.action_items[0].task == "Send the quotes to Grace Kim"
    assert m.summary == ("Omar Haddad will send the quotes; Grace Kim agreed. Speaker 10 is "
                         "not a speaker.")  # whole words only
    assert m.decisions == ["Grace Kim's plan is accepted."]


def test_a_listed_attendee_named_later_is_not_listed_twice():
    rec = record()  # the recording's facts listed Omar Haddad and Li Wei; nobody named them
    rec.minutes.attendees = ["Grace", "Omar Haddad", "Li Wei"]
    correct(rec, parse_pairs(["SPEAKER_00=Omar Haddad"], "--set"))
    # the other unnamed voice is Li Wei, who is listed: no "Speaker 3" beside her
    assert rec.minutes.attendees == ["Grace", "Omar Haddad", "Li Wei"]
    rec = record()
    rec.minutes.attendees = ["Grace", "Omar Haddad"]  # a voice beyond the list keeps its label
    correct(rec, parse_pairs(["SPEAKER_00=Omar Haddad"], "--set"))
    assert rec.minutes.attendees == ["Grace", "Omar Haddad", "Speaker 3"]


def test_merge_and_labels_as_people_type_them():
    rec = record()
    changes = correct(rec, merges=parse_pairs(["Speaker 3=speaker_00"], "--merge"),
                      set_names=parse_pairs(["Speaker 1=Omar Haddad"], "--set"))
    assert [s.id for s in rec.transcript.speakers] == ["SPEAKER_00", "SPEAKER_01"]
    assert rec.transcript.speakers[0].talk_time_s == 40.0
    assert {s.speaker for s in rec.transcript.segments} == {"SPEAKER_00", "SPEAKER_01"}
    assert rec.minutes.attendees == ["Omar Haddad", "Grace"]
    assert changes[0].kind == "merge"
    assert [a.owner for a in rec.minutes.action_items] == ["Omar Haddad", "Grace"]
    assert correct(record(), parse_pairs(["1=G. K."], "--set"))[0].label == "SPEAKER_01"
    with pytest.raises(CorrectionError, match="no speaker 'SPEAKER_09'"):
        correct(record(), parse_pairs(["SPEAKER_09=X"], "--set"))
    with pytest.raises(CorrectionError, match="LABEL=VALUE"):
        parse_pairs(["SPEAKER_00"], "--set")
    with pytest.raises(CorrectionError, match="no name to confirm"):
        correct(record(), confirm=["SPEAKER_02"])


@pytest.fixture
def fake(tmp_path):
    d = FakeDrive(tmp_path / "fake").start()
    yield d
    d.stop()


def test_correction_end_to_end_updates_archive_search_and_drive_in_place(fake, tmp_path):
    root = tmp_path
    write_settings(root, fake, num_retries=1)
    fake.write_token(root / "state" / "google-token.json")
    log = root / "daemon.log"
    p = start(root, log)
    try:
        shas = {"lib": drop(root, "2024-05-14 0930 library renovation.mp3",
                            meeting_text("library-renovation")),
                "launch": drop(root, "2024-06-03 1400 atlas launch review.mp3",
                               meeting_text("product-launch"))}
        wait_for(lambda: sum(u["state"] == "done" for u in uploads(root)) == 2, 90,
                 "both uploads", p, log)
        before = {f["id"]: f for f in fake.live()}
        fake.fault_rate = 0.3  # the correction's updates meet the same faults as uploads
        listing = cli(root, "speakers", shas["lib"][:10], "--json")
        assert listing.returncode == 0, listing.stderr
        labels = [s["label"] for s in json.loads(listing.stdout)["speakers"]]
        fixed = cli(root, "speakers", shas["lib"][:10], "--set", f"{labels[0]}=Grace Kim",
                    "--set", f"{labels[1]}=Omar Haddad")
        assert fixed.returncode == 0, fixed.stderr
        assert "1 mirror update(s) queued" in fixed.stdout
        # by a search hit, a second correction: Omar was really Tomás
        again = cli(root, "speakers", "electrical", "--set", "Omar Haddad=Tomás Díaz")
        assert again.returncode == 0, again.stderr
        wait_for(lambda: any(u["state"] == "done" for u in uploads(root))
                 and all(u["state"] == "done" for u in uploads(root))
                 and "Tomás Díaz" in _doc_text(fake, shas["lib"], "minutes"), 120,
                 "the Docs updated", p, log)
        found = cli(root, "search", "--json", "Grace Kim")
        not_found = cli(root, "search", "--json", "Omar Haddad")
    finally:
        rc = stop(p)
    assert rc == 0
    hits = json.loads(found.stdout)["hits"]
    assert [h["key"] for h in hits] == [shas["lib"]]
    assert json.loads(not_found.stdout)["hits"] == []
    folder = Path(hits[0]["ref"])
    minutes = json.loads((folder / "minutes.json").read_text())
    assert "Grace Kim" in minutes["attendees"] and "Tomás Díaz" in minutes["attendees"]
    assert "Omar Haddad" not in json.dumps(minutes)
    md = (folder / "transcript.md").read_text()
    assert re.search(r"\] Grace Kim: ", md) and "Tomás Díaz" in md
    after = {f["id"]: f for f in fake.live()}
    assert set(after) == set(before), "a correction must update the Docs, never add files"
    for kind in ("minutes", "transcript"):
        text = _doc_text(fake, shas["lib"], kind)
        assert "Grace Kim" in text and "Tomás Díaz" in text and "Omar Haddad" not in text
    assert "Grace Kim" not in _doc_text(fake, shas["launch"], "minutes")
    check_exactly_once(fake, shas)
    print(f"\ncorrections: {fake.stats['requests']} Drive requests, faults injected at 30%: "
          f"{len(after)} files before and after, 0 duplicates")


def _doc_text(fake: FakeDrive, sha: str, kind: str) -> str:
    files = fake.by_key().get(sha, {}).get(kind, [])
    return b"".join((f.get("content") or b"") for f in files).decode("utf-8", "replace")


def test_names_people_set_are_learned_and_wrong_ones_taken_back(tmp_path):
    """The daemon keeps a meeting's speaker voices; --set turns one into a sample of the
    person, a later --set to another name takes it back, forget removes it all."""
    path = tmp_path / "voices.sqlite"
    rng = np.random.default_rng(0)
    v0, v1 = (x / np.linalg.norm(x) for x in rng.normal(size=(2, 192)))
    with ProfileStore(path) as store:
        store.remember("ab" * 32, {"SPEAKER_00": v0, "SPEAKER_01": v1}, "model-x")
    learner = ProfileLearner(path)
    rec = record()
    changes = correct(rec, parse_pairs(["SPEAKER_00=Omar Haddad"], "--set"))
    assert learn(learner, rec, changes, tmp_path / "m") == [
        "learned the voice of Omar Haddad from SPEAKER_00"]
    assert learn(learner, rec, changes, tmp_path / "m") == []  # once
    changes = correct(rec, parse_pairs(["SPEAKER_00=Tomás Díaz"], "--set"))
    assert learn(learner, rec, changes, tmp_path / "m") == [
        "removed the voice sample of Omar Haddad taken from SPEAKER_00",
        "learned the voice of Tomás Díaz from SPEAKER_00"]
    with ProfileStore(path) as store:
        people = {p.name: p for p in store.people()}
        assert list(people) == ["Tomás Díaz"]
        s = people["Tomás Díaz"].samples[0]
        assert s.model_id == "model-x" and np.allclose(s.vector, v0)
        assert s.source == "set in meeting m"
        assert store.forget("Tomás Díaz") == 1
        assert store.meeting_voice("ab" * 32, "SPEAKER_00") is None  # its source voice too
        assert store.meeting_voice("ab" * 32, "SPEAKER_01") is not None
