"""Decisions: found broadly, judged one at a time, checked against the transcript.

The same shape as action items (:mod:`daemon.minutes.commitments`):

1. **Candidates**: the lines the model's draft gave for its decisions (the model's reading,
   any language), and the lines where English cue patterns hear the group settle something
   (:func:`daemon.minutes.cues.decision_turns`; recall only, never the only path).
2. **Judged alone**: the model sees a short excerpt around the line, marked with ``>>``,
   and says what kind of statement it is (a decision, a proposal left open, a fact, a task):
   a few tokens per place. A settled one is quoted from its settling sentence on where one
   was heard, else worded by the draft if the lines support that wording: asked to word it
   too, the 1.5B model copied the nearest sentence ("Everyone okay with that?"), and a
   sentence of output costs ~30 s a place on 2 CPU cores.
3. **Checked**: a decision's words must be the excerpt's words (DECISION_SUPPORT); its
   evidence is the excerpt's sentences that say it. A draft decision no line supports is
   dropped, and the minutes say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from daemon.minutes.actions import firm
from daemon.minutes.commitments import numbered_lines
from daemon.minutes.cues import points_back, settles
from daemon.minutes.evidence import best_sentence, content_words, overlap, quote
from daemon.minutes.schema import DraftDecision
from daemon.names import NOT_NAMES
from daemon.text import split_sentences
from daemon.types import Quote, SpeakerTranscript

# A decision's words must be this much the words of its line (or the lines around it, where
# the group reached it), else some sentence anywhere must share more: measured on the
# decisions of the dev and own meetings and the lines they were decided on (bench/minutes.py).
DECISION_SUPPORT = 0.3
DECISION_SUPPORT_ANYWHERE = 0.5
# Lines before and after the candidate the judge sees: a decision is often a proposal
# (before) settled by a yes or a restatement (the line itself, or the one after).
BEFORE, AFTER = 2, 1
# At most this many candidates are judged per meeting (each is one short model call).
MAX_CANDIDATES = 8
# A cue this many lines from a decision already taken is the same place (the "Agreed." and
# "So that's settled" that follow a decision), not judged again.
SAME_PLACE = 2
# Two decisions sharing this much of their words are one.
SAME_DECISION = 0.6


@dataclass
class DecisionCandidate:
    turn: int
    hint: str = ""  # the draft's wording, if the draft gave it
    sources: set[str] = field(default_factory=set)  # "model", "cues"


# How minutes frame a decision ("The committee decided to ...", "The group agreed that ..."):
# not what was decided, so not matched against what was said.
_FRAMING = set(["group", "team", "committee", "board", "meeting", "everyone", "members",
                "decided", "decide", "decision", "agreed", "agree", "agreement", "would",
                "that", "will", "also"])


def _share(text: str, sentence: str) -> float:
    """Share of a draft decision's own words (its framing aside) that ``sentence`` has."""
    words = content_words(text) - _FRAMING
    return len(words & content_words(sentence)) / len(words) if words else 0.0


def locate(t: SpeakerTranscript, d: DraftDecision) -> int | None:
    """The line a draft decision rests on: the one the model gave (or one next to it) if it
    shares the decision's words, else the best line anywhere if it shares more; else None."""
    n = len(t.segments)
    near = [] if d.line is None else [i for i in (d.line, d.line - 1, d.line + 1)
                                      if 0 <= i < n]
    best = max(((_share(d.text, best_sentence(t, i, d.text)), i) for i in near),
               default=(0.0, -1))
    if best[0] >= DECISION_SUPPORT:
        return best[1]
    anywhere = max(((_share(d.text, best_sentence(t, i, d.text)), i) for i in range(n)),
                   default=(0.0, -1))
    return anywhere[1] if anywhere[0] >= DECISION_SUPPORT_ANYWHERE else None


def candidates(t: SpeakerTranscript, draft: list[DraftDecision], cue_turns: list[int],
               taken: set[int] | frozenset[int] = frozenset()
               ) -> tuple[list[DecisionCandidate], list[DraftDecision]]:
    """The places to judge, in meeting order, and the draft's decisions no line supports.

    A draft decision on a line an action item rests on (``taken``), or one stating what
    named people will do, where nothing sounds like the group settling it, is a task
    ("Priya agreed to send the export"): not judged; the 1.5B model's check called every
    such one a decision."""
    by_turn: dict[int, DecisionCandidate] = {}
    unsupported: list[DraftDecision] = []
    for d in draft:
        if not d.text.strip():
            continue
        turn = locate(t, d)
        if turn is None:
            unsupported.append(d)
            continue
        c = by_turn.setdefault(turn, DecisionCandidate(turn))
        c.sources.add("model")
        c.hint = c.hint or d.text.strip()
    for turn in cue_turns:
        # a cue next to a line the model gave is the same place
        near = next((by_turn[i] for i in (turn, turn - 1, turn + 1) if i in by_turn), None)
        (near or by_turn.setdefault(turn, DecisionCandidate(turn))).sources.add("cues")
    people = _first_names(t)
    ordered = sorted((c for c in by_turn.values() if "cues" in c.sources or (
        c.turn not in taken and not _personal(c.hint, people)
        and not _asks_someone(t.segments[c.turn].text)
        and not _floated(t, c))), key=lambda c: c.turn)
    if len(ordered) > MAX_CANDIDATES:  # both sources first, then the model's, then cues
        rank = sorted(ordered, key=lambda c: (-len(c.sources), "model" not in c.sources,
                                              c.turn))
        keep = {id(c) for c in rank[:MAX_CANDIDATES]}
        ordered = [c for c in ordered if id(c) in keep]
    return ordered, unsupported


