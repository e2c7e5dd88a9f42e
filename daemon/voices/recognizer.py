"""Voice profiles in the pipeline and in ``minutesd voices``.

:class:`VoiceProfiles` holds the embedder (the diarizer's model, loaded once) and the
settings; the profiles file is opened per use, so enrolments made while the daemon runs
count from its next meeting. With ``speakers.voice_profiles: false`` the registry builds
none: nothing is computed and nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daemon.audio import decode_audio
from daemon.protocols import Diarizer, VoiceEmbedder
from daemon.settings import SpeakerSettings
from daemon.types import Audio, Diarization, VoiceMatch
from daemon.voices.matching import confidence, match_speakers
from daemon.voices.spans import clean_spans, speech_spans
from daemon.voices.store import ProfileStore


@dataclass
class Enrolled:
    name: str
    source: str
    seconds: float
    sample_id: int


class EnrollError(ValueError):
    """A clip cannot be enrolled (no speech found in it)."""


class VoiceProfiles:
    def __init__(self, cfg: SpeakerSettings, path: Path, embedder: VoiceEmbedder):
        self.cfg = cfg
        self.path = Path(path)
        self.embedder = embedder

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    # ------------------------------------------------------------------ a meeting's speakers

    def embed_speakers(self, audio: Audio, diarization: Diarization) -> dict[str, np.ndarray]:
        """Each diarized speaker with enough clean speech -> its voice embedding."""
        cfg = self.cfg
        out = {}
        for spk in diarization.speakers:
            spans = clean_spans(diarization.turns, spk, trim_s=cfg.edge_trim_s,
                                min_total_s=cfg.min_speech_s, max_total_s=cfg.max_speech_s)
            if spans and (vec := self.embedder.embed(audio, spans)) is not None:
                out[spk] = vec
        return out

    def samples(self) -> dict[str, list[np.ndarray]]:
        """Enrolled people -> their samples of this embedder's model (no file: nobody)."""
        if not self.path.exists():
            return {}
        with ProfileStore(self.path, readonly=True) as store:
            rows = store.samples(self.model_id)
        out: dict[str, list[np.ndarray]] = {}
        for s in rows:
            out.setdefault(s.name, []).append(s.vector)
        return out

    def recognize(self, embeddings: dict[str, np.ndarray],
                  model_id: str | None = None) -> dict[str, VoiceMatch]:
        """Match a meeting's speaker embeddings (made by ``model_id``) to enrolled people."""
        if not embeddings or (model_id or self.model_id) != self.model_id:
            return {}
        matches = match_speakers(embeddings, self.samples(), self.model_id,
                                 threshold=self.cfg.threshold, margin=self.cfg.margin,
                                 top_k=self.cfg.top_k)
        for m in matches.values():
            m.confidence = confidence(m.similarity, self.cfg.threshold)
        return matches

    # ------------------------------------------------------------------ enrolment

    def embed_clip(self, audio: Audio, diarizer: Diarizer) -> tuple[np.ndarray, float]:
        """A one-person clip's embedding (all its speech, as the diarizer's VAD finds it)."""
        spans = speech_spans(diarizer.diarize(audio).turns)
        seconds = sum(b - a for a, b in spans)
        if seconds < min(self.cfg.min_speech_s, 1.0) or (
                vec := self.embedder.embed(audio, spans)) is None:
            raise EnrollError(f"{audio.source or 'clip'}: no speech found "
                              f"({seconds:.1f} s; a clip needs a few seconds of one voice)")
        return vec, seconds

    def enroll(self, name: str, files: list[str | Path], diarizer: Diarizer) -> list[Enrolled]:
        """One sample per clip, source ``enrolled FILE``. Every clip is embedded before any
        is stored, so a bad clip leaves the profiles as they were."""
        made = []
        for f in files:
            audio = decode_audio(f)
            vec, seconds = self.embed_clip(audio, diarizer)
            made.append((Path(f).name, vec, seconds))
        out = []
        with ProfileStore(self.path) as store:
            for fname, vec, seconds in made:
                source = f"enrolled {fname}"
                sid = store.add_sample(name, vec, self.model_id, source, seconds)
                out.append(Enrolled(name, source, seconds, sid))
        return out
