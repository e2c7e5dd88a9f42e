"""Action items from what people took on, each with its evidence: find broadly, judge one at
a time, and let the pipeline, not the model, check who owns it.

1. **Candidates** come from two sources, so neither one's blind spots decide alone:
   the model reading the transcript (in parts, with speaker labels and numbered lines:
   "which lines are someone taking on a task?"; works in any language the model reads), and
   the pipeline's English cue patterns (:mod:`daemon.minutes.actions`: "I'll ...", "David,
   can you ...?" answered "Yes"). Candidates on the same lines are merged.
2. **Judge** each candidate with one short question over its excerpt (the lines before and
   after it): what task, by when, and who finally took it on, or nothing (work already
   done, an idea nobody took, a question, a refusal, a hypothetical).
3. **Check** the answer against the transcript: the owner must be someone who speaks in the
   excerpt, at or after the candidate's line (who said "I'll do it", or was asked and
   answered); the evidence is that person's sentence and the ask before it. An owner the
   transcript does not support falls back to the cue's speaker, or the item is dropped.
4. **Follow the conversation**: an item handed over ("actually, Priya, could you take that
   instead?" answered "Sure") belongs to the last person who accepted; two items of one
   owner about one task become one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import BaseModel, field_validator

from daemon.minutes.actions import TaskCue, speaker_named, trivial
from daemon.minutes.evidence import best_sentence, content_words, overlap, quote
from daemon.names import display_label
from daemon.text import split_sentences
from daemon.types import ActionItem, SpeakerTranscript

# --------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """Lines where someone may have taken on a task."""

    turns: list[int]
    owner: str | None = None  # speaker id the cue patterns found, if any
    owner_hint: str | None = None  # the name the model gave, if any
    task_hint: str = ""
    sources: set[str] = field(default_factory=set)  # "cues", "model"

    @property
    def first(self) -> int:
        return min(self.turns)

    @property
    def last(self) -> int:
        return max(self.turns)


def numbered_lines(t: SpeakerTranscript, lo: int = 0, hi: int | None = None,
                   marked: set[int] | frozenset[int] = frozenset()) -> list[str]:
    """"[12] Maria Lopez: ..." per segment; ``marked`` lines start with ">>"."""
    hi = len(t.segments) if hi is None else hi
    return [f"{'>> ' if i in marked else ''}[{i}] {display_label(t, t.segments[i].speaker)}: "
            f"{t.segments[i].text}" for i in range(lo, hi)]


class Proposed(BaseModel):
    line: int
    who: str | None = None
    task: str = ""

    @field_validator("line", mode="before")
    @classmethod
    def _line(cls, v):
        if isinstance(v, str):
            v = v.strip().strip("[]L#")
        return int(v)

    @field_validator("who", "task", mode="before")
    @classmethod
    def _text(cls, v):
        return None if v is None else str(v)


class ProposedList(BaseModel):
    items: list[Proposed] = []

    @field_validator("items", mode="before")
    @classmethod
    def _items(cls, v):
        out = []
        for x in v or []:
            if isinstance(x, dict):
                try:
                    out.append(Proposed.model_validate(x))
                except (ValueError, TypeError):
                    continue  # one unreadable entry does not cost the others
        return out


FIND_SYSTEM = """You read a part of a meeting transcript and list the places where a person \
takes on a task for the future: they say they will do something, or they are asked to do \
something and agree. Each transcript line starts with its number in brackets and the speaker.
Reply with one JSON object only, no prose:
{"items": [{"line": 12, "who": "the person who will do it", "task": "what they will do"}]}
Not tasks: work already done, ideas or wishes nobody takes on, questions, refusals, \
hypotheticals ("if we had time we could"). If nobody takes on anything, reply {"items": []}."""


def find_prompt(t: SpeakerTranscript, lo: int, hi: int, names: list[str]) -> str:
    who = f"People in the meeting: {', '.join(names)}.\n\n" if names else ""
    return (who + "Transcript part:\n" + "\n".join(numbered_lines(t, lo, hi)) +
            "\n\nList the tasks people take on, as the JSON object.")


def merge_candidates(t: SpeakerTranscript, cues: list[TaskCue],
                     proposed: list[Proposed]) -> list[Candidate]:
    """One candidate per place: the cue patterns' groups, and the model's lines not already
    inside one of them (a proposal within a turn of a cue of the same person joins it)."""
    out = [Candidate(turns=sorted({c.turn for c in cue.commitments}), owner=cue.owner,
                     task_hint=cue.commitments[-1].sentence, sources={"cues"}) for cue in cues]
    n = len(t.segments)
    for p in proposed:
        if not 0 <= p.line < n:
            continue
        spk = t.segments[p.line].speaker
        hit = None
        for c in out:
            near = c.first - 1 <= p.line <= c.last + 1
            same = c.owner is None or c.owner == spk or (
                p.who and _speaker_of(t, p.who) == c.owner)
            if near and same:
                hit = c
                break
        if hit is not None:
            hit.sources.add("model")
            hit.owner_hint = hit.owner_hint or p.who
            if p.line not in hit.turns:
                hit.turns = sorted({*hit.turns, p.line})
            continue
        out.append(Candidate(turns=[p.line], owner_hint=p.who, task_hint=p.task,
                             sources={"model"}))
    return sorted(out, key=lambda c: c.first)


def _speaker_of(t: SpeakerTranscript, who: str | None) -> str | None:
    """The speaker id a name or a label ("Speaker 2", "SPEAKER_01") refers to."""
    if not who:
        return None
    w = who.strip()
    for s in t.speakers:
        if w.lower() in (s.id.lower(), display_label(t, s.id).lower()):
            return s.id
    return speaker_named(t, w)


# --------------------------------------------------------------------------- judging


class Judged(BaseModel):
    kind: str | None = None
    owner: str | None = None
    task: str | None = None
    due: str | None = None
    line: int | None = None

    @field_validator("kind", "owner", "task", "due", mode="before")
    @classmethod
    def _none(cls, v):
        if v is None or (isinstance(v, str) and v.strip().lower() in (
                "", "null", "none", "n/a", "unspecified", "not specified", "not mentioned",
                "nobody", "no one", "unknown")):
            return None
        return str(v).strip()

    @field_validator("line", mode="before")
    @classmethod
    def _line(cls, v):
        if v is None or v == "":
            return None
        try:
            return int(str(v).strip().strip("[]L#"))
        except ValueError:
            return None

    def is_task(self, cued: bool = False) -> bool:
        """A task, unless the model said it is something else (a kind it was not offered,
        or none at all, counts by whether it wrote a task). "info" with a task written out
        stands where the cue patterns found a commitment: small models call a plain "I'll
        set up the call" news about as often as they call news a task."""
        k = (self.kind or "").lower()
        if k in ("done", "idea", "refused", "question", "none"):
            return False
        if k == "info" and not cued:
            return False
        return bool(self.task)


