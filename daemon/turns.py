"""Speaker turns: join the transcriber's words and the diarizer's turns into who said what.

Each word goes to the speaker whose turn overlaps it most; speaker changes a word or three
inside a sentence snap to the sentence boundary (Whisper's word times drift at segment
edges); runs of one speaker merge into segments. Pure functions over :mod:`daemon.types`.
"""

from __future__ import annotations

from daemon.settings import TurnSettings
from daemon.types import Diarization, Speaker, SpeakerSegment, SpeakerTurn, Transcript


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def speaker_at(turns: list[SpeakerTurn], start: float, end: float) -> str | None:
    """The speaker with the most overlap with [start, end]; if no turn overlaps (a word in a
    gap the diarizer called silence), the speaker of the nearest turn within 2 s."""
    best, best_ov = None, 0.0
    totals: dict[str, float] = {}
    for t in turns:
        ov = _overlap(start, end, t.start, t.end)
        if ov > 0:
            totals[t.speaker] = totals.get(t.speaker, 0.0) + ov
    for spk, ov in totals.items():
        if ov > best_ov:
            best, best_ov = spk, ov
    if best is not None:
        return best
    mid = (start + end) / 2
    nearest, dist = None, 2.0
    for t in turns:
        d = 0.0 if t.start <= mid <= t.end else min(abs(mid - t.start), abs(mid - t.end))
        if d < dist:
            nearest, dist = t.speaker, d
    return nearest


def _join_text(parts: list[str]) -> str:
    text = "".join(parts).strip()
    return " ".join(text.split())


_SENTENCE_END = (".", "?", "!")


def snap_to_sentences(
    units: list[tuple[float, float, str, str | None]], max_edge_words: int = 3
) -> list[tuple[float, float, str, str | None]]:
    """Move speaker changes that fall a word or three inside a sentence to its boundary.

    Whisper's word times drift by a few hundred ms at segment edges, so the first word of a
    reply ("From marketing, ...") often lands in the previous speaker's turn. Within each
    sentence, a run of at most ``max_edge_words`` words at its start or end that disagrees
    with the rest of the sentence is given to the sentence's speaker. Real changes of speaker
    mid-sentence (interruptions) keep their split, since they leave more than a few words on
    each side.
    """
    out = list(units)
    start = 0
    for i, u in enumerate(units + [(0.0, 0.0, ".", None)]):
        if i < len(units) and not u[2].strip().endswith(_SENTENCE_END):
            continue
        end = min(i, len(units) - 1)
        sent = list(range(start, end + 1))
        start = i + 1
        if len(sent) < 2:
            continue
        spks = [out[j][3] for j in sent]
        for edge in ("head", "tail"):
            seq = sent if edge == "head" else sent[::-1]
            vals = spks if edge == "head" else spks[::-1]
            run = 1
            while run < len(vals) and vals[run] == vals[0]:
                run += 1
            rest = len(vals) - run
            if run <= max_edge_words and rest > run and len(set(vals[run:])) == 1:
                for j in seq[:run]:
                    a, b, t, _ = out[j]
                    out[j] = (a, b, t, vals[run])
                spks = [out[j][3] for j in sent]
    return out


def assign_speakers(
    transcript: Transcript,
    diarization: Diarization,
    cfg: TurnSettings | None = None,
) -> list[SpeakerSegment]:
    """Join ASR output and diarization into speaker-attributed segments.

    Word strategy (default, where the ASR gives word times): each word goes to the speaker
    whose turn overlaps it most, so a segment in which the speaker changes is split at the
    word where it changes. Overlapped speech: the word goes to whichever speaker covers
    more of it (ASR yields one word stream, so it can't be given to both). Words no turn
    covers go to the nearest turn's speaker within 2 s, else stay with the previous word's
    speaker, so no words are dropped. Consecutive runs of one speaker are merged while the
    gap is under ``merge_gap_s`` and the segment under ``max_turn_s``.
    """
    cfg = cfg or TurnSettings()
    turns = sorted(diarization.turns, key=lambda t: t.start)
    units: list[tuple[float, float, str, str | None]] = []  # start, end, text, speaker
    probs: list[float | None] = []  # the ASR's probability of each unit, where it gives one
    for seg in transcript.segments:
        if cfg.strategy == "word" and seg.words:
            for w in seg.words:
                units.append((w.start, w.end, w.text, speaker_at(turns, w.start, w.end)))
                probs.append(w.probability)
        else:
            units.append((seg.start, seg.end, " " + seg.text.strip(),
                          speaker_at(turns, seg.start, seg.end)))
            known = [w.probability for w in seg.words if w.probability is not None]
            probs.append(sum(known) / len(known) if known else None)
    if cfg.strategy == "word" and cfg.snap_to_sentences:
        units = snap_to_sentences(units)
    out: list[SpeakerSegment] = []
    cur: list[tuple[float, float, str, str | None]] = []
    cur_probs: list[float] = []
    prev_spk = turns[0].speaker if turns else "SPEAKER_00"

    def flush() -> None:
        if cur:
            text = _join_text([u[2] for u in cur])
            if text:
                conf = sum(cur_probs) / len(cur_probs) if cur_probs else None
                out.append(SpeakerSegment(cur[0][0], cur[-1][1], cur[0][3] or prev_spk, text,
                                          conf))
            cur.clear()
            cur_probs.clear()

    for (start, end, text, spk), prob in zip(units, probs, strict=True):
        spk = spk or prev_spk
        if cur and (
            spk != cur[0][3]
            or start - cur[-1][1] > cfg.merge_gap_s
            or end - cur[0][0] > cfg.max_turn_s
        ):
            flush()
        cur.append((start, end, text, spk))
        if prob is not None:
            cur_probs.append(prob)
        prev_spk = spk
    flush()
    return out


def speaker_stats(segments: list[SpeakerSegment], diarization: Diarization) -> list[Speaker]:
    """Speakers in order of first appearance in the transcript; talk time from diarization."""
    talk: dict[str, float] = {}
    for t in diarization.turns:
        talk[t.speaker] = talk.get(t.speaker, 0.0) + (t.end - t.start)
    order: list[str] = []
    for s in segments:
        if s.speaker not in order:
            order.append(s.speaker)
    return [Speaker(id=spk, talk_time_s=talk.get(spk, 0.0)) for spk in order]


def renumber(segments: list[SpeakerSegment], diarization: Diarization) -> None:
    """Name speakers SPEAKER_00, SPEAKER_01, … in order of first speech, in place."""
    mapping: dict[str, str] = {}
    for s in segments:
        if s.speaker not in mapping:
            mapping[s.speaker] = f"SPEAKER_{len(mapping):02d}"
    for t in sorted(diarization.turns, key=lambda t: t.start):
        if t.speaker not in mapping:
            mapping[t.speaker] = f"SPEAKER_{len(mapping):02d}"
    for s in segments:
        s.speaker = mapping[s.speaker]
    for t in diarization.turns:
        t.speaker = mapping[t.speaker]
