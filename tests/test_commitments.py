"""Action items with evidence: candidates from the model and the cue patterns, each judged,
then checked against the transcript (the owner must have taken the task on).

The model here is scripted (answers chosen by which question is asked), so the checks the
pipeline makes on a model's answers can be shown to catch what a real model gets wrong;
tests/test_evidence_real.py runs the real embedded model.
"""

from __future__ import annotations

import json
import re

from test_actions import transcript

from daemon.minutes.commitments import FIND_SYSTEM, JUDGE_SYSTEM
from daemon.minutes.evidence import check_minutes
from daemon.minutes.prompts import DECIDE_SYSTEM
from daemon.minutes.writer import LLMMinutesWriter
from daemon.types import MeetingFacts

DRAFT = {"title": "Check-in", "summary": "A check-in.", "topics": [], "decisions": []}


def facts(t):
    return MeetingFacts(date="2026-05-06", duration_s=t.duration_s,
                        attendees=[s.name for s in t.speakers if s.name], speakers=t.speakers)


class RoutedChat:
    """Answers by question: the draft, the finder ("which lines?"), the judge (by the lines
    asked about: ``judge[first line]``)."""

    name = "routed"

    def __init__(self, find=None, judge=None, draft=None, context_tokens=4096, decide=None):
        self.find = find or (lambda user: {"items": []})
        self.decide = decide or (lambda user: {"kind": "decision"})
        self.judge = judge or {}
        self.draft = draft or DRAFT
        self.context_tokens = context_tokens
        self.asked: list[tuple[str, str]] = []
        self.looped = 0

    def count_tokens(self, text):
        return len(text.split())

    def chat(self, messages, max_new_tokens, json_output=False, on_token=None):
        system, user = messages[0].content, messages[1].content
        if system == FIND_SYSTEM:
            self.asked.append(("find", user))
            return json.dumps(self.find(user))
        if system == JUDGE_SYSTEM:
            first = int(re.search(r"look at: \[(\d+)\]", user).group(1))
            self.asked.append(("judge", user))
            return json.dumps(self.judge.get(first, {"owner": None, "task": None}))
        if system == DECIDE_SYSTEM:
            self.asked.append(("decide", user))
            return json.dumps(self.decide(user))
        self.asked.append(("draft", user))
        return json.dumps(self.draft)


NAMES = {"S0": "Daniel Reyes", "S1": "Martin Kowalski", "S2": "Priya Shah"}


def test_every_item_carries_evidence_that_checks_out_and_owners_took_the_task_on():
    t = transcript([
        ("S1", "The export takes me an hour every Friday."),
        ("S2", "There's an export for that. I can get you a short guide by Thursday."),
        ("S1", "That would be great."),
    ], NAMES)
    chat = RoutedChat(judge={1: {"owner": "Priya Shah", "task": "Send Martin a guide to the "
                                 "weekly export", "due": "Thursday", "line": 1}})
    m = LLMMinutesWriter(chat).write(t, facts(t))
    assert [(a.owner, a.due, a.how) for a in m.action_items] == [
        ("Priya Shah", "Thursday", "took it on")]
    q = m.action_items[0].evidence[0]
    assert (q.turn, q.speaker, q.text) == (1, "S2", "I can get you a short guide by Thursday.")
    assert check_minutes(m.to_json(), t.to_json()) == []


def test_a_task_handed_over_belongs_to_the_last_person_who_accepted():
    t = transcript([
        ("S0", "Let me set up a call with our mobile team about the crash."),
        ("S1", "That would be good."),
        ("S0", "Actually, Priya, could you take that instead of me?"),
        ("S2", "Sure. I'll set up the call with the mobile team."),
    ], NAMES)
    # The model reads the first candidate as Daniel's, the second as Priya's: the pipeline
    # follows the conversation to Priya, and keeps Daniel's offer and ask as evidence.
    chat = RoutedChat(judge={
        0: {"owner": "Daniel Reyes", "task": "Set up a call with the mobile team", "line": 0},
        2: {"owner": "Priya Shah", "task": "Set up the call with the mobile team", "line": 3},
    })
    m = LLMMinutesWriter(chat, action_items="cues").write(t, facts(t))
    assert [(a.owner, a.how) for a in m.action_items] == [("Priya Shah", "handed over")]
    assert [q.turn for q in m.action_items[0].evidence] == [0, 2, 3]
    assert check_minutes(m.to_json(), t.to_json()) == []


