"""Give diarized speakers people's names, from how they address each other.

Evidence, read from the speaker-labelled transcript (no model needed, so it is the same
on every backend and easy to audit):

* **addressed, then answers** — "Kenji, how does it look?" / "..., does that work, Hannah?"
  at the start or end of a turn: the next speaker is probably that person (+2).
* **thanked on reply** — "Thanks, Maria." at the start of a turn: the previous speaker is
  probably that person (+2).
* **handed something** — "..., and send the draft to Olivia" in a reply: the person being
  answered is often the one named (+1).
* **answered** — "Wouldn't miss it, Gordon. ..." (a name closing a reply's first sentence):
  the previous speaker (+1; a one-sentence turn splits it with the next speaker).
* **given the floor** — a sentence that is only a name at the end of a turn ("Aaron
  Whitlock?", "Item three. Miss Grange."): the next speaker (+2).
* **self-introduction** — "I'm David" / "this is David" / "my name is David", or a turn
  opening with a full name and a role ("Frank Doyle, site manager.") or "Frank here" (+3).
* **mentioned** — people rarely say their own name: a speaker who mentions a name is
  probably not that person (-1 each time).

Names may be a full name of up to three words ("Mei Lin Chow") after a title ("Mister
Mehta", "Dr. Osei"); "Chair", "Madam" and the like are ways to address someone, not names.

Names come from the roster when one is configured (its full names are used in the output,
and ASR hints carry them); otherwise from capitalised words in vocative positions that are
not common words. Speakers and names are matched one-to-one by the best total score; a
speaker with no positive evidence stays unnamed (rendered "Speaker N"), so a name is never
guessed. With a roster, a single speaker and a single roster name left over are paired, and
a name Whisper spelled by its sound ("Jen" for Jun) counts for the one roster name it sounds
like, when the transcript writes it as a name inside a sentence. Without one, a surname
said alone takes the first name said with it elsewhere ("Mehta": "Mister Rohan Mehta").

**Voice** (:mod:`daemon.voices`): a speaker whose voice matched an enrolled person (above
the calibrated threshold, by a margin over the runner-up) gets that name as evidence worth
``VOICE_WEIGHT``, more than the words of a whole meeting usually add up to, in the same
one-to-one assignment: a strong voice match outweighs a guess from the words, and words
still name the speakers nobody enrolled. Spoken first names ("Clara") of voice-matched people
count for their full names.

Each named speaker carries its evidence (``Speaker.evidence``: kind "voice" with the
similarity and profile, "words" with what was said, "roster" for the one speaker and roster name left) and a
``confidence`` in 0..1.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field

from daemon.text import split_sentences
from daemon.types import Evidence, SpeakerTranscript, VoiceMatch

VOICE_WEIGHT = 10.0

# Capitalised words that open sentences or turns and are not names.
NOT_NAMES = set(["a", "about", "actually", "after", "again", "ah", "alright", "also", "although", "an", "and", "anyway", "anything", "april", "are", "as", "at", "august", "but", "by", "can", "could", "december", "did", "do", "does", "don't", "everyone", "everybody", "excellent", "fantastic", "february", "fine", "first", "folks", "for", "friday", "from", "good", "got", "great", "guys", "hello", "hey", "hi", "how", "i", "i'd", "i'll", "i'm", "i've", "if", "in", "is", "it", "it's", "january", "july", "june", "just", "let", "let's", "like", "march", "may", "maybe", "me", "mhm", "monday", "morning", "my", "next", "no", "nobody", "not", "november", "now", "october", "oh", "ok", "okay", "on", "one", "or", "our", "perfect", "please", "quick", "really", "right", "saturday", "see", "september", "she", "should", "so", "sorry", "sounds", "sunday", "sure", "team", "thank", "thanks", "that", "that's", "the", "then", "there", "they", "this", "thursday", "today", "tomorrow", "tuesday", "um", "uh", "understood", "very", "wait", "we", "we'll", "we're", "wednesday", "well", "what", "when", "where", "which", "who", "why", "will", "with", "wow", "yeah", "yes", "yesterday", "you", "you're", "your", "all", "both", "any", "each", "either", "every", "few", "many", "most", "much", "neither", "none", "several", "some", "such", "here", "everything", "nothing", "something", "because", "since", "until", "while", "same", "other", "another", "agreed", "indeed", "absolutely", "exactly", "definitely", "certainly", "correct", "true", "cool", "nice", "lovely", "awesome",
                 # ways to address someone that are not their name
                 "chair", "chairman", "chairwoman", "chairperson", "sir", "madam", "ma'am", "mister", "miss", "doctor", "professor", "boss", "mate", "dear", "love", "ladies", "gentlemen", "colleagues", "friends", "trustees", "members", "noted"])

_WORD = r"[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?"
# A name as it is said to someone: a first name, or a full name of up to three words, after an
# optional title ("Mister Mehta", "Dr. Osei", "Miss Philippa Grange").
_TITLE = r"(?:(?:Mr|Mrs|Ms|Mx|Dr|Prof|Mister|Missus|Miss|Madam|Doctor|Professor)\.?\s+)"
_NAME = rf"{_TITLE}?({_WORD}(?:\s+{_WORD}){{0,2}})"
_ADDRESS_START = re.compile(rf"^(?:(?i:ok(?:ay)?|so|and|right|great|good|well|now|then|yes|thanks)[,.]?\s+)?{_NAME}\s*,\s*\w")
# "..., David, can you collect the quotes?" / "That's a risk, Sam, you'd want a load test":
# a name set off by commas inside a sentence and followed by a request or by "you".
_ADDRESS_MID = re.compile(
    rf"[,;:]\s*{_NAME}\s*,\s*(?:(?:can|could|would|will) you|please|I want|I need|you)\b")
_ADDRESS_END = re.compile(rf",\s*{_NAME}\s*[?.!]*$")
# "Aaron Whitlock?" / "Item two. Mister Adeyemi.": a sentence that is only a name hands the
# floor to that person.
_BARE = re.compile(rf"^{_NAME}\s*[?.!]*$")
_SHORT_FLOOR = re.compile(rf"^{_TITLE}?({_WORD})(?:\s+[\w'-]+){{1,2}}\s*[?.!]$")
# "Frank Doyle, site manager." / "Frank here.": a turn opening with the speaker's own name.
_OWN_NAME_FIRST = re.compile(rf"^(?:(?i:hi|hello|yes|morning|evening)[,.]?\s+)?{_NAME}"
                             rf"(?:\s*,\s*(?P<role>[^?]*)|\s+(?i:here)\b[^?]*)$")
_THANKS = re.compile(rf"^(?i:thanks|thank you|cheers)\s*,?\s+{_NAME}")
# "I'm David" introduces; "I am David and Priya" (ASR for "I have ...") does not.
_HANDED_TO = re.compile(
    rf"\b(?:send|give|show|forward|pass|email|bring|hand)\b[^.?!]{{0,40}}?\bto ({_WORD})\b(?!')")
_SELF = re.compile(rf"\b(?:I'm|I am|this is|my name is)\s+({_WORD})\b(?!\s+and\b|'s)")
# A trailing name in a statement answers the person just heard ("Wouldn't miss it, Gordon",
# "They can come in July, Laura"), unless the sentence hands over ("Over to you, Sam").
_HANDS_OVER = re.compile(r"\b(?:you|your|go ahead|over to)\b", re.I)


# "Priya, this is Martin Kowalski, he runs operations": introducing someone to someone.
_VOCATIVE_BEFORE = re.compile(rf"\b({_WORD})\s*,\s*$")
_THIRD_PERSON_AFTER = re.compile(r"^(?:\s+[A-Z][a-z]+)?\s*,?\s*(?:he|she|they|who|our|my)\b", re.I)


def _introduces_another(text: str, m: re.Match[str]) -> bool:
    """"this is X" said to someone named just before it, or followed by "he ..."/"who ...":
    the speaker introduces X to others, not themself (as "Hi, this is X" on a call does)."""
    before = _VOCATIVE_BEFORE.search(text[:m.start()])
    if before and before.group(1).lower() not in NOT_NAMES:
        return True
    return bool(_THIRD_PERSON_AFTER.match(text[m.end():]))


@dataclass
class NameEvidence:
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # speaker -> name -> score
    reasons: list[str] = field(default_factory=list)
    items: list[tuple[str, str, float, str]] = field(default_factory=list)  # spk, name, score, why

    def add(self, speaker: str, name: str, score: float, why: str) -> None:
        self.scores.setdefault(speaker, {})
        self.scores[speaker][name] = self.scores[speaker].get(name, 0.0) + score
        self.reasons.append(f"{speaker} {'+' if score > 0 else ''}{score:g} {name}: {why}")
        self.items.append((speaker, name, score, why))

    def rename(self, old: str, new: str) -> None:
        for d in self.scores.values():
            if old in d:
                d[new] = d.get(new, 0.0) + d.pop(old)
        self.items = [(s, new if n == old else n, v, w) for s, n, v, w in self.items]


def _canon(token: str, roster: list[str], sound: bool = False) -> str | None:
    """Map a spoken name to a roster entry (first name, surname or full name), or to itself
    when there is no roster and it is a plausible name. ``sound``: a name said to someone may
    also be one roster name spelled by its sound ("Jen" for Jun, "Zeneb" for Zainab)."""
    token = re.sub(r"'s$", "", token.strip(" ,.?!'\""))
    t = token.lower()
    if not t or t in NOT_NAMES:
        return None
    if roster:
        for full in roster:
            parts = [p.lower() for p in full.split()]
            if t == full.lower() or t in parts:
                return full
        # A short form of one roster name only: "Sam" for Samuel, "Ken" for Kenji.
        short = [full for full in roster
                 if len(t) >= 3 and any(p.lower().startswith(t) for p in full.split())]
        if len(short) == 1:
            return short[0]
        if short:
            return None
        return _heard_as(t, roster) or (_sounds_as(t, roster) if sound else None)
    return token.capitalize()


# How alike a spoken word and a roster name must be to be taken as that name misheard
# ("Range" for Grange, "Reed" for Reid, "Linvist" for Lindqvist: Whisper spells names it does
# not know by their sound). difflib's ratio; only words of 4+ letters, one roster name only.
HEARD_AS = 0.8


def _heard_as(t: str, roster: list[str]) -> str | None:
    if len(t) < 4:
        return None
    hits = {full for full in roster for p in full.split()
            if len(p) >= 4 and difflib.SequenceMatcher(None, t, p.lower()).ratio() >= HEARD_AS}
    return next(iter(hits)) if len(hits) == 1 else None


def _sound(word: str) -> str:
    """A name's consonants as they sound (a rough metaphone): "Jun", "Jen", "Gen" and "John"
    are all "jn"; "Zainab" and "Zeneb" "snb"; "Thomas" and "Tomasz" "tms"."""
    w = re.sub(r"[^a-z]", "", word.lower())
    for a, b in (("sch", "sk"), ("ph", "f"), ("th", "t"), ("ck", "k"), ("sz", "s"),
                 ("dg", "j"), ("q", "k"), ("x", "ks"), ("z", "s")):
        w = w.replace(a, b)
    w = re.sub(r"c(?=[eiy])", "s", w).replace("c", "k")
    w = re.sub(r"g(?=[eiy])", "j", w)
    head, rest = w[:1], w[1:]
    key = ("" if head in "aeiouy" else head) + re.sub(r"[aeiouywh]", "", rest)
    return re.sub(r"(.)\1+", r"\1", key)


def _sounds_as(t: str, roster: list[str]) -> str | None:
    """The one roster name whose first name or surname sounds like ``t`` (3+ letters, two or
    more consonants, about as long), else None."""
    key = _sound(t)
    if len(t) < 3 or len(key) < 2:
        return None
    hits = {full for full in roster for p in full.split()
            if abs(len(p) - len(t)) <= 2 and _sound(p) == key}
    return next(iter(hits)) if len(hits) == 1 else None


def _clock(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _canon_run(run: str, roster: list[str], proper: set[str] | None = None) -> str | None:
    """Like :func:`_canon` for a name of one to three words ("Mei Lin Chow", "Aaron
    Whitlock"): the roster entry its words point at (all of them at the same one), or without
    a roster the words as said, leading common words dropped. A word of ``proper`` (one the
    transcript writes as a name inside a sentence) may match a roster name by its sound."""
    words = run.split()
    proper = proper or set()
    if len(words) == 1:
        return _canon(run, roster, run in proper)
    if roster:
        for full in roster:
            if full.lower() == " ".join(words).lower():
                return full
        hits = {_canon(w, roster, w in proper) for w in words if w.lower() not in NOT_NAMES}
        return next(iter(hits)) if len(hits) == 1 and None not in hits else None
    while words and words[0].lower() in NOT_NAMES:
        words.pop(0)
    if not words:
        return None
    if any(w.lower() in NOT_NAMES for w in words):
        return _canon(words[0], roster)
    return " ".join(words)


def _states_own_name(m: re.Match[str]) -> bool:
    """"Frank Doyle, site manager" (a full name, then a short role) or "Frank here": not
    "Victor Adeyemi, our treasurer, will present" or "Mei Lin Chow, do you want to start"."""
    role = m.group("role")
    if any(w.lower() in NOT_NAMES for w in m.group(1).split()):
        return False  # "Thanks Martin, talk soon"
    if role is None:  # "Frank here"
        return True
    if len(m.group(1).split()) < 2:
        return False
    first = re.split(r"[,.;]", role)[0]
    return (0 < len(first.split()) <= 5
            and not re.search(r"\b(?:you|your|he|she|they|our|his|her|their|will|is|has|can|"
                              r"could|would|please)\b", first, re.I))


def _proper_nouns(t: SpeakerTranscript) -> set[str]:
    """Capitalised words said inside a sentence somewhere in the meeting (not its first word):
    what a transcript writes as a name."""
    out: set[str] = set()
    for seg in t.segments:
        for sent in split_sentences(seg.text):
            for w in re.findall(rf"(?<=[\w,;:] )({_WORD})", sent):
                if w.lower() not in NOT_NAMES:
                    out.add(w)
    return out


def gather_evidence(t: SpeakerTranscript, roster: list[str]) -> NameEvidence:
    ev = NameEvidence()
    segs = t.segments
    proper = _proper_nouns(t)
    for i, seg in enumerate(segs):
        prev_spk = next((s.speaker for s in reversed(segs[:i]) if s.speaker != seg.speaker), None)
        next_spk = next((s.speaker for s in segs[i + 1:] if s.speaker != seg.speaker), None)
        sents = split_sentences(seg.text)
        if not sents:
            continue
        at = _clock(seg.start)
        # Thanks at the start of a turn: the previous speaker.
        m = _THANKS.match(sents[0])
        if m and prev_spk and (name := _canon_run(m.group(1), roster, proper)):
            ev.add(prev_spk, name, 2.0, f"thanked by {seg.speaker} at {at}: {sents[0][:60]!r}")
        # "Frank Doyle, site manager." / "Frank here.": the speaker's own name first.
        m = _OWN_NAME_FIRST.match(sents[0])
        own_first = bool(m and _states_own_name(m) and (name := _canon_run(m.group(1), roster, proper)))
        if own_first:
            ev.add(seg.speaker, name, 3.0, f"introduces self at {at}: {sents[0][:60]!r}")
        # A name addressed in the turn's sentences: a question or request, or the floor handed
        # over at the end of the turn, expects an answer from the next speaker; a name at the
        # end of a statement answers the previous one.
        for k, sent in enumerate(sents):
            if k == 0 and (own_first or _THANKS.match(sent)):
                continue
            last = k >= len(sents) - 2
            question = sent.rstrip().endswith("?")
            request = re.search(r"\b(can you|could you|would you|will you|please)\b", sent, re.I)
            bare = _BARE.match(sent)
            if bare and last and next_spk and (name := _canon_run(bare.group(1), roster)) \
                    and (roster or name.split()[0] in proper):
                ev.add(next_spk, name, 2.0, f"given the floor by {seg.speaker} at {at}: "
                                            f"{sent[:60]!r}")
                continue
            # "Aaron with lock." (Whisper's "Aaron Whitlock?"): a roster name opening the very
            # last, very short sentence of a turn probably hands over too (+1)
            short = _SHORT_FLOOR.match(sent)
            if (roster and short and k == len(sents) - 1 and next_spk
                    and (name := _canon(short.group(1), roster))):
                ev.add(next_spk, name, 1.0, f"given the floor by {seg.speaker} at {at}: "
                                            f"{sent[:60]!r}")
                continue
            for rx in (_ADDRESS_START, _ADDRESS_MID, _ADDRESS_END):
                m2 = rx.search(sent)
                if not m2 or not (name := _canon_run(m2.group(1), roster, proper)):
                    continue
                if (rx is _ADDRESS_END and not (question or request)
                        and not _HANDS_OVER.search(sent)):
                    # "Wouldn't miss it, Gordon. ...": a reply opens with the name of the
                    # one answered; "Third thing, the phones, Tomasz." at the end of a turn
                    # hands over; a one-sentence turn may be either.
                    if len(sents) == 1:
                        to = [(prev_spk, "answered"), (next_spk, "addressed")]
                    elif k == 0:
                        to = [(prev_spk, "answered")]
                    elif k == len(sents) - 1:
                        to = [(next_spk, "addressed")]
                    else:
                        to = []
                    to = [(spk, how) for spk, how in to if spk]
                    for spk, how in to:
                        ev.add(spk, name, 1.0 / len(to),
                               f"{how} by {seg.speaker} at {at}: {sent[:60]!r}")
                    continue
                # A question at the end of a turn is answered by the person asked; a request
                # ("X, please ...") often is not answered at once.
                if next_spk and (last or question or request):
                    score = 2.0 if (last and question) else 1.0
                    ev.add(next_spk, name, score, f"addressed by {seg.speaker} at {at}: {sent[:60]!r}")
        # "I'll send the draft to Olivia" in a reply: often said to the person being answered.
        for m4 in _HANDED_TO.finditer(seg.text):
            if prev_spk and (name := _canon(m4.group(1), roster)):
                ev.add(prev_spk, name, 1.0,
                       f"handed something by {seg.speaker} at {at}: {m4.group(0)!r}")
        for m3 in _SELF.finditer(seg.text):
            if m3.group(0).lower().startswith("this is") and _introduces_another(seg.text, m3):
                continue
            if name := _canon(m3.group(1), roster):
                ev.add(seg.speaker, name, 3.0, f"introduces self at {at}: {m3.group(0)!r}")
        # Mentioned names: probably not the speaker.
        mentioned = {c for w in re.findall(_WORD, seg.text) if (c := _canon(w, roster))}
        for name in mentioned:
            ev.add(seg.speaker, name, -1.0, "mentions this name")
    return ev


def _unify_short_forms(ev: NameEvidence) -> None:
    """'Sam' and 'Samuel' in one meeting are one person: fold the short form into the long."""
    names = {n for d in ev.scores.values() for n in d}
    for short in names:
        longer = [n for n in names
                  if len(short) >= 3 and len(n) >= len(short) + 2 and n.startswith(short)]
        if len(longer) == 1:
            ev.rename(short, longer[0])
            ev.reasons.append(f"{short} read as {longer[0]}")


def _fold_into_people(ev: NameEvidence, people: list[str]) -> None:
    """A spoken first name or surname of exactly one of ``people`` counts for that person."""
    for name in {n for d in ev.scores.values() for n in d}:
        if name in people:
            continue
        t = name.lower()
        hits = [p for p in people if t in [w.lower() for w in p.split()]]
        if len(hits) == 1:
            ev.rename(name, hits[0])
            ev.reasons.append(f"{name} read as {hits[0]}")


def assign_names(
    t: SpeakerTranscript, roster: list[str] | None = None,
    voices: dict[str, VoiceMatch] | None = None,
) -> tuple[dict[str, str], NameEvidence]:
    """Return ``{speaker_id: name}`` for the speakers with enough evidence, and the evidence.
    ``voices``: speakers recognised by voice (their matches weigh ``VOICE_WEIGHT``)."""
    roster = [r.strip() for r in (roster or []) if r.strip()]
    ev = gather_evidence(t, roster)
    if not roster:
        _unify_short_forms(ev)
    if voices:
        _fold_into_people(ev, sorted({m.name for m in voices.values()}))
        for spk, m in voices.items():
            ev.add(spk, m.name, VOICE_WEIGHT,
                   f"voice: similarity {m.similarity:.3f} to the enrolled {m.name}")
    speakers = [s.id for s in t.speakers]
    names = sorted({n for d in ev.scores.values() for n, v in d.items() if v > 0})
    best: dict[str, str] = {}
    best_total = 0.0
    # One-to-one assignment maximising the total positive score (meetings are small; fall
    # back to greedy beyond 8 x 8).
    if len(speakers) <= 8 and len(names) <= 8:
        options = names + [None] * len(speakers)
        for perm in itertools.permutations(options, len(speakers)):
            total, cur = 0.0, {}
            for spk, name in zip(speakers, perm, strict=True):
                if name is None:
                    continue
                v = ev.scores.get(spk, {}).get(name, 0.0)
                if v <= 0:
                    break
                total += v
                cur[spk] = name
            else:
                if total > best_total:
                    best_total, best = total, cur
    else:
        pairs = sorted(((v, s, n) for s, d in ev.scores.items() for n, v in d.items() if v > 0),
                       reverse=True)
        for _v, s, n in pairs:
            if s not in best and n not in best.values():
                best[s] = n
    # Elimination: one speaker and one name left over (from the roster, or else among the
    # names people were addressed by) pair up, unless that speaker said the name themself.
    pool = roster or names
    left_spk = [s for s in speakers if s not in best]
    left_names = [n for n in pool if n not in best.values()]
    if (len(left_spk) == 1 and len(left_names) == 1
            and ev.scores.get(left_spk[0], {}).get(left_names[0], 0.0) >= 0):
        best[left_spk[0]] = left_names[0]
        ev.reasons.append(f"{left_spk[0]} = {left_names[0]}: the one name left")
    if not roster:
        for spk, name in list(best.items()):
            full = full_name(t, name)
            if full != name and full not in best.values():
                best[spk] = full
                ev.rename(name, full)
                ev.reasons.append(f"{name} is {full}: the full name said in the meeting")
    return best, ev


def full_name(t: SpeakerTranscript, name: str) -> str:
    """``name`` with the surname said with it in the meeting ("I'm Laura Bennett", "this is
    Martin Kowalski"), when one surname is said with it, or a surname with the first name said
    before it ("Mehta": "Mister Rohan Mehta"); else ``name`` as it is."""
    if " " in name:
        return name
    found: dict[str, int] = {}
    rx = re.compile(rf"\b{re.escape(name)}\s+({_WORD})\b")
    for seg in t.segments:
        for m in rx.finditer(seg.text):
            sur = m.group(1)
            if sur.lower() not in NOT_NAMES:
                found[sur] = found.get(sur, 0) + 1
    if len(found) == 1:
        return f"{name} {next(iter(found))}"
    if found:
        return name
    # a surname said alone ("Thank you, Mister Mehta"), its first name said before it
    # somewhere inside a sentence ("our trustee, Mister Rohan Mehta")
    rx = re.compile(rf"(?<=[\w,;:] )({_WORD})\s+{re.escape(name)}\b")
    for seg in t.segments:
        for m in rx.finditer(seg.text):
            first = m.group(1)
            if first.lower() not in NOT_NAMES and not re.fullmatch(_TITLE, first + " "):
                found[first] = found.get(first, 0) + 1
    return f"{next(iter(found))} {name}" if len(found) == 1 else name


def apply_names(t: SpeakerTranscript, names: dict[str, str], ev: NameEvidence | None = None,
                voices: dict[str, VoiceMatch] | None = None) -> None:
    """Set each speaker's name, and (given the evidence) what it rests on and how sure."""
    voices = voices or {}
    for s in t.speakers:
        s.name = names.get(s.id)
        if ev is None:
            continue
        s.evidence, s.confidence = [], None
        if s.name is None:
            continue
        m = voices.get(s.id)
        if m is not None and m.name == s.name:
            s.evidence.append(Evidence("voice", m.name, similarity=m.similarity,
                                       profile=m.name, detail=f"model {m.model_id}"))
        words = 0.0
        for spk, name, score, why in ev.items:
            if spk == s.id and name == s.name and not why.startswith("voice:"):
                s.evidence.append(Evidence("words", name, score=score, detail=why))
                words += score
        if m is not None and m.name == s.name:
            s.confidence = m.confidence if m.confidence is not None else 0.5
        elif words > 0:
            s.confidence = round(words / (words + 2.0), 3)  # +2: 0.5, +4: 0.67, +6: 0.75
        else:  # the one name left over
            s.evidence.append(Evidence("roster", s.name, detail="the one roster name left "
                                       "for the one speaker without a name"))
            s.confidence = 0.4


def display_label(t: SpeakerTranscript, speaker_id: str) -> str:
    """The name if known, else "Speaker N" (1-based, in order of first speech)."""
    for i, s in enumerate(t.speakers):
        if s.id == speaker_id:
            return s.name or f"Speaker {i + 1}"
    return speaker_id