JUDGE_SYSTEM = """You check one possible action item for meeting minutes. You are shown an \
excerpt of a meeting: each line starts with its number in brackets and the speaker, and the \
line(s) to look at are marked with >>. Judge only what is said in the marked lines and the \
answers to them. Reply with one JSON object only, no prose:
{"kind": "...", "owner": "...", "task": "...", "due": "..."}
"kind" is one of:
  "done": the speaker reports work that is already done or under way (past or present),
  "info": news, a fact, an opinion, or a plan of the whole group ("we will ...") that no one \
person takes on,
  "idea": a suggestion, wish, question or hypothetical that nobody takes on,
  "refused": the person asked says no,
  "task": a person says they will do something, or is asked and agrees.
For "task": "owner" is the person who will do it (if it is handed to someone else later in \
the excerpt and they agree, that person); "task" is what they will do, as a short imperative \
in the marked lines' own words that makes sense on its own (where they only say "I'll take \
it" or "that's mine", what "it" is, in the words of the line they answer); "due" is the \
deadline said with it, or null.
For the other kinds, "owner", "task" and "due" are null.
Use only what the excerpt says; keep names, numbers and dates as said."""


def excerpt_bounds(t: SpeakerTranscript, c: Candidate, before: int = 2,
                   after: int = 1) -> tuple[int, int]:
    return max(0, c.first - before), min(len(t.segments), c.last + after + 1)


