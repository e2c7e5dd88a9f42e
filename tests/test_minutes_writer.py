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
    return LLMMinutesWriter(chat, **kw)


def routed(messages):
    """The answer to the questions besides the minutes draft, or None for the draft: the
    finder lists David's line 1 when there is one, the judge reads the task off the
    excerpt, the decision check agrees."""
    from daemon.minutes.commitments import FIND_SYSTEM, JUDGE_SYSTEM
    from daemon.minutes.prompts import DECIDE_SYSTEM

    system, user = messages[0].content, messages[-1].content
    if system == FIND_SYSTEM:
        return '{"items": []}'
    if system == DECIDE_SYSTEM:
        return '{"kind": "decision"}'
    if system == JUDGE_SYSTEM:
        if "quotes" in user:
            return ('{"kind": "task", "owner": "David Chen", "task": "Collect three quotes",'
                    ' "due": "Friday"}')
        if "cables" in user:
            return '{"kind": "task", "owner": "David Chen", "task": "Order the cables"}'
        return '{"kind": "idea", "owner": null, "task": null}'
    return None


class ScriptedChat:
    name = "scripted"

    def __init__(self, answers, context_tokens=4096):
        self.answers = list(answers)
        self.context_tokens = context_tokens
        self.calls = []

    def count_tokens(self, text):
        return len(text.split())

    def chat(self, messages, max_new_tokens, json_output=False, on_token=None):
        if (r := routed(messages)) is not None:
            return r
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
    "topics": [{"title": "Electrical", "points": ["Electrical costs"]}],
    "decisions": [{"text": "Close the reading room in April", "line": 3}],
}


def meeting_with_tasks():
    t, facts = meeting()
    t.segments[1].text = "Maria Lopez wants three quotes. I'll collect three quotes by Friday."
    t.segments[3].text = "So we agree to close the reading room in April."
    return t, facts


def test_owners_are_who_took_the_task_on_and_facts_come_from_the_pipeline():
    t, facts = meeting_with_tasks()
    w = W(ScriptedChat(["Sure! ```json\n" + json.dumps(GOOD) + "\n```"]))
    m = w.write(t, facts)
    owners = [(a.owner, a.task, a.due) for a in m.action_items]
    assert owners == [("David Chen", "Collect three quotes", "Friday")]
    assert m.action_items[0].evidence[0].speaker == "SPEAKER_01"
    assert m.date == "2026-03-04" and m.attendees == facts.attendees
    assert m.duration_s == 40.0
    assert m.decisions == ["So we agree to close the reading room in April."]  # as said
    assert m.discussion_points == ["Electrical: Electrical costs"]
    assert [x.title for x in m.topics] == ["Electrical"]


def test_invalid_json_is_retried_with_the_error_then_fails_clearly():
    t, facts = meeting()
    chat = ScriptedChat(["I cannot write JSON for this.", json.dumps(GOOD)])
    w = W(chat)
    m = w.write(t, facts)
    assert m.title == GOOD["title"] and len(chat.calls) == 2
    assert "not valid" in chat.calls[1][-1].content
    assert any("asked again" in r for r in w.repairs)  # and the minutes say so
    # never valid: the title and summary are asked alone; never valid either: no summary,
    # and the minutes say so (the items are asked separately and still come)
    w = W(ScriptedChat(["no json here", "{ still broken", '{"title": "Sync", "summary": "ok"}']),
          max_attempts=2)
    m = w.write(t, facts)
    assert (m.title, m.summary) == ("Sync", "ok")
    assert any("asked for alone" in r for r in w.repairs)
    w = W(ScriptedChat(["no json", "{ broken", "nope", "{ no"]), max_attempts=2)
    m = w.write(t, facts)
    assert m.title == "Meeting" and m.summary == ""
    assert any("no valid summary" in r for r in w.repairs)
    assert any(f.kind == "model repair" and "no valid summary" in f.message for f in m.flags)
    with pytest.raises(MinutesError, match="after 2 attempts"):
        W(ScriptedChat(["x", "y"]), max_attempts=2)._ask("system", "user")


def test_repair_of_common_defects():
    assert extract_json('Here you go:\n{"a": [1, 2,], "b": "}"}\nThanks') == {"a": [1, 2], "b": "}"}
    with pytest.raises(ValueError, match="not closed"):
        extract_json('{"a": 1')


