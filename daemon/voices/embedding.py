"""What the voice embedders share: the id of the CAM++ recipe and the averaging of window
embeddings into one unit vector. Pure numpy (the models live in the diarizer backends)."""

from __future__ import annotations

import numpy as np

# CAM++ (3D-Speaker campplus_cn_en_common) on 80-bin Kaldi fbank of 1.5 s windows: the same
# recipe in the pyannote backend's embedded pipeline, so enrolments carry over between them.
CAMPPLUS_MODEL_ID = "campplus_cn_en_common/fbank80/w1.5"


def mean_unit(vectors: np.ndarray) -> np.ndarray | None:
    """The L2-normalised mean of L2-normalised rows (NaN rows skipped)."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v[np.all(np.isfinite(v), axis=1)] if v.size else v
    if not len(v):
        return None
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    m = v.mean(axis=0)
    n = np.linalg.norm(m)
    return (m / n).astype(np.float32) if n > 0 else None
