"""``diarization.backend: none``: everyone is one speaker (dictation, or diarization off)."""

from __future__ import annotations

from pathlib import Path

from daemon.types import Audio, Diarization, Progress, SpeakerTurn


class NoDiarizer:
    name = "none"

    def __init__(self, cfg=None, cache_dir: Path | None = None):
        pass

    def diarize(self, audio: Audio, progress: Progress | None = None,
                num_speakers: int | None = None,
                max_speakers: int | None = None) -> Diarization:
        return Diarization([SpeakerTurn(0.0, audio.duration_s, "SPEAKER_00")])
