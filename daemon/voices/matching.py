"""Pair a meeting's speakers with enrolled people by voice, one-to-one.

For each speaker and person: cosine similarity of the speaker's embedding to each of the
person's samples (all unit vectors, so a dot product), the mean of the ``top_k`` best.
A pair is acceptable when that score reaches ``threshold`` *and* beats the speaker's score
for every other person by ``margin`` (a voice halfway between two people names neither).
Among the acceptable pairs, the assignment with the largest total similarity is taken
(Hungarian algorithm), so two speakers never get one name; a speaker with no acceptable
pair stays unnamed. Only samples of the speaker embeddings' model are ever looked at.
"""

from __future__ import annotations

import numpy as np

from daemon.types import VoiceMatch

REJECT = -1e6


def person_scores(vector: np.ndarray, samples: dict[str, list[np.ndarray]],
                  top_k: int = 3) -> dict[str, float]:
    """Similarity of one speaker to each person: the mean of the top_k sample cosines."""
    out = {}
    for name, vecs in samples.items():
        sims = np.sort(np.stack(vecs) @ vector)[::-1]
        out[name] = float(np.mean(sims[:top_k]))
    return out


def match_speakers(embeddings: dict[str, np.ndarray], samples: dict[str, list[np.ndarray]],
                   model_id: str, *, threshold: float, margin: float,
                   top_k: int = 3) -> dict[str, VoiceMatch]:
    """``{speaker: VoiceMatch}`` for the speakers recognised (``samples``: person -> that
    model's vectors)."""
    from scipy.optimize import linear_sum_assignment

    speakers = [s for s, v in embeddings.items() if v is not None]
    people = sorted(n for n, v in samples.items() if v)
    if not speakers or not people:
        return {}
    scores = {s: person_scores(embeddings[s], samples, top_k) for s in speakers}
    gain = np.full((len(speakers), len(people)), REJECT)
    runner: dict[tuple[int, int], float | None] = {}
    for i, s in enumerate(speakers):
        for j, p in enumerate(people):
            others = [v for n, v in scores[s].items() if n != p]
            second = max(others) if others else None
            runner[i, j] = second
            sim = scores[s][p]
            if sim >= threshold and (second is None or sim - second >= margin):
                gain[i, j] = sim
    rows, cols = linear_sum_assignment(-gain)
    out = {}
    for i, j in zip(rows, cols, strict=True):
        if gain[i, j] > REJECT:
            out[speakers[i]] = VoiceMatch(speakers[i], people[j], float(gain[i, j]),
                                          runner[i, j], model_id)
    return out


def confidence(similarity: float, threshold: float) -> float:
    """0.5 at the threshold, rising linearly to 1.0 at similarity 1."""
    span = max(1e-6, 1.0 - threshold)
    return float(min(1.0, 0.5 + 0.5 * max(0.0, similarity - threshold) / span))