def _first_names(t: SpeakerTranscript) -> set[str]:
    return {s.name.split()[0].lower() for s in t.speakers if s.name}


# "Thomas, you are going to handle the responses", "..., Priya, could you ...": a line that
# hands something to a person by name is a task for them, not the group's decision.
_ASKS = re.compile(r"\b([A-Z][a-z]+),\s+(?:you\b|(?:can|could|would|will) you\b|please\b)")


def _asks_someone(line: str) -> bool:
    return any(m.group(1).lower() not in NOT_NAMES for m in _ASKS.finditer(line))


# An idea floated, not settled: "It might be nice to automate the release notes one day",
# "the charity could open on Saturdays", "Maybe next quarter" (English; recall aside, the
# model's reading is the path in other languages).
_FLOATED = re.compile(r"\b(?:might|could|would be nice|may wish|maybe|perhaps|one day|"
                      r"at some point|some day|someday|in the future|suppose|were we to)\b|"
                      r"\?\s*$", re.I)


def _floated(t: SpeakerTranscript, c: DecisionCandidate) -> bool:
    """A draft decision whose line only floats the idea (its sentence saying it best is
    hedged, conditional or a question) and that nothing in the excerpt settles: a suggestion
    nobody took up ("Were we to open on Saturdays?")."""
    if not c.hint or not _FLOATED.search(best_sentence(t, c.turn, c.hint)):
        return False
    lo, hi = bounds(t, c)
    return not any(settles(x) for i in range(c.turn, hi)
                   for x in split_sentences(t.segments[i].text))


def _personal(statement: str, people: set[str]) -> bool:
    """A statement about what named people will do ("Priya Shah agreed to send the export",
    "Martin and Priya will set up a call"): their commitment, an action item's business; a
    decision is the group's ("The group agreed ...", "The launch moves to June")."""
    words = statement.split()
    return bool(words) and words[0].strip(",.:").lower() in people


def bounds(t: SpeakerTranscript, c: DecisionCandidate) -> tuple[int, int]:
    return max(0, c.turn - BEFORE), min(len(t.segments), c.turn + AFTER + 1)


def decide_prompt(t: SpeakerTranscript, c: DecisionCandidate) -> str:
    lo, hi = bounds(t, c)
    # The draft's statement is judged as stated: asked only whether something was decided
    # near a line, the model says yes to tasks ("Priya agreed to send the export").
    what = (f"\n\nStatement: {c.hint}\n\nThe line to look at: [{c.turn}]. Which kind is the "
            "statement?" if c.hint else
            f"\n\nThe line to look at: [{c.turn}]. Was something decided there?")
    return ("Excerpt:\n" + "\n".join(numbered_lines(t, lo, hi, {c.turn})) + what +
            " Answer with the JSON object.")


def resolve(t: SpeakerTranscript, c: DecisionCandidate, written: str | None
            ) -> tuple[str, list[Quote]] | None:
    """The decision as the minutes state it and the sentences it rests on, or None.

    Where the marked line has a sentence that settles it, the decision is that line as
    said from there on ("Okay, let's make the call. On phones, the list is the default."):
    the draft's paraphrase mixes things up, a quote cannot. Elsewhere (the model's reading
    alone, any language) the model's wording stands if it is what the marked line or the
    proposal before it says (the line after is there for the judge to see the yes, not to
    word the decision from), else the line as said."""
    lo, hi = bounds(t, c)
    said = " ".join(t.segments[i].text for i in range(lo, c.turn + 1))
    names = _name_words(t)
    # "Agreed. I'll let infection control know that's the plan.": what the speaker then takes
    # on is their task, not what was settled
    full = settled_sentences(t, c.turn)
    own = " ".join(x for x in split_sentences(full) if not firm(x))
    # "Agreed." settles the proposal before it: that is the decision
    if (own != full and own and _settles_in(t, c.turn) and len(content_words(own) - names) < 2
            and (prop := _proposal(t, c.turn, lo, own, names)) is not None
            and (settled := _settled_proposal(t, c.turn, prop))[0]):
        return settled
    if len(content_words(own) - names) < 2:
        own = ""  # "Agreed." alone: the decision is the line it answers
    # Where the speaker's settling sentence was heard, their words are the decision (a
    # quote cannot misstate it); elsewhere the model's wording, if the lines support it.
    text = own if own and _settles_in(t, c.turn) else next(
        (x.strip() for x in (written, c.hint) if x and _says(x, said, names)), None) or own
    if text and text == own and (prop := _proposal(t, c.turn, lo, own, names)) is not None:
        # "Good, that's settled then." settles the proposal before it: that is the decision
        return _settled_proposal(t, c.turn, prop)
    if not text:
        return None
    # Evidence: the marked line's sentence that says it best, and any other line of the
    # excerpt that says it better (the proposal a "let's do that" settled).
    scored = sorted(((overlap(text, best_sentence(t, i, text)), i) for i in range(lo, hi)),
                    reverse=True)
    turns = {c.turn}
    if scored and scored[0][1] != c.turn and scored[0][0] > overlap(
            text, best_sentence(t, c.turn, text)):
        turns.add(scored[0][1])
    quotes = [quote(t, i, best_sentence(t, i, text)) for i in sorted(turns)]
    return text, quotes


