"""Where the group may be settling something (English patterns). They add recall: each place
is judged by the model (:mod:`daemon.minutes.decisions`), which also reads the whole
transcript for decisions in any language."""

from __future__ import annotations

import re

from daemon.minutes.evidence import content_words
from daemon.names import display_label
from daemon.text import split_sentences
from daemon.types import SpeakerTranscript

# The language of settling a question in a meeting, whatever it is about: a decision named
# ("that's decided", "the decision is"), agreement stated ("we're agreed", "agreed, then"),
# a formal vote ("all in favour", "the motion is carried"), a choice made ("let's go with",
# "we'll stick with", "here's what we'll do") or a call for consent ("everyone happy with
# that?"). Broad on purpose: what is only proposed or asked is told apart by the model.
_DECIDED = re.compile(
    r"(?<!are )(?<!did )(?<!have )(?<!should )(?<!do )(?<!to )"  # "are we deciding?" asks
    r"\b(?:"
    r"we(?:'ve| have|'re| are)? decid(?:e|ed|ing)\b|(?:that's|it's|is|was|been) decided\b|"
    r"the decision\b|"
    r"decisions?:|settled\b|(?:we're|we are|we|all|everyone(?:'s| is)?) agreed?\b|"
    r"agreed\b|that's the plan|(?:that's|that is) final|"
    r"(?:motion|resolution|proposal) (?:is |was )?(?:carried|passed|approved|adopted)|"
    r"(?:put|second) the motion|the motion is|all in favou?r|show of hands|unanimous|"
    r"let's (?:go with|go ahead|do (?:it|that|this)|make (?:the|a) (?:call|decision)|"
    r"stick with|settle on|keep it(?! (?:short|brief|quick|to\b)))|"
    r"we(?:'ll| will|'re going to| are going to) (?:go with|go ahead|stick with|keep|drop|"
    r"park|switch)|we(?:'re| are) (?:going with|parking|dropping|sticking with|not going)|"
    r"(?:here's|here is) what we(?:'ll| will)? do|"
    r"(?:everyone|everybody|all) (?:happy|okay|ok|fine|good|agree)|"
    r"(?:are|is) (?:we|everyone|everybody) (?:all )?(?:happy|okay|ok|fine|good) with)",
    re.I)


def settles(sentence: str) -> bool:
    """Whether a sentence sounds like the group settling something."""
    return bool(_DECIDED.search(sentence))


# Words a settling sentence is made of when it only points back ("Good, that's settled
# then.", "Agreed, let's do that.", "Everyone happy with that?"): what was settled is the
# proposal before it.
_POINTING = set(["good", "great", "fine", "okay", "right", "then", "that", "that's", "this", "it's", "well", "also", "just", "really", "sounds", "done", "perfect", "lovely", "excellent", "brilliant", "happy", "final", "plan", "settled", "agreed", "agree", "decided", "decision", "everyone", "everybody", "with", "them", "those", "these", "there"])


def points_back(text: str, names: set[str] = frozenset()) -> bool:
    """Whether what a settling sentence (and the rest of its line) says is nothing of what
    was settled (English, like the settling cues): fewer than two words of its own beyond
    the settling ones and ``names`` ("Good, that's settled then. Oliver, the cluster.")."""
    rest = _DECIDED.sub(" ", text)
    return len([w for w in re.findall(r"[\w'’]+", rest.lower())
                if len(w) >= 4 and w not in _POINTING and w not in names]) < 2


# A short reply that assents ("Thursday works.", "Fine by me.", "Yes, okay.", "Same here."):
# two or more of them from different people in a row are how a group agrees without saying
# "agreed" (English, like the settling cues; the model reads every language).
_ASSENT = re.compile(
    r"\b(?:yes|yeah|yep|yup|sure|okay|ok|fine|agreed?|works|good|great|happy|reasonable|fair|"
    r"no objections?|same here|me too|sounds|makes sense|i'm in|absolutely|definitely|"
    r"of course|perfect|deal|in favou?r|support)\b", re.I)
ASSENT_WORDS = 8  # a reply that assents is this short


def _assents(text: str) -> bool:
    sents = split_sentences(text)
    return (bool(sents) and not text.rstrip().endswith("?")
            and len(re.findall(r"[\w'’]+", text)) <= ASSENT_WORDS
            and bool(_ASSENT.search(sents[0])))


def consensus_turns(t: SpeakerTranscript) -> list[int]:
    """Where a group agreed by assenting in turn: for each run of two or more short assents
    from different people, the line after it if someone else restates what was proposed (a
    word of the proposal in common: "So the release code freeze is Thursday at noon"), else
    the proposal before it. The assents' words do not count: "Okay, good. Owen, volunteers."
    moves on, and the next line is a new topic."""
    segs, out, i = t.segments, [], 0
    while i < len(segs):
        j = i
        while j < len(segs) and _assents(segs[j].text):
            j += 1
        people = {segs[k].speaker for k in range(i, j)}
        if j - i >= 2 and len(people) >= 2 and i > 0:
            proposed = _topic_words(segs[i - 1].text)
            if j < len(segs) and segs[j].speaker not in people and proposed & _topic_words(
                    segs[j].text):
                out.append(j)
            elif not segs[i - 1].text.rstrip().endswith("?"):  # a question confirmed is a fact
                out.append(i - 1)
        i = max(j, i + 1)
    return out


_FUNCTION = set(["that", "this", "with", "have", "will", "what", "then", "there", "they",
                 "them", "from", "just", "okay", "yeah", "good", "fine", "works", "sure",
                 "agree", "agreed", "happy", "sounds", "also", "well", "really", "would",
                 "favour", "favor"])


def _topic_words(text: str) -> set[str]:
    return content_words(text) - _FUNCTION


def decision_turns(t: SpeakerTranscript) -> list[int]:
    """Segments where a sentence sounds like the group settling something, and where the
    group agreed by assenting in turn (:func:`consensus_turns`)."""
    said = [i for i, seg in enumerate(t.segments)
            if any(settles(s) for s in split_sentences(seg.text))]
    return sorted(set(said) | set(consensus_turns(t)))


def decision_hints(t: SpeakerTranscript, limit: int = 20) -> list[str]:
    """Sentences where the group states a decision ("so we are deciding today that ..."):
    cues for the model's draft."""
    out: list[str] = []
    for seg in t.segments:
        for sent in split_sentences(seg.text):
            if settles(sent):
                out.append(f"{display_label(t, seg.speaker)}: {sent}")
    return out[:limit]
