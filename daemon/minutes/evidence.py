"""Evidence: the sentences an action item or a decision rests on, and the check that they
are really in the transcript, said by whom the minutes say.

An item's evidence is a list of :class:`~daemon.types.Quote`: a sentence of one transcript
segment (its index, time, speaker). The rules :func:`check_minutes` enforces on every
minutes.json (the bench runs it on every meeting, a test on real model output):

* every action item and decision has at least one quote;
* each quote's segment exists, its speaker is the segment's, and its words are the
  segment's words (whitespace and case aside);
* the owner of an action item said one of its quoted sentences (the one who took the task
  on, or who was asked and accepted), unless the item is marked ``weak`` (then the minutes
  say plainly that it needs checking).
"""

from __future__ import annotations

import re

from daemon.text import split_sentences
from daemon.types import Quote, SpeakerTranscript

_WORD = re.compile(r"\w+", re.UNICODE)


def norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def content_words(text: str) -> set[str]:
    """Words of four letters or more, in any script: a crude, language-neutral view of what
    a sentence is about (for matching a model's phrasing back to what was said)."""
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 4 and not w.isdigit()} | {
        w for w in _WORD.findall(text) if w.isdigit()}


def overlap(a: str, b: str) -> float:
    """Share of ``a``'s content words that ``b`` has too (0 when ``a`` has none)."""
    wa, wb = content_words(a), content_words(b)
    return len(wa & wb) / len(wa) if wa else 0.0


def quote(t: SpeakerTranscript, turn: int, sentence: str | None = None) -> Quote:
    """A quote of segment ``turn``: ``sentence`` (one of its sentences) or the whole text."""
    seg = t.segments[turn]
    name = next((s.name for s in t.speakers if s.id == seg.speaker and s.name), None)
    return Quote(turn=turn, start=seg.start, speaker=seg.speaker,
                 text=(sentence or seg.text).strip(), name=name)


def best_sentence(t: SpeakerTranscript, turn: int, about: str) -> str:
    """The sentence of segment ``turn`` that shares most words with ``about``."""
    sents = split_sentences(t.segments[turn].text) or [t.segments[turn].text]
    return max(sents, key=lambda s: (overlap(about, s), -sents.index(s)))


# --------------------------------------------------------------------------- the check


def _owner_said(owner: str, quotes: list[dict], names: dict[str, str | None]) -> bool:
    o = owner.strip().lower()
    for q in quotes:
        sid = q.get("speaker", "")
        name = names.get(sid) or ""
        if o and o in (name.lower(), sid.lower()):
            return True
        if o.startswith("speaker ") and names.get(sid) is None:  # "Speaker 2" labels
            return True
    return False


def check_quotes(quotes: list[dict], transcript: dict) -> list[str]:
    """What is wrong with these quotes against ``transcript`` (transcript.json as a dict)."""
    segs = transcript.get("segments", [])
    wrong: list[str] = []
    if not quotes:
        return ["no evidence"]
    for q in quotes:
        turn = q.get("turn")
        if not isinstance(turn, int) or not 0 <= turn < len(segs):
            wrong.append(f"quote points at segment {turn!r}, which does not exist")
            continue
        seg = segs[turn]
        if q.get("speaker") != seg.get("speaker"):
            wrong.append(f"segment {turn} was said by {seg.get('speaker')}, not {q.get('speaker')}")
        if not norm(q.get("text", "")) or norm(q.get("text", "")) not in norm(seg.get("text", "")):
            wrong.append(f"segment {turn} does not say {q.get('text', '')!r}")
    return wrong


def check_minutes(minutes: dict, transcript: dict) -> list[dict]:
    """Every problem with the evidence of ``minutes`` (minutes.json as a dict) against
    ``transcript``: ``[{"item": "action 2", "problem": "..."}]``; empty when all checks out."""
    names = {s["id"]: s.get("name") for s in transcript.get("speakers", [])}
    problems: list[dict] = []
    for i, a in enumerate(minutes.get("action_items", []), 1):
        quotes = a.get("evidence", [])
        for w in check_quotes(quotes, transcript):
            problems.append({"item": f"action {i}", "problem": w})
        if quotes and not a.get("weak") and a.get("owner") != "unassigned" and not _owner_said(
                a.get("owner", ""), quotes, names):
            problems.append({"item": f"action {i}",
                             "problem": f"the owner {a.get('owner')!r} said none of its evidence"})
    decisions = minutes.get("decisions", [])
    evidence = minutes.get("decision_evidence", [])
    for i, _d in enumerate(decisions, 1):
        quotes = evidence[i - 1] if i - 1 < len(evidence) else []
        for w in check_quotes(quotes, transcript):
            problems.append({"item": f"decision {i}", "problem": w})
    return problems
