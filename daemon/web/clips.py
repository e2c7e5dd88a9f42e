"""A short clip of one speaker's clearest speech, for the Speakers page.

"Clearest" is the speaker's longest turn (the one least cut by others), at most
``web.clip_s`` seconds of it from its start. The recording is decoded with the daemon's
own decoder (:func:`daemon.audio.decode_audio`, PyAV) and the clip written as 16-bit mono
WAV under the state folder (``STATE/web-clips/``), made once per meeting, speaker and span
(atomically: a temporary name, then a rename).
"""

from __future__ import annotations

import os
import re
import wave
from pathlib import Path

import numpy as np

from daemon.audio import decode_audio
from daemon.types import SpeakerTranscript


def clearest(t: SpeakerTranscript, label: str, clip_s: float) -> tuple[float, float] | None:
    """(start, end) in seconds of the clip for ``label``, or None when it never spoke."""
    segs = [s for s in t.segments if s.speaker == label and s.end > s.start]
    if not segs:
        return None
    best = max(segs, key=lambda s: (min(s.end - s.start, clip_s), -s.start))
    return best.start, min(best.end, best.start + clip_s)


def clip_path(folder: Path, key: str, label: str, span: tuple[float, float]) -> Path:
    """The clip's file: named by meeting, speaker and span, so a merge that changes the
    speaker's turns makes a new clip instead of playing the old one."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", label)[:64]
    return folder / f"{key[:32]}-{safe}-{int(span[0] * 1000)}-{int(span[1] * 1000)}.wav"


def make_clip(recording: Path, t: SpeakerTranscript, label: str, clip_s: float,
              folder: Path, key: str) -> Path | None:
    span = clearest(t, label, clip_s)
    if span is None:
        return None
    out = clip_path(folder, key, label, span)
    if out.exists():
        return out
    audio = decode_audio(recording)
    sr = audio.sample_rate
    a, b = int(span[0] * sr), int(span[1] * sr)
    pcm = (np.clip(audio.samples[a:b], -1.0, 1.0) * 32767).astype("<i2")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    os.replace(tmp, out)
    return out