def test_long_transcripts_are_summarised_in_parts_and_merged():
    t, facts = meeting(n_turns=40)  # ~900 words: over a 700-token budget
    t.segments[3].text = "So we agree to close the reading room in April."
    t.segments[30].text = "We agreed that Maria writes the board memo by March twentieth."
    part1 = dict(GOOD)
    part2 = dict(GOOD, decisions=[{"text": "Maria writes the board memo", "line": 30}])
    merged = dict(GOOD)  # the merge dropped the second part's decision
    answers = [json.dumps(part1), json.dumps(part1), json.dumps(part2), json.dumps(merged)]
    chat = ScriptedChat(answers, context_tokens=1200)
    w = W(chat, max_new_tokens=300)
    m = w.write(t, facts)
    assert w.stats.chunks >= 2
    assert len(chat.calls) == w.stats.chunks + 1
    # every part stayed inside the model's context
    for msgs in chat.calls:
        assert sum(chat.count_tokens(x.content) for x in msgs) + 300 <= 1200
    # restored after the merge (worded as said: "We agreed that ...")
    assert any("Maria writes the board memo" in d for d in m.decisions)
    assert [q[0].turn for q in m.decision_evidence] == [3, 30]
    assert [x.title for x in m.topics] == ["Electrical"]
    # a merge that comes back without topics keeps the parts' topics, and says so
    lost = dict(merged, topics=[])
    chat = ScriptedChat([json.dumps(part1), json.dumps(part1), json.dumps(part2),
                         json.dumps(lost)], context_tokens=1200)
    w = W(chat, max_new_tokens=300)
    m = w.write(t, facts)
    assert [(x.title, x.points) for x in m.topics] == [("Electrical", ["Electrical costs"])]
    assert any("without topics" in r for r in w.repairs)


def test_match_person():
    people = ["Maria Lopez", "David Chen", "Maria Gomez"]
    assert match_person("Chen", people) == "David Chen"
    assert match_person("David's", people) == "David Chen"
    assert match_person("Maria", people) is None  # ambiguous: not guessed
    assert resolve_owner("SPEAKER_01", people, {"SPEAKER_01": "David Chen"}) == "David Chen"
    assert resolve_owner("everyone", people, {}) == "unassigned"


def test_markdown_has_the_sections_and_checkbox_items():
    t, facts = meeting_with_tasks()
    m = W(ScriptedChat([json.dumps(GOOD)])).write(t, facts)
    md = minutes_markdown(m, "09:30")
    assert md.startswith("# Library renovation sync\n")
    assert "**Date:** 2026-03-04 09:30" in md and "**Duration:** 00:00:40" in md
    assert "**Attendees:** Maria Lopez, David Chen, Speaker 3" in md
    for h in ("## Summary", "## Discussion points", "## Decisions", "## Action items"):
        assert h in md
    assert "- [ ] David Chen — Collect three quotes (Friday)" in md
    assert "```" not in md


def test_json_round_trips_for_checkpoints():
    from daemon.types import Minutes

    t, facts = meeting_with_tasks()
    assert SpeakerTranscript.from_json(t.to_json()).to_json() == t.to_json()
    m = W(ScriptedChat([json.dumps(GOOD)])).write(t, facts)
    assert m.action_items and m.action_items[0].evidence and m.decision_evidence
    assert Minutes.from_json(m.to_json()).to_json() == m.to_json()


def test_short_forms_match():
    assert match_person("Sam", ["Samuel Okafor", "Hannah Berg"]) == "Samuel Okafor"
    assert match_person("Han", ["Samuel Okafor", "Hannah Berg"]) == "Hannah Berg"


def test_a_cut_off_answer_keeps_its_complete_fields_and_repeats_are_dropped():
    from daemon.backends.llm_transformers import _looping

    looped = ('{"title": "Sync", "summary": "Budget.", "decisions": ["Close in April"], '
              '"discussion_points": [' + '"The same point again and again.", ' * 40 + '"The sa')
    t, facts = meeting()
    t.segments[2].text = "We agree to close in April."
    m = W(ScriptedChat([looped])).write(t, facts)
    assert m.title == "Sync" and m.decisions == ["We agree to close in April."]
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


class CopyingJudge(ScriptedChat):
    """A judge that words every task from the line before, as small models do."""

    def chat(self, messages, max_new_tokens, json_output=False, on_token=None):
        from daemon.minutes.commitments import JUDGE_SYSTEM

        if messages[0].content == JUDGE_SYSTEM:
            self.calls.append(messages)
            return ('{"kind": "task", "owner": "David Chen", "task": "update the press '
                    'release and send it", "due": "Friday"}')
        return super().chat(messages, max_new_tokens, json_output, on_token)


def test_a_task_worded_from_another_line_twice_keeps_the_speakers_own_words():
    t, facts = meeting_with_tasks()
    chat = CopyingJudge([json.dumps(GOOD)])
    m = W(chat).write(t, facts)
    judged = [c for c in chat.calls if "That task is not what" in c[-1].content]
    assert judged, "the judge was told its task was not what was said"
    assert [(a.owner, a.task) for a in m.action_items] == [
        ("David Chen", "collect three quotes by Friday")]
    assert m.action_items[0].due == "Friday"  # the judge's due stands: it was said there
    assert any("own words" in f.message for f in m.flags), m.flags


def test_a_wish_the_judge_cannot_word_is_let_go():
    t, facts = meeting_with_tasks()
    t.segments[1].text = "If there is a better price, I'd like to know about the quotes too."
    m = W(CopyingJudge([json.dumps(GOOD)])).write(t, facts)
    assert m.action_items == []
