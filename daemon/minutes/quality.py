"""Quality flags: what a reader of the minutes should check, said plainly at their end.

:func:`quality_flags` gathers, most important first:

1. **weak evidence**: action items marked ``weak`` (their evidence checked out only in part)
   and items or decisions with no quoted evidence at all (the flag starts where the
   evidence does);
2. **not in transcript**: names and numbers in the minutes nobody said
   (:func:`daemon.minutes.faithful.unsupported`);
3. **unnamed speaker**: a speaker with at least :data:`UNNAMED_MIN_S` of speech and no name,
   with the command that names them;
4. **dropped**: what the writer left out for lack of evidence (``repairs`` prefixed
   ``"dropped: "``);
5. **low asr confidence**: stretches the speech recognition was unsure of (below);
6. **model repair**: the model's answers that had to be repaired (the writer's other
   ``repairs``).

Low ASR confidence
------------------
A segment's ``confidence`` is the mean probability the ASR gave its words. A stretch of
consecutive segments below :data:`LOW_ASR_CONFIDENCE` is one flag (with its start and end);
stretches of fewer than :data:`LOW_ASR_MIN_WORDS` words are left out (a lone "Yeah." or
"Thanks, bye." is often heard with a low probability, and rightly); past
:data:`LOW_ASR_MAX_FLAGS` stretches, the worst are listed and the rest counted.

The threshold is calibrated on faster-whisper ``base`` (int8, beam 5: the embedded default),
each segment's words aligned with the eval kit's truth.json (difflib, measured 2026-12-03):

* **the dev meetings as rendered** (speaker turns of customer-call, design-team-1,
  design-team-2 and library-renovation from the pipeline, 132 segments): mean 0.912, median
  0.918, 10th percentile 0.825, 5th 0.803, 1st 0.699, lowest 0.698 (the two under 0.70 are
  3-word fillers: "It is y'all.", "that yes yeah"). Share of a segment's words that are
  wrong: 1-2 % above 0.90, 4 % at 0.85-0.90, 10 % at 0.80-0.85, 13-25 % below 0.80.
  product-launch (espeak-ng voices, Whisper's own segments): lowest 0.695 (a 14-word
  segment with 43 % of its words wrong, a name heard as "Candy"), then 0.720, 0.753.
* **the same speech with white noise** (customer-call 0:00-2:00 at 10, 3 and -3 dB SNR,
  product-launch at 10 dB; 179 segments): words wrong 75 % below 0.50, 57 % at 0.50-0.65,
  50 % at 0.65-0.70, 30 % at 0.70-0.80, 24 % at 0.80-0.90, 15 % above 0.90. At 0.65 (4
  words or more) 11 of 69 segments are flagged at 10 dB, 17 of 56 at 3 dB, 23 of 54 at
  -3 dB; three in four of those flagged have half their words or more wrong.
* **the dev meetings and seven of bench/meetings' scripts** (the pipeline's turns, 11
  meetings, 490 turns; the scripts mix espeak-ng, Piper and Kokoro voices with 30-36 dB
  noise, and the meetings' word error is 2-3 % on the Kokoro/Piper dev meetings, 8-17 % on
  the rest): mean 0.855, median 0.883, 10th percentile 0.715, 5th 0.656, 1st 0.538. Turns
  of 4 words or more flagged: at 0.60, 7 (45 % of their words wrong); at **0.65, 13**
  (45 % wrong, 11 of them 30 % wrong or worse; none in a dev meeting; at most 8 of a
  16-minute meeting's 186 turns); at 0.70, 28 (40 % wrong, 20 of them 30 % or worse).

Hence 0.65: below it about half the words are wrong, it marks under 3 % of turns on
synthetic meetings with light noise and none on the clean dev meetings (their lowest turn,
0.698, leaves a margin: people talk less cleanly than synthetic voices).
"""

from __future__ import annotations

from daemon.minutes.faithful import unsupported
from daemon.names import display_label
from daemon.render import hms, weak_note
from daemon.types import Minutes, QualityFlag, SpeakerTranscript

UNNAMED_MIN_S = 5.0
LOW_ASR_CONFIDENCE = 0.65  # the calibration above
LOW_ASR_MIN_WORDS = 4
LOW_ASR_MAX_FLAGS = 5  # more stretches than this: the worst ones, and how many in all

