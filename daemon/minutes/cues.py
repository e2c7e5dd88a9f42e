"""Sentences pointed out to the model where the group states a decision (English patterns:
they add recall; the model still decides what was decided, in any language)."""

from __future__ import annotations

import re

from daemon.names import display_label
from daemon.text import split_sentences
from daemon.types import SpeakerTranscript

_DECIDED = re.compile(
    r"(?<!are )(?<!did )(?<!have )(?<!should )(?<!do )"  # "are we deciding?" is a question
    r"\b(?:we(?:'re| are)? decid(?:e|ed|ing)|(?:it's|it is|that's) decided|we(?:'ve| have) "
    r"decided|we(?:'ll| will) go with|the decision is|we agree(?:d)? (?:to|that|on)|"
    r"we(?:'re| are) (?:going with|parking|dropping|sticking with)|let's go with|"
    r"(?:motion|resolution) (?:is )?(?:carried|passed|approved)|(?:that's|it's) settled|"
    r"agreed,? then)\b", re.I)


def decision_hints(t: SpeakerTranscript, limit: int = 20) -> list[str]:
    """Sentences where the group states a decision ("so we are deciding today that ..."):
    cues for the model, which writes the decisions."""
    out: list[str] = []
    for seg in t.segments:
        for sent in split_sentences(seg.text):
            if _DECIDED.search(sent):  # declarative forms only ("are we deciding?" is not)
                out.append(f"{display_label(t, seg.speaker)}: {sent}")
    return out[:limit]
