"""Action items from commitments: who took on what, read from the speaker-labelled transcript.

Owners are a fact the pipeline knows: the person who says "I'll send the memo" is the speaker
of that sentence, and the person asked "David, can you collect the quotes?" is David (or,
when no name is said, the next person to speak, if they accept). So owners are not left to
the model's reading of a long transcript, where small models lose track of who said what.

1. **Find** sentences where someone takes on a task: "I'll ..." / "I will ..." / "I'm going
   to ..." / "I'd like to ..." / "let me ..." (the speaker), "Maria will ..." (Maria, when she
   is in the meeting), "David, can you ..." / "Samuel, I want ..." / "..., please ..." (the
   person addressed), "Could you ...?" answered "Yes" / "Of course" (the one who answered).
2. **Group** the sentences about one task: the same owner, close together (the same turn, or
   an ask and its answer a turn or two apart, or a later sentence about the same thing).
3. The groups are candidates beside the model's own reading; each is then judged and
   checked in :mod:`daemon.minutes.commitments`.

These patterns are English and only add recall: the model's reading of the transcript is
the path that works in any language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from daemon.minutes.owners import match_person
from daemon.text import split_sentences
from daemon.types import SpeakerTranscript

# "I'll be honest", "I'll see you next week", "I will start with the budget", "I shall put the
# motion", "let me just run through what we've got" (running the meeting): not tasks.
_RUNNING = (
    r"(?:just |quickly |briefly )?(?:chair\b|take the chair|move on|wrap up|get started|"
    r"put (?:the|this|that|a) (?:motion|question|proposal|resolution)\b|take (?:a|the) vote\b|"
    r"run through\b|go through what|recap\b|sum (?:it |this |things )?up\b|summari[sz]e\b|"
    r"read out\b|read (?:the|her|his|their) apologies|share (?:my|the) screen|"
    r"introduce (?:it|myself|the item|this item)\b|(?:open|close) the meeting|declare\b)")
_TRIVIAL = re.compile(
    r"^(?:just |quickly |briefly )?(?:be\b|stay\b|see you|start\b|begin\b|stop\b|say\b|"
    r"tell you\b|keep (?:it|this) short|hand (?:it )?(?:over|back)|pass (?:it )?(?:over|on)|"
    r"let you\b|try to be brief|take (?:a|that) question|just say|leave it there|go first|"
    r"admit|bet\b|answer that|repeat that|"
    r"ask (?:you|everyone|everybody|people|the room) (?:to|for|if|whether)|keep (?:this|it) brief)"
    rf"|^{_RUNNING}", re.I)
_RUNS_MEETING = re.compile(rf"^{_RUNNING}", re.I)
_SELF = re.compile(
    r"\b(?:I(?:'ll| will| shall|'m going to| am going to|'d like to| would like to| can take| "
    r"can do| will take| volunteer to| plan to| can get| can have| can send| could take| "
    r"'m happy to| am happy to|'d be happy to| would be happy to| can look| can check| can ask"
    r")|let me)\s+(.{4,})", re.I)
# Commitments with nothing after them: "leave that with me", "count me in", "that one's mine".
_SELF_SHORT = re.compile(
    r"\b(?:leave (?:it|that|this) (?:with|to) me|count me in|put me down(?: for)?|"
    r"(?:that|this)(?: one)?(?:'s| is) mine|I'm on it|I've got (?:it|this|that)|"
    r"I (?:can|will|'ll) (?:take|do|handle|sort) (?:it|that|this)(?: one)?)\b", re.I)
_THIRD = re.compile(r"\b([A-Z][a-z]+) (?:will|is going to|'ll|can take care of)\s+(.{4,})")
_ASK_NAMED = re.compile(
    r"(?:^(?:\w+[,.]?\s+)?|[,;:]\s*)([A-Z][a-z]+),\s+(?:(?:can|could|would|will) you|please|I want|I need|"
    r"I'd like you|you(?:'ll| will| should| need)|make sure|let's have you)\b\s*(.{4,})")
_ASK_END_NAMED = re.compile(r"^(?:(?:can|could|would|will) you|please)\b(.{4,}?),\s*([A-Z][a-z]+)\s*[?.!]*$",
                            re.I)
_ASK_OPEN = re.compile(r"^(?:(?:can|could|would|will) you|please)\b\s*(.{4,})", re.I)
# A task offered to the room: "Who can sort out the message?", "Can somebody deal with that?",
# "Does anyone want to take the minutes?". Whoever answers next for themself, not asking back
# or saying no, may have taken it ("That one's mine", or Whisper's "At once mine").
_ASK_ROOM = re.compile(r"^(?:\w+,?\s+)?(?:who(?:'s| is)? (?:can|could|will|wants to|is going to|"
                       r"happy to|able to)|(?:can|could|will|would) (?:someone|somebody|anyone|"
                       r"anybody)|does (?:anyone|anybody) want to|is (?:anyone|anybody) able to)"
                       r"\b\s*(.{4,})", re.I)
# "Can you all hear me?" answered "Yes": a check of the line, not a task.
_ASK_TRIVIAL = re.compile(r"^(?:can|could) you (?:all |both )?(?:hear|see) (?:me|us|my|the screen)"
                          r"|^(?:can|could) you repeat|^(?:can|could) you say that again", re.I)
# An answer to the room that speaks for oneself ("mine", "I'll", "leave it with me").
_FIRST_PERSON = re.compile(r"\b(?:mine|me|I'll|I will|I can|I could|I've got|I'm on|on it|will do)\b",
                           re.I)
_REFUSES = re.compile(r"^\W*(?:no\b|not me|i can't|i cannot|i won't|sorry|i'd rather not)", re.I)
_ACCEPT = re.compile(
    r"^(?:yes|yeah|yep|sure|ok(?:ay)?|of course|will do|absolutely|definitely|understood|"
    r"no problem|happy to|sounds good|on it|i can|i will|i'll|consider it done)\b", re.I)
_STOP = set(["about", "after", "again", "also", "back", "been", "before", "being", "both", "could", "does", "doing", "done", "each", "even", "from", "have", "here", "into", "just", "like", "made", "make", "many", "more", "most", "much", "need", "next", "only", "other", "over", "really", "should", "some", "such", "than", "that", "their", "them", "then", "there", "these", "they", "this", "those", "through", "very", "want", "week", "well", "were", "what", "when", "where", "which", "while", "will", "with", "would", "your", "yours", "today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "everyone", "everybody"])


@dataclass
class Commitment:
    owner: str  # speaker id
    turn: int  # index of the segment
    sentence: str
    kind: str  # "self", "asked", "third", "accept"


@dataclass
class TaskCue:
    """Sentences about one task and the speaker who owns it."""

    owner: str  # speaker id
    commitments: list[Commitment] = field(default_factory=list)

    @property
    def first_turn(self) -> int:
        return self.commitments[0].turn

    @property
    def last_turn(self) -> int:
        return self.commitments[-1].turn

    def words(self) -> set[str]:
        return set().union(*(_content(c.sentence) for c in self.commitments))


def _content(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{4,}", text.lower()) if w not in _STOP}


# A firm first-person commitment ("I'll ...", "I can get you a draft by Monday", "leave that
# with me"), not a wish or a vague offer ("I'd like to know that too", "I can look"): what
# stands on its own words when the model cannot word the task from it.
_FIRM = re.compile(r"\b(?:I'll|I will|I shall|I'm going to|I am going to|I volunteer to|"
                   r"I can (?:get|have|send|take|do))\s+\w", re.I)


# "I'd like to know that too", "I want to see the numbers": asking others for something, not
# taking a task on.
_WISH_TO_KNOW = re.compile(r"\bI(?:'d| would)? (?:like|love|want) to (?:know|see|hear|understand)\b",
                           re.I)
# A commitment said with a hedge or a condition is not firm ("Maybe I'll look at it", "If the
# quotes allow it, I'll ...").
_HEDGED = re.compile(r"\b(?:maybe|perhaps|might|if|unless|probably|possibly|one day|at some point)\b",
                     re.I)


def firm(sentence: str) -> bool:
    return bool(_FIRM.search(sentence) or _SELF_SHORT.search(sentence)) and not (
        (m := _SELF.search(sentence)) and _TRIVIAL.match(m.group(1)))


def trivial(task: str) -> bool:
    """Whether a task, as the model wrote it, is running the meeting ("Run through what we've
    got", "Read out the apologies", "Put the motion"), not something to do after it."""
    return bool(_RUNS_MEETING.match(task.strip()))


def unhedged(sentence: str) -> bool:
    return not _HEDGED.search(sentence)


def own_words(sentence: str) -> str:
    """The task in a speaker's own commitment sentence: "Great, I'll make the final call on
    Friday." -> "make the final call on Friday"; a sentence of another shape as it is."""
    s = sentence.strip()
    if (m := _SELF.search(s)) and not _TRIVIAL.match(m.group(1)):
        return m.group(1).strip().rstrip(".!")
    return s


def speaker_named(t: SpeakerTranscript, name: str) -> str | None:
    """The speaker a spoken name refers to (name, surname or a short form), if just one."""
    person = match_person(name, [s.name for s in t.speakers if s.name])
    return next((s.id for s in t.speakers if person and s.name == person), None)


def find_commitments(t: SpeakerTranscript) -> list[Commitment]:
    segs = t.segments
    out: list[Commitment] = []
    pending_open: tuple[int, str] | None = None  # an unnamed request waiting for an answer
    for i, seg in enumerate(segs):
        next_i = next((j for j in range(i + 1, len(segs)) if segs[j].speaker != seg.speaker), None)
        sents = split_sentences(seg.text)
        if pending_open is not None:
            j, sent = pending_open
            pending_open = None
            room = bool(_ASK_ROOM.match(sent))
            if sents and (_ACCEPT.match(sents[0]) or (
                    room and not sents[0].rstrip().endswith("?") and not _REFUSES.match(sents[0])
                    and _FIRST_PERSON.search(" ".join(sents[:2])))):
                out.append(Commitment(seg.speaker, j, sent, "asked"))
        for k, sent in enumerate(sents):
            if m := _ASK_NAMED.search(sent):
                owner = speaker_named(t, m.group(1))
                if owner is None and next_i is not None:  # the person addressed answers
                    owner = segs[next_i].speaker
                if owner and owner != seg.speaker:
                    out.append(Commitment(owner, i, sent, "asked"))
                continue
            if m := _ASK_END_NAMED.match(sent):
                owner = speaker_named(t, m.group(2))
                if owner and owner != seg.speaker:
                    out.append(Commitment(owner, i, sent, "asked"))
                continue
            if _ASK_TRIVIAL.match(sent):
                continue
            if next_i is not None and ((_ASK_OPEN.match(sent) and k == len(sents) - 1) or (
                    _ASK_ROOM.match(sent) and k >= len(sents) - 2)):
                pending_open = (i, sent)
                continue
            if sent.rstrip().endswith("?"):
                continue
            if ((m := _SELF.search(sent)) and not _TRIVIAL.match(m.group(1))
                    and not _WISH_TO_KNOW.search(sent)):
                out.append(Commitment(seg.speaker, i, sent, "self"))
                continue
            if _SELF_SHORT.search(sent):
                out.append(Commitment(seg.speaker, i, sent, "self"))
                continue
            if m := _THIRD.search(sent):
                owner = speaker_named(t, m.group(1))
                if owner and owner != seg.speaker:
                    out.append(Commitment(owner, i, sent, "third"))
    return out


def group_commitments(t: SpeakerTranscript, found: list[Commitment]) -> list[TaskCue]:
    """Sentences about one task become one cue: same owner, and the same turn, or an ask and
    its answer, or the same subject a few turns later."""
    cues: list[TaskCue] = []
    for c in found:
        target = None
        for cue in reversed(cues):
            if cue.owner != c.owner or c.turn - cue.last_turn > 3:
                continue
            last = cue.commitments[-1]
            same_turn = c.turn == last.turn
            answer = c.turn - last.turn <= 2 and "asked" in (c.kind, last.kind)
            same_subject = bool(_content(c.sentence) & cue.words())
            if same_turn or answer or same_subject:
                target = cue
                break
        if target is None:
            target = TaskCue(c.owner)
            cues.append(target)
        target.commitments.append(c)
    return cues


def task_cues(t: SpeakerTranscript) -> list[TaskCue]:
    return group_commitments(t, find_commitments(t))