# Order of the flags: most important first.
ORDER = ("weak evidence", "not in transcript", "unnamed speaker", "dropped",
         "low asr confidence", "model repair")


def clock(seconds: float) -> str:
    """Talk time as people read it: "1:23", "1:02:03"."""
    s = int(round(max(0.0, seconds)))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


# --------------------------------------------------------------------------- the kinds


def weak_items(m: Minutes) -> list[QualityFlag]:
    out = []
    for i, a in enumerate(m.action_items, 1):
        start = a.evidence[0].start if a.evidence else None
        what = f"Action item {i} ({a.owner}: {_short(a.task)})"
        if not a.evidence:
            out.append(QualityFlag("weak evidence", f"{what} has no quoted evidence; check it "
                                   "against the transcript"))
        elif a.weak:
            out.append(QualityFlag("weak evidence", f"{what}: {weak_note(a)}", start))
    for i, d in enumerate(m.decisions, 1):
        qs = m.decision_evidence[i - 1] if i - 1 < len(m.decision_evidence) else []
        if not qs:
            out.append(QualityFlag("weak evidence", f"Decision {i} ({_short(d)}) has no quoted "
                                   "evidence; check it against the transcript"))
    return out


def unnamed_speakers(t: SpeakerTranscript) -> list[QualityFlag]:
    out = []
    for s in t.speakers:
        if s.name or s.talk_time_s < UNNAMED_MIN_S:
            continue
        label = display_label(t, s.id)
        first = next((g.start for g in t.segments if g.speaker == s.id), None)
        out.append(QualityFlag(
            "unnamed speaker",
            f"{label} ({clock(s.talk_time_s)} of speech) is not named; "
            f"`minutesd speakers MEETING --set '{label}=Full Name'`", first))
    return out


def low_confidence(t: SpeakerTranscript, threshold: float = LOW_ASR_CONFIDENCE,
                   min_words: int = LOW_ASR_MIN_WORDS) -> list[QualityFlag]:
    """Stretches of consecutive segments whose confidence is below ``threshold``."""
    runs: list[list[int]] = []
    for i, seg in enumerate(t.segments):
        if seg.confidence is not None and seg.confidence < threshold:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
    found = []
    for run in runs:
        segs = [t.segments[i] for i in run]
        n = sum(len(s.text.split()) for s in segs)
        if n < min_words:
            continue
        mean = sum((s.confidence or 0.0) * len(s.text.split()) for s in segs) / n
        found.append((mean, segs[0].start, segs[-1].end))
    shown = sorted(found, key=lambda x: x[0])[:LOW_ASR_MAX_FLAGS]
    out = [QualityFlag("low asr confidence",
                       f"{hms(a)}–{hms(b)}: the speech recognition was unsure here (mean word "
                       f"probability {mean:.2f}); check the transcript against the recording",
                       a)
           for mean, a, b in sorted(shown, key=lambda x: x[1])]
    if len(found) > len(shown):
        secs = sum(b - a for _, a, b in found)
        out.append(QualityFlag("low asr confidence",
                               f"{len(found)} stretches in all ({clock(secs)}) were heard with "
                               f"low confidence; the {len(shown)} worst are listed"))
    return out


def from_repairs(repairs: list[str]) -> list[QualityFlag]:
    out, seen = [], set()
    for r in repairs:
        r = " ".join(r.split())
        if not r or r in seen:
            continue
        seen.add(r)
        if r.lower().startswith("dropped:"):
            what = r.split(":", 1)[1].strip()
            out.append(QualityFlag("dropped", f"Left out: {what}"))
        else:
            out.append(QualityFlag("model repair", r[:1].upper() + r[1:]))
    return out


def quality_flags(m: Minutes, t: SpeakerTranscript, repairs: list[str]) -> list[QualityFlag]:
    """Everything a reader should check in ``m`` (written from ``t``), most important first;
    empty when there is nothing to check."""
    flags = (weak_items(m) + unsupported(m, t) + unnamed_speakers(t) + from_repairs(repairs)
             + low_confidence(t))
    rank = {k: i for i, k in enumerate(ORDER)}
    return sorted(flags, key=lambda f: rank.get(f.kind, len(ORDER)))  # stable within a kind
