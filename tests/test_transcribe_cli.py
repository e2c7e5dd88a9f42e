"""End to end: `minutesd transcribe` on a real two-voice recording, with the real models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def run_cli(args, tmp_path, **env):
    full_env = dict(os.environ, MINUTESD__CACHE_DIR=str(tmp_path / "cache"), **env)
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=600)


def wer(ref: str, hyp: str) -> float:
    norm = lambda s: re.sub(r"[^a-z0-9' ]", " ", s.lower()).split()  # noqa: E731
    r, h = norm(ref), norm(hyp)
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / max(1, len(r))


@pytest.fixture(scope="module")
def transcribed(dialogue, tmp_path_factory):
    mp3, truth = dialogue
    tmp = tmp_path_factory.mktemp("cli")
    proc = run_cli(["transcribe", str(mp3), "--out", str(tmp / "out")], tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp / "out", truth, proc


def test_contract_of_transcript_json(transcribed):
    out, truth, _ = transcribed
    data = json.loads((out / "transcript.json").read_text())
    assert data["duration_s"] == pytest.approx(truth[-1][2] + 0.6, abs=0.3)
    assert [set(s) >= {"id", "name"} for s in data["speakers"]] == [True] * len(data["speakers"])
    assert all(s["name"] is None for s in data["speakers"])
    ids = {s["id"] for s in data["speakers"]}
    for seg in data["segments"]:
        assert set(seg) >= {"start", "end", "speaker", "text"}
        assert 0 <= seg["start"] <= seg["end"] <= data["duration_s"] + 0.5
        assert seg["speaker"] in ids and seg["text"].strip()


def test_words_and_speakers_are_right(transcribed):
    out, truth, _ = transcribed
    data = json.loads((out / "transcript.json").read_text())
    hyp = " ".join(s["text"] for s in data["segments"])
    ref = " ".join(t[3] for t in truth)
    assert wer(ref, hyp) < 0.25, hyp
    assert len(data["speakers"]) == 2
    # Each scripted turn is attributed to one speaker, and the two voices to different ones.
    label = {}
    for spk, start, end, _ in truth:
        mid = [s for s in data["segments"] if s["start"] < end and s["end"] > start]
        covered = {}
        for s in mid:
            ov = min(end, s["end"]) - max(start, s["start"])
            covered[s["speaker"]] = covered.get(s["speaker"], 0) + ov
        best = max(covered, key=covered.get)
        assert covered[best] > 0.8 * sum(covered.values())
        assert label.setdefault(spk, best) == best
    assert label["A"] != label["B"]


def test_readable_markdown(transcribed):
    out, truth, _ = transcribed
    text = (out / "transcript.md").read_text()
    assert re.search(r'^<a id="t-00-00-0\d"></a>\[00:00:0', text, re.M)  # minutes link here
    text = re.sub(r'^<a id="t-\d\d-\d\d-\d\d"></a>', "", text, flags=re.M)
    lines = [ln for ln in text.splitlines() if ln.startswith("[")]
    assert len(lines) >= len(truth)
    for ln in lines:
        assert re.match(r"^\[\d\d:\d\d:\d\d\] SPEAKER_\d\d: \S", ln), ln
    assert lines[0].startswith("[00:00:0")


def test_progress_on_stderr(transcribed):
    _, _, proc = transcribed
    assert "progress" in proc.stderr and "stage=transcribe" in proc.stderr
    assert "transcript written" in proc.stderr


def test_json_logs_and_bad_input(tmp_path):
    bad = tmp_path / "corrupt.mp3"
    bad.write_bytes(b"ID3" + os.urandom(4000))
    proc = run_cli(["transcribe", str(bad), "--out", str(tmp_path / "o"), "--json-logs"],
                   tmp_path)
    assert proc.returncode == 65
    events = [json.loads(ln) for ln in proc.stderr.splitlines() if ln.strip()]
    err = [e for e in events if e.get("event") == "bad input"]
    assert err and err[0]["path"].endswith("corrupt.mp3") and err[0]["cause"]
    assert not (tmp_path / "o" / "transcript.json").exists()


def test_invalid_settings_stop_at_start(tmp_path):
    proc = run_cli(["transcribe", "x.mp3", "--out", str(tmp_path)], tmp_path,
                   MINUTESD__ASR__BEAM_SIZE="0")
    assert proc.returncode == 2
    assert "asr.beam_size" in proc.stderr and "0" in proc.stderr


def test_backend_failure_is_a_clear_message_not_a_traceback(tmp_path, dialogue):
    mp3, _ = dialogue
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "transcribe", str(mp3), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
        env=dict(env, MINUTESD__ASR__BACKEND="openai", MINUTESD__CACHE_DIR=str(tmp_path / "c")),
    )
    assert proc.returncode == 1
    assert "OPENAI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
