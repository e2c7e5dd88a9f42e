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


def test_soft_commitments_are_candidates_too():
    t = transcript([
        ("S0", "Who can look at the permit?"),
        ("S1", "Leave that with me."),
        ("S2", "I can get you the figures by Thursday."),
        ("S0", "I sent the contract last week."),  # done already: no cue
        ("S1", "Count me in for the stall on Saturday."),
    ], NAMES)
    # the permit was offered to the room and S1 answered: asked, and took it on
    assert [(c.owner, c.turn) for c in find_commitments(t)] == [
        ("S1", 0), ("S1", 1), ("S2", 2), ("S1", 4)]


class JudgeChat:
    """The draft, and a judge that answers by the excerpt's lines."""

    name = "judge"
    context_tokens = 4096
    looped = 0

    def __init__(self):
        self.calls = []

    def count_tokens(self, text):
        return len(text.split())

    def chat(self, messages, max_new_tokens, json_output=False, on_token=None):
        from daemon.minutes.commitments import FIND_SYSTEM, JUDGE_SYSTEM
        from daemon.minutes.prompts import DECIDE_SYSTEM

        self.calls.append(messages)
        system, user = messages[0].content, messages[1].content
        if system == FIND_SYSTEM:
            return '{"items": []}'
        if system == DECIDE_SYSTEM:
            return '{"kind": "decision"}'
        if system != JUDGE_SYSTEM:
            return json.dumps({"title": "Library sync", "summary": "Budget.", "topics": [],
                               "decisions": [{"text": "Close the reading room in April",
                                              "line": 8}]})
        at = int(user.split("look at: [")[1].split("]")[0])
        if at == 2:
            return ('{"kind": "task", "owner": "David Chen", "task": "Collect three quotes '
                    'from the contractors", "due": "Friday", "line": 3}')
        if at == 4:
            return "not json at all"  # and again on the retry: the cue's words stand in
        return '{"kind": "idea", "owner": null, "task": null}'


def test_each_cue_is_judged_by_the_model_and_checked_against_the_transcript():
    t = transcript(MEETING, NAMES)
    facts = MeetingFacts("2026-03-04", t.duration_s, list(NAMES.values()), t.speakers)
    chat = JudgeChat()
    w = LLMMinutesWriter(chat, max_attempts=2)
    m = w.write(t, facts)
    items = [(a.owner, a.task, a.due, a.how) for a in m.action_items]
    assert items == [
        ("David Chen", "Collect three quotes from the contractors", "Friday", "accepted"),
        ("Priya Natarajan", "Priya, please run that survey and bring the results to our next sync.",
         None, "took it on"),
    ]  # Maria's memo was judged "no task" by the model and dropped
    assert [q.turn for q in m.action_items[0].evidence] == [2, 3]  # the ask and the yes
    assert any("no valid answer" in r for r in w.repairs)
    assert "action_items" not in chat.calls[0][0].content  # the minutes call does not ask
    assert m.decisions == ["Close the reading room in April"]


def test_checking_the_line_is_not_a_request():
    t = transcript([("S0", "Can you all hear me?"), ("S1", "Yes, loud and clear.")],
                   {"S0": "Maria Lopez"})
    assert find_commitments(t) == []


def test_firm_commitments_are_told_from_wishes_and_vague_offers():
    from daemon.minutes.actions import firm, own_words

    for s in ("Great, I'll make the final call on Friday.", "Leave that with me.",
              "Thanks, and I can get you a draft of the introduction by Monday."):
        assert firm(s), s
    for s in ("But if there is a better price, I'd like to know that too.",
              "I can look at it sometime.", "I'll be honest, it is a mess."):
        assert not firm(s), s
    assert own_words("Great, I'll make the final call on Friday.") == (
        "make the final call on Friday")


def test_running_the_meeting_is_not_a_task():
    t = transcript([("S0", "Then I shall put the motion, that we take the lease. All in favour?"),
                    ("S1", "I'll write to the landlord this week.")], {"S0": "Eleanor Fair",
                                                                       "S1": "Victor Ade"})
    assert [(c.owner, c.commitments[0].turn) for c in task_cues(t)] == [("S1", 1)]


def test_recapping_or_reading_out_is_running_the_meeting_not_a_task():
    from daemon.minutes.actions import trivial

    t = transcript([("S0", "Right, let me just run through what we've got, so nobody's surprised."),
                    ("S1", "I'll read out the apologies first."),
                    ("S2", "I'll go through the contract and flag anything odd.")],
                   {"S0": "Beatrice Holloway", "S1": "Declan Ward", "S2": "Moira Callaghan"})
    assert [c.owner for c in task_cues(t)] == ["S2"]
    assert trivial("Read out Hillary Stanton's apologies") and trivial("Run through the list")
    assert not trivial("Go through the contract and flag anything odd")


def test_wanting_to_know_something_asks_others_it_takes_nothing_on():
    t = transcript([("S0", "On top, I think. But if there is a better price, I'd like to know that too."),
                    ("S1", "Let me look into that with finance.")],
                   {"S0": "Martin Kowalski", "S1": "Daniel Reyes"})
    assert [c.owner for c in task_cues(t)] == ["S1"]


def test_a_task_offered_to_the_room_belongs_to_whoever_answers_it():
    t = transcript([
        ("S0", "Who can sort out the message? I've no idea how the phone system works."),
        ("S1", "At once mine. The new phone message will be recorded and live by Monday."),
        ("S2", "Does anyone know when the fridge was serviced?"),
        ("S0", "No idea."),
        ("S1", "Can somebody book the room?"),
        ("S2", "Sorry, I'm away all week."),
        ("S0", "Who could go home today?"),
        ("S2", "I went through the list at seven. Three people are medically fit."),
    ], NAMES)
    # Whisper's "At once mine" is no pattern, but it answers the room's ask; a question
    # about a fact, and an ask answered with a no, give nobody anything
    assert [(c.owner, [x.turn for x in c.commitments]) for c in task_cues(t)] == [("S1", [0])]
