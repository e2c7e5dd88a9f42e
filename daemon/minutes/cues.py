"""Sentences pointed out to the model: where someone takes on a task, where the group states
a decision; and the transcript as the model reads it."""

from __future__ import annotations

import re

from daemon.names import display_label
from daemon.render import hms
from daemon.text import split_sentences
from daemon.types import SpeakerTranscript

_SELF_COMMIT = re.compile(r"\bI(?:'ll| will| am going to|'m going to)\s+(.{6,})", re.I)
_ASKED = re.compile(
    r"^(?:\w+,\s+)?([A-Z][a-z]+),\s+(?:(?:can|could|would|will) you|please|I want|I need|you)\b\s*(.{6,})")


def commitment_hints(t: SpeakerTranscript) -> list[str]:
    """Sentences where someone takes on a task ("I'll ...") or is asked to ("David, can you
    ..."), with the person: cues for the model, which still decides what is a task."""
    hints: list[str] = []
    for seg in t.segments:
        who = display_label(t, seg.speaker)
        for sent in split_sentences(seg.text):
            if m := _ASKED.match(sent):
                hints.append(f"{m.group(1)} (asked by {who}): {sent}")
            elif _SELF_COMMIT.search(sent) and not sent.rstrip().endswith("?"):
                hints.append(f"{who}: {sent}")
    return hints


_DECIDED = re.compile(
    r"(?<!are )(?<!did )(?<!have )(?<!should )(?<!do )"  # "are we deciding?" is a question
    r"\b(?:we(?:'re| are)? decid(?:e|ed|ing)|(?:it's|it is|that's) decided|we(?:'ve| have) "
    r"decided|we(?:'ll| will) go with|the decision is|we agree(?:d)? (?:to|that|on))\b", re.I)


def decision_hints(t: SpeakerTranscript, limit: int = 20) -> list[str]:
    """Sentences where the group states a decision ("so we are deciding today that ..."):
    cues for the model, which writes the decisions."""
    out: list[str] = []
    for seg in t.segments:
        for sent in split_sentences(seg.text):
            if _DECIDED.search(sent):  # declarative forms only ("are we deciding?" is not)
                out.append(f"{display_label(t, seg.speaker)}: {sent}")
    return out[:limit]


def transcript_lines(t: SpeakerTranscript) -> list[str]:
    return [f"[{hms(s.start)}] {display_label(t, s.speaker)}: {s.text}" for s in t.segments]