def test_an_owner_the_transcript_does_not_support_is_not_passed_on():
    t = transcript([
        ("S0", "The van pricing needs checking with finance."),
        ("S1", "Okay."),
    ], NAMES)
    # The model proposes a task for Priya, who never speaks here: nothing supports it.
    chat = RoutedChat(find=lambda u: {"items": [{"line": 0, "who": "Priya Shah",
                                                 "task": "Check van pricing"}]},
                      judge={0: {"owner": "Priya Shah", "task": "Check van pricing", "line": 0}})
    m = LLMMinutesWriter(chat).write(t, facts(t))
    assert m.action_items == []


def test_finished_work_and_ideas_yield_no_items_and_no_decisions():
    t = transcript([
        ("S0", "I sent the contract last week, on Tuesday."),
        ("S1", "If someone had time, we could build a dashboard one day."),
        ("S2", "Nice weekend? We went to the coast."),
    ], NAMES)
    # the model judges every candidate it is asked about as no task
    chat = RoutedChat(find=lambda u: {"items": [{"line": 1, "who": "Martin Kowalski",
                                                 "task": "Build a dashboard"}]})
    m = LLMMinutesWriter(chat).write(t, facts(t))
    assert m.action_items == [] and m.decisions == []
    assert ("judge" in [k for k, _ in chat.asked])  # the candidate was judged, and refused


def test_a_meeting_in_another_language_gets_items_from_the_model_path_alone():
    t = transcript([
        ("S0", "Necesitamos el presupuesto del autobús para Toledo."),
        ("S2", "Yo llamo a la empresa de autobuses mañana y te mando el precio."),
        ("S0", "Perfecto, gracias."),
    ], NAMES)
    chat = RoutedChat(
        find=lambda u: {"items": [{"line": 1, "who": "Priya Shah",
                                   "task": "Llamar a la empresa de autobuses"}]},
        judge={1: {"owner": "Priya Shah", "task": "Llamar a la empresa de autobuses y mandar "
                   "el precio", "due": "mañana", "line": 1}})
    m = LLMMinutesWriter(chat, action_items="model").write(t, facts(t))
    assert [(a.owner, a.due) for a in m.action_items] == [("Priya Shah", "mañana")]
    assert m.action_items[0].evidence[0].text.startswith("Yo llamo")


def test_a_decision_the_transcript_does_not_support_is_dropped_and_flagged():
    t = transcript([
        ("S0", "So we agree: the reading room closes in April."),
        ("S1", "Agreed."),
    ], NAMES)
    draft = dict(DRAFT, decisions=[
        {"text": "The reading room closes in April", "line": 0},
        {"text": "The budget doubles next year for marketing", "line": 1},  # never said
    ])
    w = LLMMinutesWriter(RoutedChat(draft=draft))
    m = w.write(t, facts(t))
    assert m.decisions == ["So we agree: the reading room closes in April."]
    assert m.decision_evidence[0][0].turn == 0
    assert any("does not support" in r for r in w.repairs)
    assert check_minutes(m.to_json(), t.to_json()) == []
    # a second look that reads the line as a proposal keeps it out
    chat = RoutedChat(draft=draft, decide=lambda u: {"kind": "proposal"})
    assert LLMMinutesWriter(chat).write(t, facts(t)).decisions == []


def test_long_meetings_are_read_in_parts_with_their_own_line_numbers():
    turns = []
    for i in range(60):
        spk = ("S0", "S1", "S2")[i % 3]
        turns.append((spk, f"Point number {i} about the stalls and the music and the field."))
    turns[5] = ("S2", "I'll book the brass band for the opening.")
    turns[55] = ("S1", "I'll ring the council about the road closure.")
    t = transcript(turns, NAMES)
    seen_lines: list[list[int]] = []

    def find(user):
        lines = [int(x) for x in re.findall(r"^\[(\d+)\]", user, re.M)]
        seen_lines.append(lines)
        return {"items": [{"line": n, "who": None, "task": "x"} for n in (5, 55) if n in lines]}

    judge = {5: {"owner": "Priya Shah", "task": "Book the brass band", "line": 5},
             55: {"owner": "Martin Kowalski", "task": "Ring the council about the road closure",
                  "line": 55}}
    chat = RoutedChat(find=find, judge=judge, context_tokens=900)
    m = LLMMinutesWriter(chat, max_new_tokens=200, action_items="model").write(t, facts(t))
    assert len(seen_lines) > 1 and seen_lines[0][0] == 0 and seen_lines[-1][-1] == 59
    assert [a.owner for a in m.action_items] == ["Priya Shah", "Martin Kowalski"]


