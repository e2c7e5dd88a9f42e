"""The minutes writer's contract: valid JSON or a clear failure, real owners, map-reduce.

The model here is a scripted ChatModel, to exercise repair, retry and chunking paths a
real model only hits by chance; tests/test_process_cli.py runs the real models end to end.
"""

from __future__ import annotations

import json

import pytest

from daemon.minutes.jsonfix import extract_json
from daemon.minutes.owners import match_person, resolve_owner
from daemon.minutes.writer import LLMMinutesWriter, MinutesError
from daemon.render import minutes_markdown
from daemon.types import MeetingFacts, Speaker, SpeakerSegment, SpeakerTranscript


def W(chat, **kw) -> LLMMinutesWriter:
    """The writer with the model finding action items (the cues path is tested below)."""
    return LLMMinutesWriter(chat, **{"action_items": "model", **kw})


class ScriptedChat:
    name = "scripted"

    def __init__(self, answers, context_tokens=4096):
        self.answers = list(answers)
        self.context_tokens = context_tokens
        self.calls = []

    def count_tokens(self, text):
        return len(text.split())

    def chat(self, messages, max_new_tokens, json_output=False, on_token=None):
        self.calls.append(messages)
        a = self.answers.pop(0)
        if on_token:
            for piece in a.split(" "):
                on_token(piece)
        return a


def meeting(n_turns=4):
    segs = [SpeakerSegment(i * 10.0, i * 10.0 + 9, f"SPEAKER_0{i % 3}", f"turn {i} " + "words " * 20)
            for i in range(n_turns)]
    spk = [Speaker("SPEAKER_00", "Maria Lopez", 40), Speaker("SPEAKER_01", "David Chen", 30),
           Speaker("SPEAKER_02", None, 20)]
    t = SpeakerTranscript(n_turns * 10.0, spk, segs)
    facts = MeetingFacts("2026-03-04", t.duration_s, ["Maria Lopez", "David Chen", "Speaker 3"], spk)
    return t, facts


GOOD = {
    "title": "Library renovation sync",
    "summary": "Budget and schedule.",
    "discussion_points": ["Electrical costs"],
    "decisions": ["Close the reading room in April"],
    "action_items": [
        {"owner": "David", "task": "Collect three electrical quotes", "due": "Friday"},
        {"owner": "Speaker 3", "task": "Run a survey", "due": None},
        {"owner": "Bob Smith", "task": "Order pizza", "due": "null"},
        {"owner": "David Chen", "task": "Collect three electrical quotes", "due": "Friday"},
    ],
}


def test_owners_are_attendees_or_unassigned_and_facts_come_from_the_pipeline():
    t, facts = meeting()
    w = W(ScriptedChat(["Sure! ```json\n" + json.dumps(GOOD) + "\n```"]))
    m = w.write(t, facts)
    owners = [(a.owner, a.task, a.due) for a in m.action_items]
    assert owners == [("David Chen", "Collect three electrical quotes", "Friday"),
                      ("Speaker 3", "Run a survey", None),
                      ("unassigned", "Order pizza", None)]  # Bob Smith was not there
    assert m.date == "2026-03-04" and m.attendees == facts.attendees
    assert m.duration_s == 40.0


def test_invalid_json_is_retried_with_the_error_then_fails_clearly():
    t, facts = meeting()
    chat = ScriptedChat(['{"title": "x", "action_items": [{"owner": "a"}]}',  # task missing
                         json.dumps(GOOD)])
    m = W(chat).write(t, facts)
    assert m.title == GOOD["title"] and len(chat.calls) == 2
    assert "not valid" in chat.calls[1][-1].content
    with pytest.raises(MinutesError, match="after 2 attempts"):
        W(ScriptedChat(["no json here", "{ still broken"]), max_attempts=2).write(
            t, facts)


def test_repair_of_common_defects():
    assert extract_json('Here you go:\n{"a": [1, 2,], "b": "}"}\nThanks') == {"a": [1, 2], "b": "}"}
    with pytest.raises(ValueError, match="not closed"):
        extract_json('{"a": 1')


def test_long_transcripts_are_summarised_in_parts_and_merged():
    t, facts = meeting(n_turns=40)  # ~900 words: over a 700-token budget
    part1 = dict(GOOD, action_items=[GOOD["action_items"][0]])
    part2 = dict(GOOD, action_items=[{"owner": "Maria", "task": "Write the board memo", "due": "March 20"}])
    merged = dict(GOOD, action_items=[GOOD["action_items"][0]])  # the merge dropped Maria's item
    answers = [json.dumps(part1), json.dumps(part2), json.dumps(part1), json.dumps(merged)]
    chat = ScriptedChat(answers, context_tokens=1200)
    w = W(chat, max_new_tokens=300)
    m = w.write(t, facts)
    assert w.stats.chunks >= 2
    assert len(chat.calls) == w.stats.chunks + 1
    # every part stayed inside the model's context
    for msgs in chat.calls:
        assert sum(chat.count_tokens(x.content) for x in msgs) + 300 <= 1200
    tasks = {(a.owner, a.task) for a in m.action_items}
    assert ("Maria Lopez", "Write the board memo") in tasks  # restored after the merge


