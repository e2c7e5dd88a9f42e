"""bench/voices.py without models: the npz it packs for a GPU machine gives the samples the
kit's wav files decode to, bit for bit (so the CPU and CUDA runs read the same audio), and
``--compare`` reports how far two runs' scores and embeddings are apart."""

from __future__ import annotations

import importlib.util
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from daemon.audio import decode_audio

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_voices", REPO / "bench" / "voices.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(samples.astype("<i2").tobytes())


def test_packed_npz_gives_the_decoded_wav_samples(bench, tmp_path):
    rng = np.random.default_rng(0)
    kit = tmp_path / "eval"
    meeting = kit / "dev" / "team-1"
    full_scale = np.concatenate([[-32768, 32767, 0, 1, -1], rng.integers(-32768, 32768, 8000)])
    _wav(meeting / "meeting.wav", full_scale)
    _wav(meeting / "voices" / "Nora_Lindqvist.wav", rng.integers(-3000, 3000, 16_000))
    _wav(meeting / "voices" / "Clara_Moreau.wav", rng.integers(-3000, 3000, 12_000))
    (meeting / "truth.json").write_text('{"speakers": {}}')
    (meeting / "reference.rttm").write_text("SPEAKER team-1 1 0.0 1.0 <NA> <NA> Nora <NA> <NA>\n")

    bench.pack(kit, tmp_path / "data")
    assert (tmp_path / "data" / "eval" / "dev" / "team-1" / "reference.rttm").read_text() == \
        (meeting / "reference.rttm").read_text()
    from_npz = bench.Recordings(str(tmp_path / "data" / "voices.npz"))
    from_files = bench.Recordings()
    a, b = from_npz.meeting(meeting), from_files.meeting(meeting)
    assert a.samples.dtype == np.float32 and np.array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.samples, decode_audio(meeting / "meeting.wav").samples)
    clips_npz, clips_files = from_npz.clips(meeting), from_files.clips(meeting)
    assert [n for n, _ in clips_npz] == [n for n, _ in clips_files] == \
        ["Clara Moreau", "Nora Lindqvist"]
    for (_, x), (_, y) in zip(clips_npz, clips_files, strict=True):
        assert np.array_equal(x.samples, y.samples)
        assert Path(x.source).name == Path(y.source).name  # the enrolment's source name


def _run(scores: dict, vector: list, clip: list) -> dict:
    view = {"outcome": [{"meeting": "m", "speaker": "S0", "person": "Ann", "named": "Ann",
                         "scores": scores, "own_clip": None, "vector": vector}],
            "same": [scores["Ann"]], "same_own_clip": [], "different_series": [scores["Bo"]],
            "strangers": [], "margins": [scores["Ann"] - scores["Bo"]], "false_accepts": 0}
    return {"model_id": "campplus", "info": {}, "clips": {"m/Ann": clip},
            "views": {"truth": view}}


def test_compare_reports_score_and_embedding_differences(bench, tmp_path, capsys):
    a = _run({"Ann": 0.93, "Bo": 0.50}, [1.0, 0.0], [0.0, 1.0])
    b = _run({"Ann": 0.91, "Bo": 0.505}, [0.8, 0.6], [0.0, 1.0])
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert bench.compare(str(tmp_path / "a.json"), str(tmp_path / "b.json")) == 0
    out = capsys.readouterr().out
    emb = next(line for line in out.splitlines() if line.startswith("cos(A, B)"))
    assert "max 0.800000" in emb  # cos([1, 0], [0.8, 0.6])
    delta = next(line for line in out.splitlines() if line.startswith("|score A - score B|"))
    assert "max 0.020000" in delta and "min 0.005000" in delta
    assert "same name given in both runs: 1 of 1" in out