def judge_prompt(t: SpeakerTranscript, c: Candidate) -> str:
    lo, hi = excerpt_bounds(t, c)
    at = ", ".join(f"[{i}]" for i in c.turns)
    who = ""
    if c.owner is not None:  # the cue patterns know whose commitment it would be
        who = f" {display_label(t, c.owner)} may have taken on a task there: what is it?"
    return ("Excerpt:\n" + "\n".join(numbered_lines(t, lo, hi, set(c.turns))) +
            f"\n\nThe line(s) to look at: {at}.{who} Write the action item as the JSON "
            "object.")


# --------------------------------------------------------------------------- checking

# Share of a judged task's words that must occur in its excerpt (the model words the task,
# but from what was said; a task made of other words is the model's invention).
TASK_SUPPORT = 0.25
# Fewer content words than this in the owner's own lines ("Sure, I'll take it", "That one's
# mine"): the task may be worded from the two lines before the ask, which say what it is.
CONTENTLESS = 4


def resolve(t: SpeakerTranscript, c: Candidate, j: Judged) -> ActionItem | None:
    """The action item the transcript supports for candidate ``c`` judged ``j``, or None.

    The owner must speak in the excerpt at or after the candidate's first line (saying they
    will, or answering the ask); the evidence is their line and the line that asked them.
    """
    if not j.is_task(cued="cues" in c.sources) or not j.task or trivial(j.task):
        return None  # not a task, or running the meeting ("Read out the apologies")
    lo, hi = excerpt_bounds(t, c)
    segs = t.segments
    owner = _speaker_of(t, j.owner)
    accept: int | None = None
    if owner is not None:
        # Against the cue patterns' owner (the speaker of "I'll ...", the person asked who
        # answered) the model's other choice does not stand: small models often name the
        # one who asked. A task handed on is the new owner's own candidate, joined to this
        # one by follow_conversation().
        if c.owner is not None and owner != c.owner:
            owner = c.owner
        lines = [i for i in range(c.first, hi) if segs[i].speaker == owner]
        if j.line is not None and j.line in lines:
            accept = j.line
        elif lines:
            # their line among the candidate's, else their first line after it
            accept = next((i for i in c.turns if i in lines), lines[0])
    if accept is None:
        if c.owner is None:
            return None  # the model named nobody who speaks here: not supported
        owner = c.owner
        accept = next((i for i in c.turns if segs[i].speaker == owner), None)
    # The evidence: the owner's own lines about it, and the ask they answered.
    own = sorted({i for i in c.turns if segs[i].speaker == owner} | (
        {accept} if accept is not None else set()))
    asked = [i for i in c.turns if segs[i].speaker != owner and (accept is None or i < accept)]
    evidence_turns = sorted(set(own) | ({asked[-1]} if asked else set()))
    if not evidence_turns:
        return None
    said = _with_context(t, evidence_turns, own, lo)
    if not supported(j.task, said):
        return None  # the task is not what these lines say: the model read it elsewhere
    how = "took it on"
    if asked and accept is not None:
        how = "accepted"
    quotes = [quote(t, i, best_sentence(t, i, (j.task or "") + " " + c.task_hint))
              for i in evidence_turns]
    if not any(_commits(x) for i in own for x in split_sentences(segs[i].text)):
        return None  # the owner only asked ("Can somebody deal with that?"): not taken on
    if asked and own and all(_REFUSE.search(segs[i].text) for i in own):
        return None  # asked, and said no ("I'd rather not take that on"): small models miss it
    weak = accept is None  # e.g. "Sam will send it" and Sam never answers
    if weak:
        how = "model" if "cues" not in c.sources else how
    if _someone_elses(j.task, display_label(t, owner)):
        return None  # "Radiology will clear the backlog": reported, not taken on here
    due = j.due if j.due and overlap(j.due, said) > 0 or (j.due and j.due.lower() in
                                                            said.lower()) else None
    return ActionItem(owner=display_label(t, owner), task=j.task, due=due, evidence=quotes,
                      how=how, weak=weak)


# A task the model wrote as a statement about someone else ("Radiology will clear the
# backlog by tomorrow", "The council says they'll send it"): another's commitment, reported.
_REPORTED = re.compile(r"^(?:the\s+)?([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)\s+(?:will|'ll|is going to|"
                       r"are going to|says|said|promised)\b")


def _someone_elses(task: str, owner: str) -> bool:
    m = _REPORTED.match(task.strip())
    if not m:
        return False
    subject = {w.lower() for w in m.group(1).split()}
    return not subject & {w.lower() for w in owner.split()} and not subject & {"i", "we"}