def test_the_evidence_check_catches_what_is_wrong():
    t = transcript([("S0", "I'll send the memo."), ("S1", "Thanks.")], NAMES).to_json()
    good = {"owner": "Daniel Reyes", "task": "Send the memo",
            "evidence": [{"turn": 0, "start": 0, "speaker": "S0", "text": "I'll send the memo."}]}
    assert check_minutes({"action_items": [good]}, t) == []
    bad_text = dict(good, evidence=[dict(good["evidence"][0], text="I'll send the contract.")])
    bad_turn = dict(good, evidence=[dict(good["evidence"][0], turn=7)])
    bad_owner = dict(good, owner="Martin Kowalski")
    none = dict(good, evidence=[])
    for item in (bad_text, bad_turn, bad_owner, none):
        assert check_minutes({"action_items": [item]}, t), item
    assert check_minutes({"action_items": [dict(bad_owner, weak=True)]}, t) == []  # marked
    assert check_minutes({"decisions": ["x"], "decision_evidence": []}, t)


def test_the_model_naming_the_asker_does_not_move_the_task_off_who_accepted():
    t = transcript([
        ("S0", "Priya, could you send Martin the export guide?"),
        ("S2", "Sure, I'll send it tomorrow."),
        ("S1", "Perfect."),
    ], NAMES)
    # a small model often names the one who asked, or whoever speaks last
    chat = RoutedChat(judge={0: {"kind": "task", "owner": "Martin Kowalski",
                                 "task": "Send Martin the export guide", "due": "tomorrow"}})
    m = LLMMinutesWriter(chat, action_items="cues").write(t, facts(t))
    assert [(a.owner, a.how) for a in m.action_items] == [("Priya Shah", "accepted")]
    assert [q.turn for q in m.action_items[0].evidence] == [0, 1]


def test_whoever_only_asked_did_not_take_the_task_on():
    """The model names the one who asked ("Can somebody deal with that?"): not an owner; the
    one who answered is."""
    t = transcript([
        ("S1", "The certificate on the staging server expires on Saturday."),
        ("S0", "Can somebody deal with that? Last time it expired, did we lose a morning?"),
        ("S1", "Yep, I've got it. I'll renew the staging certificate today, before lunch."),
    ], NAMES)
    chat = RoutedChat(find=lambda user: {"items": [
        {"line": 1, "who": "Daniel Reyes", "task": "deal with the staging certificate"}]},
        judge={1: {"kind": "task", "owner": "Daniel Reyes",
                   "task": "deal with the staging certificate"},
               2: {"kind": "task", "owner": "Martin Kowalski",
                   "task": "renew the staging certificate", "due": "today"}})
    m = LLMMinutesWriter(chat).write(t, facts(t))
    # one item, Martin's: he answered the ask to the room and took it on
    assert [a.owner for a in m.action_items] == ["Martin Kowalski"]
    assert "staging certificate" in m.action_items[0].task
    assert check_minutes(m.to_json(), t.to_json()) == []


def test_the_one_asked_who_says_no_does_not_own_it():
    """Asked by name and declining: the 1.5B model calls it a task accepted; the person
    who then volunteers owns it."""
    t = transcript([
        ("S0", "Martin, could you look into skip hire?"),
        ("S1", "I'd rather not take that on as well, honestly, I've got the accounts."),
        ("S2", "I'll do it. I'll get a quote for a skip and let you know next week."),
    ], NAMES)
    chat = RoutedChat(judge={0: {"kind": "task", "owner": "Martin Kowalski",
                                 "task": "look into skip hire"},
                             2: {"kind": "task", "owner": "Priya Shah",
                                 "task": "get a quote for a skip", "due": "next week"}})
    m = LLMMinutesWriter(chat).write(t, facts(t))
    assert [(a.owner, a.task) for a in m.action_items] == [("Priya Shah",
                                                          "get a quote for a skip")]
    assert check_minutes(m.to_json(), t.to_json()) == []


