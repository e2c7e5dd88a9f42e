"""Action items from commitments: owners are the speakers who took the task on."""

from __future__ import annotations

import json

from daemon.minutes.actions import find_commitments, task_cues
from daemon.minutes.writer import LLMMinutesWriter
from daemon.types import MeetingFacts, Speaker, SpeakerSegment, SpeakerTranscript


def transcript(turns, names):
    segs, t = [], 0.0
    for spk, text in turns:
        segs.append(SpeakerSegment(t, t + 5, spk, text))
        t += 6
    order = list(dict.fromkeys(s for s, _ in turns))
    return SpeakerTranscript(t, [Speaker(s, names.get(s), 5.0) for s in order], segs)


NAMES = {"S0": "Maria Lopez", "S1": "David Chen", "S2": "Priya Natarajan"}
MEETING = [
    ("S0", "Good morning everyone. I have David and Priya with me today."),
    ("S1", "Thanks Maria. I'll be honest, the wiring is older than we thought."),
    ("S0", "Then let's get more numbers. David, can you collect three quotes by Friday?"),
    ("S1", "Yes, I will have three quotes from the contractors by Friday."),
    ("S2", "I'd like to run a short survey of patrons next week."),
    ("S0", "Good. Priya, please run that survey and bring the results to our next sync."),
    ("S2", "Will do."),
    ("S1", "The contractors need the reading room empty. Should we close it in April?"),
    ("S0", "Agreed. I'll write a memo to the board. I'll send it by March twentieth."),
    ("S2", "Could you copy me on the memo?"),
    ("S0", "Of course. Thanks both, see you next Wednesday."),
]


def test_commitments_are_grouped_per_task_with_the_speaker_who_owns_it():
    t = transcript(MEETING, NAMES)
    cues = task_cues(t)
    got = [(c.owner, [x.kind for x in c.commitments]) for c in cues]
    assert got == [
        ("S1", ["asked", "self"]),           # asked by name, then accepted in their own words
        ("S2", ["self", "asked"]),           # proposed, then asked to
        ("S0", ["self", "self", "asked"]),   # two sentences of one turn + a request accepted
    ]
    # "I'll be honest" is not a task; a question is not a commitment
    assert not any("honest" in c.sentence for c in find_commitments(t))


def test_an_unnamed_request_counts_only_when_the_next_speaker_accepts():
    t = transcript([("S0", "Could you send the slides?"), ("S1", "I'm not sure that works.")],
                   {"S0": "Maria Lopez"})
    assert find_commitments(t) == []
    t = transcript([("S0", "Could you send the slides?"), ("S1", "Sure.")], {"S0": "Maria Lopez"})
    assert [(c.owner, c.kind) for c in find_commitments(t)] == [("S1", "asked")]


class PhraseChat:
    """Answers each focused question from a table keyed by a word of the excerpt."""

    name = "phrase"
    context_tokens = 4096

    def __init__(self):
        self.calls = []

    def count_tokens(self, text):
        return len(text.split())

    def chat(self, messages, max_new_tokens, json_output=False, on_token=None):
        self.calls.append(messages)
        user = messages[1].content
        if "Transcript:" in user:
            return json.dumps({"title": "Library sync", "summary": "Budget.",
                               "discussion_points": [], "decisions": ["Close in April"]})
        if "quotes" in user.split("took on:")[1]:
            return '{"task": "Collect three electrical quotes", "due": "Friday"}'
        if "survey" in user.split("took on:")[1]:
            return "not json at all"  # and again on the retry: the cue's words stand in
        return '{"task": null, "due": null}'


def test_each_cue_is_phrased_by_the_model_and_the_owner_stays_the_speaker():
    t = transcript(MEETING, NAMES)
    facts = MeetingFacts("2026-03-04", t.duration_s, list(NAMES.values()), t.speakers)
    chat = PhraseChat()
    m = LLMMinutesWriter(chat, max_attempts=2).write(t, facts)
    items = [(a.owner, a.task, a.due) for a in m.action_items]
    assert items == [
        ("David Chen", "Collect three electrical quotes", "Friday"),
        ("Priya Natarajan", "Priya, please run that survey and bring the results to our next sync.",
         None),
    ]  # Maria's cue was judged "no task" by the model and dropped
    first = chat.calls[0]
    assert "action_items" not in first[0].content  # the minutes call does not ask for them
    assert m.decisions == ["Close in April"]