def test_match_person():
    people = ["Maria Lopez", "David Chen", "Maria Gomez"]
    assert match_person("Chen", people) == "David Chen"
    assert match_person("David's", people) == "David Chen"
    assert match_person("Maria", people) is None  # ambiguous: not guessed
    assert resolve_owner("SPEAKER_01", people, {"SPEAKER_01": "David Chen"}) == "David Chen"
    assert resolve_owner("everyone", people, {}) == "unassigned"


def test_markdown_has_the_sections_and_checkbox_items():
    t, facts = meeting()
    m = W(ScriptedChat([json.dumps(GOOD)])).write(t, facts)
    md = minutes_markdown(m, "09:30")
    assert md.startswith("# Library renovation sync\n")
    assert "**Date:** 2026-03-04 09:30" in md and "**Duration:** 00:00:40" in md
    assert "**Attendees:** Maria Lopez, David Chen, Speaker 3" in md
    for h in ("## Summary", "## Discussion points", "## Decisions", "## Action items"):
        assert h in md
    assert "- [ ] David Chen — Collect three electrical quotes (Friday)" in md
    assert "- [ ] unassigned — Order pizza\n" in md
    assert "```" not in md


def test_json_round_trips_for_checkpoints():
    from daemon.types import Minutes

    t, facts = meeting()
    assert SpeakerTranscript.from_json(t.to_json()).to_json() == t.to_json()
    m = W(ScriptedChat([json.dumps(GOOD)])).write(t, facts)
    assert Minutes.from_json(m.to_json()).to_json() == m.to_json()


def test_short_forms_match_and_commitments_are_hinted_to_the_model():
    from daemon.minutes.cues import commitment_hints

    assert match_person("Sam", ["Samuel Okafor", "Hannah Berg"]) == "Samuel Okafor"
    assert match_person("Han", ["Samuel Okafor", "Hannah Berg"]) == "Hannah Berg"
    segs = [SpeakerSegment(0, 5, "SPEAKER_00", "David, can you collect three quotes by Friday?"),
            SpeakerSegment(6, 9, "SPEAKER_01", "Yes. I will have three quotes by Friday."),
            SpeakerSegment(10, 12, "SPEAKER_00", "Will you also call them?")]
    spk = [Speaker("SPEAKER_00", "Maria Lopez"), Speaker("SPEAKER_01", None)]
    hints = commitment_hints(SpeakerTranscript(12.0, spk, segs))
    assert hints == ["David (asked by Maria Lopez): David, can you collect three quotes by Friday?",
                     "Speaker 2: I will have three quotes by Friday."]
    t, facts = meeting()
    chat = ScriptedChat([json.dumps(GOOD)])
    t.segments.append(SpeakerSegment(40, 44, "SPEAKER_01", "I'll order the cables today."))
    W(chat).write(t, facts)
    assert "- David Chen: I'll order the cables today." in chat.calls[0][1].content


def test_a_cut_off_answer_keeps_its_complete_fields_and_repeats_are_dropped():
    from daemon.backends.llm_transformers import _looping

    looped = ('{"title": "Sync", "summary": "Budget.", "decisions": ["Close in April"], '
              '"discussion_points": [' + '"The same point again and again.", ' * 40 + '"The sa')
    t, facts = meeting()
    m = W(ScriptedChat([looped])).write(t, facts)
    assert m.title == "Sync" and m.decisions == ["Close in April"]
    assert m.discussion_points == ["The same point again and again."]
    # a half-written action item is dropped, not guessed
    cut = '{"title": "x", "action_items": [{"owner": "David", "task": "Quotes"}, {"owner": "Ma'
    assert extract_json(cut)["action_items"] == [{"owner": "David", "task": "Quotes"}]
    # the loop detector stops a model that repeats itself, not one that writes on
    pieces = [c for c in looped]
    assert _looping(pieces[: len(pieces) // 8 * 8])
    prose = [w + " " for w in ("minutes of the weekly sync about the library budget " * 3).split()]
    assert not _looping(prose[:16])


def test_stated_decisions_are_cued_to_the_model():
    from daemon.minutes.cues import decision_hints

    segs = [SpeakerSegment(0, 5, "SPEAKER_00", "And we are deciding to delay the launch to June "
                                                "2nd, and does that work for marketing?"),
            SpeakerSegment(6, 9, "SPEAKER_01", "Are we deciding anything today? I decided nothing."),
            SpeakerSegment(10, 12, "SPEAKER_00", "We agreed to close the reading room in April.")]
    spk = [Speaker("SPEAKER_00", "Olivia Grant"), Speaker("SPEAKER_01", None)]
    t = SpeakerTranscript(12.0, spk, segs)
    assert decision_hints(t) == [
        "Olivia Grant: And we are deciding to delay the launch to June 2nd, and does that work "
        "for marketing?",
        "Olivia Grant: We agreed to close the reading room in April."]
    chat = ScriptedChat([json.dumps(GOOD)])
    W(chat).write(t, MeetingFacts("2026-05-12", 12.0, ["Olivia Grant", "Speaker 2"], spk))
    assert "states a decision" in chat.calls[0][1].content