def test_an_acceptance_that_only_says_it_is_worded_from_what_it_answers():
    """"Sure, I'll take it": the task is what was said before the ask, and it stands."""
    t = transcript([
        ("S0", "Someone needs to be here when the landlord does the inspection, with photos."),
        ("S1", "Could Priya do that instead? She works from home on Wednesdays."),
        ("S2", "Sure, I'll take it."),
        ("S0", "Good. Boxes next."),
    ], NAMES)
    chat = RoutedChat(judge={i: {"kind": "task", "owner": "Priya Shah",
                                 "task": "Be here for the landlord's inspection with the photos",
                                 "line": 2} for i in range(3)})
    m = LLMMinutesWriter(chat, action_items="cues").write(t, facts(t))
    assert [(a.owner, a.task) for a in m.action_items] == [
        ("Priya Shah", "Be here for the landlord's inspection with the photos")]
    assert check_minutes(m.to_json(), t.to_json()) == []
    # words from nowhere near it still do not stand: her own words do, and the reader is told
    chat = RoutedChat(judge={i: {"kind": "task", "owner": "Priya Shah",
                                 "task": "Order the new printer cartridges", "line": 2}
                             for i in range(3)})
    m = LLMMinutesWriter(chat, action_items="cues").write(t, facts(t))
    assert [a.task for a in m.action_items] == ["take it"]
    assert any("own words" in f.message for f in m.flags)


def test_a_firm_promise_the_judge_calls_an_idea_is_still_a_task_a_hedged_one_is_not():
    t = transcript([
        ("S0", "Then, Priya, could you take the reviewer responses instead?"),
        ("S2", "Sure, I can take that. I write the rebuttal and circulate it on Friday."),
        ("S1", "Maybe I'll look at the old dashboard one day."),
        ("S0", "Right."),
    ], NAMES)
    chat = RoutedChat(judge={
        0: {"kind": "idea", "owner": "Priya Shah", "task": "take the reviewer responses",
            "due": "Friday"},
        2: {"kind": "idea", "owner": "Martin Kowalski", "task": "look at the old dashboard"}})
    m = LLMMinutesWriter(chat, action_items="cues").write(t, facts(t))
    assert [(a.owner, a.task) for a in m.action_items] == [
        ("Priya Shah", "take the reviewer responses")]
    assert check_minutes(m.to_json(), t.to_json()) == []


def test_a_proposed_task_on_a_line_the_transcript_lacks_goes_to_the_line_that_says_it():
    # the diarizer made one long turn of three people's talk; the model numbered its sentences
    t = transcript([
        ("S0", "Hola a todos. Yo reservo el autobús para el sábado catorce. Y la comida también."),
        ("S0", "Muy bien, hasta luego."),
    ], {"S0": "Marta Delgado"})
    chat = RoutedChat(find=lambda u: {"items": [
        {"line": 7, "who": "Marta Delgado", "task": "reservar el autobús para el sábado"},
        {"line": 9, "who": "Marta Delgado", "task": "llamar al museo del Prado"}]},
        judge={0: {"kind": "task", "owner": "Marta Delgado",
                   "task": "reservar el autobús para el sábado", "due": "el sábado catorce"}})
    m = LLMMinutesWriter(chat).write(t, facts(t))
    assert [(a.owner, a.evidence[0].turn) for a in m.action_items] == [("Marta Delgado", 0)]
    assert check_minutes(m.to_json(), t.to_json()) == []


def test_a_commitment_reported_of_someone_absent_is_nobodys_task_here():
    t = transcript([
        ("S0", "Any news on the scans?"),
        ("S2", "Since last night, yes. Radiology says they'll clear the backlog by tomorrow."),
        ("S1", "Good."),
    ], NAMES)
    chat = RoutedChat(find=lambda u: {"items": [
        {"line": 1, "who": "Priya Shah", "task": "Radiology will clear the backlog by tomorrow"}]},
        judge={1: {"kind": "task", "owner": "Priya Shah",
                   "task": "Radiology will clear the backlog by tomorrow", "due": "tomorrow"}})
    assert LLMMinutesWriter(chat).write(t, facts(t)).action_items == []
