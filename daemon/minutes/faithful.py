"""The faithfulness check: names and numbers in the minutes that nobody said.

A language model writing minutes can invent: a city, a person, a sum, a date. This check
reads what the minutes say (title, summary, discussion points or topics, decisions, action
items' tasks and dues) for the two kinds of word that are easy to invent and costly to get
wrong, and looks each one up in what the meeting really contained (the transcript's text,
the speakers' names and labels, the attendees):

* **names**: capitalised words that do not start a sentence ("moved to Leeds"), and
  capitalised words that start a multiword name ("Priya Shah agreed"). A capitalised word
  the minutes also use in lower case is an ordinary word, not a name; so are the words of a
  title written in Title Case. In a language that capitalises its nouns (German), measured
  on the transcript itself (over :data:`NOUN_CASE_SHARE` of the words inside sentences
  capitalised), only multiword names count. Scripts without case (Chinese, Japanese, ...)
  are checked for numbers only.
* **numbers**: digits ("12", "1,200", "3.5", "20%", "$400", "400 pounds"), ordinals ("3rd"),
  times ("2pm", "2:30", "14:30" == "2:30 pm") and the English number words (one..twenty,
  the tens, hundred, thousand, and their ordinals: "twelve" == "12", "four hundred" ==
  "400", "third" == "3rd"), compared by value both ways. "one", "first" and "second" in the
  minutes are not checked (in English they are as often pronouns or adverbs as numbers).

Matching is case-insensitive and tolerant of possessives and plurals ("Priya's", "vans").
One :class:`~daemon.types.QualityFlag` per unsupported word (consecutive unsupported words of
one name together), saying where the minutes use it::

    summary, action 2: 'Leeds' is not in the transcript

Words are Unicode ``\\w`` throughout; the only English-specific part is the number words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from daemon.names import display_label
from daemon.types import Minutes, QualityFlag, SpeakerTranscript

KIND = "not in transcript"

# Share of in-sentence words capitalised above which a language capitalises nouns: English
# transcripts of the eval kit measure 2-6 % (names and "I" excluded), German prose 25-35 %.
NOUN_CASE_SHARE = 0.15

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
          "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
          "seventeen", "eighteen", "nineteen", "twenty"]
_TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_ORDINALS = ["zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh",
             "eighth", "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth",
             "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth", "twentieth"]
NUMBER_WORDS: dict[str, int] = {w: i for i, w in enumerate(_UNITS)}
NUMBER_WORDS.update(_TENS)
NUMBER_WORDS.update({w: i for i, w in enumerate(_ORDINALS)})
NUMBER_WORDS.update({"thirtieth": 30, "fortieth": 40, "fiftieth": 50, "hundredth": 100,
                     "thousandth": 1000})
_SCALES = {"hundred": 100, "thousand": 1000, "hundredth": 100, "thousandth": 1000}
# Number words too often not numbers to be checked in the minutes (still support numbers).
_LOOSE = {"one", "first", "second", "zero"}

# A token: a number (with its currency sign, ordinal/time/percent suffix) or a word.
_TOKEN = re.compile(
    r"(?P<num>[$£€¥]?\d+(?:[.,:]\d+)*(?:st|nd|rd|th|am|pm|k|s|%)?(?!\w))"
    r"|(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)*)"
    r"|(?P<stop>[.?!:;()\[\]\"“”\n•])",
    re.UNICODE | re.IGNORECASE)
_TIME_SUFFIX = re.compile(r"^(a\.?m\.?|p\.?m\.?|o['’]clock)$", re.IGNORECASE)


@dataclass
class _Tok:
    kind: str  # "num", "word", "stop"
    text: str
    start: int
    initial: bool = False  # the first word of a sentence (or of a field)


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    initial = True
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "stop"
        if kind == "stop":
            initial = True
            out.append(_Tok("stop", m.group(), m.start()))
            continue
        out.append(_Tok(kind, m.group(), m.start(), initial))
        initial = False
    return out


# --------------------------------------------------------------------------- numbers


def _canon(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _digit_values(tok: str, following: str = "") -> set[str]:
    """Values of a digit token: "1,200" -> 1200, "3rd" -> 3, "2pm" -> 2 and 2:00, "14:30"
    -> 2:30 (times compared on a 12-hour clock), "$400" -> 400."""
    s = tok.lstrip("$£€¥").lower()
    suffix = re.search(r"(st|nd|rd|th|am|pm|k|s|%)$", s)
    suf = suffix.group(1) if suffix else ""
    if suf:
        s = s[: -len(suf)]
    if ":" in s:
        parts = s.split(":")
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            h, mm = int(parts[0]), int(parts[1])
            vals = {f"{h % 12 or 12}:{mm:02d}"}
            if mm == 0:
                vals.add(str(h % 12 or 12))
            return vals
        return {s}
    if re.fullmatch(r"\d{1,3}(,\d{3})+", s):
        s = s.replace(",", "")
    s = s.replace(",", ".") if re.fullmatch(r"\d+,\d{1,2}", s) else s  # 3,5 (decimal comma)
    try:
        v = float(s)
    except ValueError:
        return {s}
    if suf == "k":
        v *= 1000
    vals = {_canon(v)}
    if suf in ("am", "pm") or _TIME_SUFFIX.match(following or ""):
        h = int(v) if v.is_integer() else None
        if h is not None:
            vals |= {str(h % 12 or 12), f"{h % 12 or 12}:00"}
    return vals


def _word_number(words: list[str]) -> int | None:
    """The value of consecutive English number words ("four hundred and twelve")."""
    total, cur, seen = 0, 0, False
    for w in words:
        if w == "and":
            continue
        if w in _SCALES:
            cur = max(cur, 1) * _SCALES[w]
            if _SCALES[w] >= 1000:
                total, cur = total + cur, 0
        elif w in NUMBER_WORDS:
            cur += NUMBER_WORDS[w]
        else:
            return None
        seen = True
    return total + cur if seen else None


@dataclass
class _Found:
    kind: str  # "name" | "number"
    key: str  # what is looked up: a lower-case word, or a number's value
    shown: str  # as the minutes write it
    keys: tuple[str, ...] = ()  # every value it could mean (numbers)


def _numbers(toks: list[_Tok], text: str, check: bool) -> Iterable[_Found]:
    """The numbers in ``toks``: digits and runs of number words. ``check``: the minutes'
    side (loose words like "one" left out)."""
    i = 0
    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1].text if i + 1 < len(toks) and toks[i + 1].kind == "word" else ""
        if t.kind == "num":
            vals = _digit_values(t.text, nxt)
            yield _Found("number", sorted(vals)[0], t.text, tuple(sorted(vals)))
            i += 1
            continue
        low = t.text.lower()
        if t.kind == "word" and (low in NUMBER_WORDS or low in _SCALES):
            j = i
            run: list[str] = []
            while j < len(toks) and toks[j].kind == "word" and (
                    toks[j].text.lower() in NUMBER_WORDS or toks[j].text.lower() in _SCALES
                    or (toks[j].text.lower() == "and" and run)):
                run.append(toks[j].text.lower())
                j += 1
            while run and run[-1] == "and":
                run.pop()
                j -= 1
            v = _word_number(run)
            shown = text[t.start: toks[j - 1].start + len(toks[j - 1].text)]
            after = toks[j].text if j < len(toks) and toks[j].kind == "word" else ""
            if v is not None and not (check and len(run) == 1 and run[0] in _LOOSE):
                vals = {str(v)}
                if _TIME_SUFFIX.match(after):
                    vals |= {str(v % 12 or 12), f"{v % 12 or 12}:00"}
                yield _Found("number", str(v), shown, tuple(sorted(vals)))
            i = max(j, i + 1)
            continue
        i += 1


# --------------------------------------------------------------------------- names


def _stem(w: str) -> str:
    w = w.lower().replace("’", "'")
    for end in ("'s", "'"):
        if w.endswith(end) and len(w) > len(end):
            w = w[: -len(end)]
    return w


def _variants(w: str) -> set[str]:
    """A word and its plural/singular neighbours ("van", "vans", "boxes" -> "box")."""
    out = {w}
    if len(w) > 3 and w.endswith("es"):
        out.add(w[:-2])
    if len(w) > 2 and w.endswith("s"):
        out.add(w[:-1])
    out |= {w + "s", w + "es"}
    return out


def _is_cap(w: str) -> bool:
    return w[:1].isupper()


def _title_case(toks: list[_Tok]) -> bool:
    words = [t.text for t in toks if t.kind == "word" and len(t.text) > 3]
    return len(words) >= 2 and sum(_is_cap(w) for w in words) >= 0.6 * len(words)


def _names(toks: list[_Tok], nouns_capitalised: bool) -> Iterable[list[_Tok]]:
    """Runs of capitalised words that look like names."""
    i = 0
    while i < len(toks):
        if toks[i].kind != "word" or not _is_cap(toks[i].text):
            i += 1
            continue
        j = i
        while j < len(toks) and toks[j].kind == "word" and _is_cap(toks[j].text):
            j += 1
        run = toks[i:j]
        if len(run) > 1 or not (nouns_capitalised or run[0].initial or run[0].text == "I"):
            yield run
        i = j


def _noun_case_share(texts: Iterable[str]) -> float:
    inside = caps = 0
    for text in texts:
        for t in _tokens(text):
            if t.kind == "word" and not t.initial and t.text != "I":
                inside += 1
                caps += _is_cap(t.text)
    return caps / inside if inside else 0.0


# --------------------------------------------------------------------------- the check


HEADING, SENTENCE, PHRASE = "heading", "sentence", "phrase"


def _fields(m: Minutes, labels: re.Pattern[str] | None = None) -> list[tuple[str, str, str]]:
    """(where, text, what it is) for everything the minutes say in their own words: a
    heading (the title, a topic's; in Title Case its capitals say nothing), sentences, or a
    phrase (a due date: no word of it starts a sentence)."""
    out = [("title", m.title, HEADING), ("summary", m.summary, SENTENCE)]
    if m.topics:
        for tp in m.topics:
            where = f"topic {tp.title!r}" if tp.title else "discussion points"
            out.append((where, tp.title, HEADING))
            out += [(where, p, SENTENCE) for p in tp.points]
    else:
        out += [(f"discussion point {i}", p, SENTENCE)
                for i, p in enumerate(m.discussion_points, 1)]
    out += [(f"decision {i}", d, SENTENCE) for i, d in enumerate(m.decisions, 1)]
    for i, a in enumerate(m.action_items, 1):
        out.append((f"action {i}", a.task, SENTENCE))
        if a.due:
            out.append((f"action {i} due", a.due, PHRASE))
    if m.date:  # the meeting's own date (a title may carry it) is a fact, not a claim
        out = [(w, x.replace(m.date, " "), k) for w, x, k in out]
    if labels is not None:  # "Speaker 3" is a label, not a number three
        out = [(w, labels.sub("Speaker", x), k) for w, x, k in out]
    return [(w, x, k) for w, x, k in out if x and x.strip()]


def _labels(m: Minutes, t: SpeakerTranscript) -> re.Pattern[str] | None:
    """The "Speaker N" labels of unnamed speakers, as the minutes may use them."""
    labels = {display_label(t, s.id) for s in t.speakers}
    labels |= {f"Speaker {i}" for i in range(1, max(len(t.speakers), len(m.speakers)) + 1)}
    labels = {x for x in labels if re.search(r"\d", x)}
    if not labels:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(x) for x in sorted(labels)) + r")(?!\w)")


def _said(m: Minutes, t: SpeakerTranscript) -> tuple[set[str], set[str]]:
    """The words and number values of what the meeting contained: words from the transcript,
    the speakers' names and labels and the attendees; numbers from the transcript only."""
    names = [s.name for s in t.speakers if s.name] + [s.name for s in m.speakers if s.name]
    names += [display_label(t, s.id) for s in t.speakers] + list(m.attendees) + ["Speaker"]
    words: set[str] = set()
    numbers: set[str] = set()
    for text in [s.text for s in t.segments] + names:
        toks = _tokens(text)
        words |= {_stem(x.text) for x in toks if x.kind == "word"}
    for s in t.segments:
        for f in _numbers(_tokens(s.text), s.text, check=False):
            numbers |= set(f.keys)
    return words, numbers


def unsupported(m: Minutes, t: SpeakerTranscript) -> list[QualityFlag]:
    """A flag (kind "not in transcript") for each name or number in the minutes that appears
    nowhere in the transcript, the speakers' names or the attendees; empty when none."""
    words, numbers = _said(m, t)
    fields = _fields(m, _labels(m, t))
    nouns_capitalised = _noun_case_share(s.text for s in t.segments) > NOUN_CASE_SHARE
    lower_used: set[str] = set()  # words the minutes also write in lower case
    for _, text, _s in fields:
        lower_used |= {_stem(x.text) for x in _tokens(text)
                       if x.kind == "word" and not _is_cap(x.text)}

    found: dict[tuple[str, str], tuple[str, list[str]]] = {}  # (kind, key) -> shown, places

    def note(kind: str, key: str, shown: str, where: str) -> None:
        places = found.setdefault((kind, key), (shown, []))[1]
        if where not in places:
            places.append(where)

    for where, text, what in fields:
        toks = _tokens(text)
        if what == PHRASE:
            for x in toks:
                x.initial = False
        for f in _numbers(toks, text, check=True):
            if not set(f.keys) & numbers:
                note("number", f.key, f.shown, where)
        if what == HEADING and _title_case(toks):
            continue  # Title Case: its capitals say nothing; its names are checked elsewhere
        for run in _names(toks, nouns_capitalised):
            bad = [x for x in run
                   if not (_variants(_stem(x.text)) & words) and _stem(x.text) not in lower_used]
            if not bad:
                continue
            # consecutive unsupported words of one name are one flag
            groups: list[list[_Tok]] = [[bad[0]]]
            for x in bad[1:]:
                if run.index(x) == run.index(groups[-1][-1]) + 1:
                    groups[-1].append(x)
                else:
                    groups.append([x])
            for g in groups:
                shown = text[g[0].start: g[-1].start + len(g[-1].text)]
                note("name", " ".join(_stem(x.text) for x in g), shown, where)

    # a flagged word is listed everywhere the minutes use it (a Title Case title included)
    for (kind, key), (_shown, places) in found.items():
        if kind != "name":
            continue
        pat = re.compile(r"(?<!\w)" + r"\W+".join(re.escape(k) for k in key.split())
                         + r"(?:['’]s?)?(?!\w)", re.IGNORECASE)
        for where, text, _s in fields:
            if where not in places and pat.search(text):
                places.append(where)
    order: dict[str, int] = {}
    for i, (w, _x, _k) in enumerate(fields):
        order.setdefault(w, i)
    flags = []
    for (_kind, _key), (shown, places) in found.items():
        places.sort(key=lambda w: order.get(w, 0))
        flags.append((order.get(places[0], 0),
                      QualityFlag(KIND, f"{', '.join(places)}: '{shown}' is not in the "
                                        "transcript")))
    return [f for _, f in sorted(flags, key=lambda x: x[0])]