# An answer that declines (English; the model's "refused" is the path in any language).
_REFUSE = re.compile(r"^\W*(?:(?:sorry|no|honestly|well|um|uh)[,.!]?\s+)*(?:i'd rather not|"
                     r"i would rather not|i can't|i cannot|i can not|i won't|i'm not able|"
                     r"i am not able|i don't think i can|not me|no\b|i'd prefer not|"
                     r"i'm afraid i can't|i couldn't)", re.I)
# A question offering to do it is a commitment once answered ("Shall I take that?").
_OFFER = re.compile(r"^\W*(?:so,? |okay,? |ok,? )?(?:shall|should|can|could|may) i\b|"
                    r"\bdo you want me to\b|\bwant me to\b", re.I)


def _commits(sentence: str) -> bool:
    """Whether a quoted sentence of the owner can be where they took a task on: not a
    question (any language Whisper punctuates), unless it offers to do it."""
    s = sentence.strip()
    return not s.endswith(("?", "？", "¿")) or bool(_OFFER.search(s))


def supported(task: str, said: str) -> bool:
    return overlap(task, said) >= TASK_SUPPORT


def evidence_text(t: SpeakerTranscript, c: Candidate) -> str:
    """What the candidate's lines say, and when its owner's words alone do not say what the
    task is ("Sure, I'll take it"), the two lines before them too."""
    own = [i for i in c.turns if c.owner is None or t.segments[i].speaker == c.owner]
    return _with_context(t, c.turns, own, 0)


def _with_context(t: SpeakerTranscript, turns: list[int], own: list[int], lo: int) -> str:
    """The text of ``turns``; when the owner's lines (``own``) are too few words to say what
    the task is ("Sure, I'll take it"), the two lines before them (from ``lo`` on) first."""
    segs = t.segments
    said = " ".join(segs[i].text for i in turns)
    if len(content_words(" ".join(segs[i].text for i in own))) < CONTENTLESS:
        first = min(turns)
        said = " ".join(segs[i].text for i in range(max(lo, first - 2), first)) + " " + said
    return said


RETRY_UNSUPPORTED = ("That task is not what the marked line(s) say. Write the task taken on "
                     "in the marked line(s), in their words, as the JSON object, or the kind "
                     "of what they say.")


def _similar(a: str, b: str) -> bool:
    wa, wb = content_words(a), content_words(b)
    return bool(wa and wb) and len(wa & wb) / min(len(wa), len(wb)) >= 0.5


def follow_conversation(items: list[ActionItem]) -> list[ActionItem]:
    """Items in order of their first evidence, handed-over tasks with their last owner, one
    item per owner and task."""
    items = sorted(items, key=lambda a: a.evidence[0].turn if a.evidence else 0)
    out: list[ActionItem] = []
    for it in items:
        first = it.evidence[0].turn if it.evidence else -1
        merged = False
        for prev in reversed(out):
            last = prev.evidence[-1].turn if prev.evidence else -1
            close = 0 <= first - last <= 3
            same_task = _similar(prev.task, it.task)
            if prev.owner == it.owner and (same_task or (close and first - last <= 1)):
                _absorb(prev, it)
                merged = True
                break
            if prev.owner != it.owner and close and same_task and any(
                    q.speaker == _speaker_id(prev) for q in it.evidence):
                # the earlier owner handed it over, and the new one accepted
                it.evidence = prev.evidence + [q for q in it.evidence
                                               if q.turn not in {p.turn for p in prev.evidence}]
                it.how = "handed over"
                it.due = it.due or prev.due
                out.remove(prev)
                break
        if not merged:
            out.append(it)
    return out


def _speaker_id(item: ActionItem) -> str | None:
    """The speaker id of the item's owner, from its evidence."""
    return next((q.speaker for q in item.evidence
                 if (q.name or q.speaker) == item.owner or q.speaker == item.owner), None)


def _absorb(into: ActionItem, other: ActionItem) -> None:
    have = {q.turn for q in into.evidence}
    into.evidence = sorted(into.evidence + [q for q in other.evidence if q.turn not in have],
                           key=lambda q: q.turn)
    if len(other.task) > len(into.task):
        into.task = other.task
    into.due = into.due or other.due
    into.weak = into.weak and other.weak