def _settled_proposal(t: SpeakerTranscript, turn: int, prop: int) -> tuple[str, list[Quote]]:
    """The proposal at line ``prop`` as the decision settled at ``turn``, and its evidence:
    the proposal's sentence and the settling one."""
    text = " ".join(x.strip() for x in _stated(t, prop) if len(content_words(x)) >= 2)
    return text, [quote(t, prop, best_sentence(t, prop, text)),
                  quote(t, turn, _settling_sentence(t, turn))]


def _settling_sentence(t: SpeakerTranscript, turn: int) -> str:
    sents = split_sentences(t.segments[turn].text) or [t.segments[turn].text]
    return next((x for x in sents if settles(x)), sents[0])


# A proposal a settling sentence points back to: a statement of this many words of its own.
PROPOSAL_WORDS = 3


def _proposal(t: SpeakerTranscript, turn: int, lo: int, own: str, names: set[str]
              ) -> int | None:
    """The line a settling sentence that only points back settles (``own``: the line from
    the settling sentence on): the latest line of the excerpt before it that states
    something (not questions, not "Fine by me.")."""
    if not _settles_in(t, turn) or not points_back(own, names):
        return None
    for i in range(turn - 1, lo - 1, -1):
        if any(len(content_words(x)) >= PROPOSAL_WORDS for x in _stated(t, i)):
            return i
    return None


def _stated(t: SpeakerTranscript, turn: int) -> list[str]:
    """A line's statements: its sentences that neither ask nor settle."""
    return [x for x in split_sentences(t.segments[turn].text)
            if x.strip() and not x.strip().endswith("?") and not settles(x)]


def _name_words(t: SpeakerTranscript) -> set[str]:
    return {w for s in t.speakers if s.name for w in content_words(s.name)}


def _says(text: str, said: str, names: set[str]) -> bool:
    """A wording of a decision that the lines support: a statement, not a question, sharing
    at least two of its words and enough of them (names aside: "Ibrahim agreed" or a bare
    "Agreed." is not what was decided)."""
    words = content_words(text) - names
    shared = words & content_words(said)
    return (not text.strip().endswith("?") and len(shared) >= 2
            and len(shared) / len(words) >= DECISION_SUPPORT)


def _settles_in(t: SpeakerTranscript, turn: int) -> bool:
    return any(settles(x) for x in split_sentences(t.segments[turn].text))


def settled_sentences(t: SpeakerTranscript, turn: int, most: int = 3) -> str:
    """The marked line as said, from its first sentence that sounds like settling it (all
    of it if none does), questions left out: the decision in the speaker's own words."""
    sents = split_sentences(t.segments[turn].text) or [t.segments[turn].text]
    start = next((i for i, x in enumerate(sents) if settles(x)), 0)
    # questions are left out ("Everyone happy?"), unless it is the settling sentence itself
    # ("We're deciding to delay it, does that work?" comes out of Whisper as one sentence)
    kept = [x.strip() for i, x in enumerate(sents[start:])
            if x.strip() and (not x.strip().endswith("?") or (i == 0 and settles(x)))]
    return " ".join(kept[:most])


def same_decision(a: str, b: str) -> bool:
    return overlap(a, b) >= SAME_DECISION or overlap(b, a) >= SAME_DECISION


# "The motion is carried, with one abstention": the outcome of the vote on the motion put a few
# lines before, not a second decision.
_CARRIED = re.compile(r"\b(?:motion|resolution|proposal)\s+(?:is\s+|was\s+|has\s+been\s+)?"
                      r"(?:carried|passed|adopted|approved)\b", re.I)
_MOTION = re.compile(r"\b(?:motion|resolution|proposal)\b", re.I)
VOTE_LINES = 8  # a motion and its result are this close


def carried_motion(kept: list[tuple[str, list[Quote]]], new: tuple[str, list[Quote]]
                   ) -> tuple[str, list[Quote]] | None:
    """The decision kept before whose motion ``new`` only says was carried, if any."""
    text, quotes = new
    if not _CARRIED.search(text) or not quotes:
        return None
    turn = min(q.turn for q in quotes)
    for k in reversed(kept):
        last = max((q.turn for q in k[1]), default=-1)
        if 0 <= turn - last <= VOTE_LINES and _MOTION.search(k[0]):
            return k
    return None
