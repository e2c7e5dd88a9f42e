"""The daemon with the real OpenAI transcription backend against a fake API: a rejected key
makes the job wait for the operator (fix in `status`, no attempt counted) and resume once
the key works, exactly like a revoked Google token; a 503 is transient and retried with
backoff, attempts counted."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from test_daemon_service import Running, settings_for, wait_for
from test_openai_asr import KEY, SR, FakeAPI, meeting

from daemon.backends.diar_none import NoDiarizer
from daemon.minutes.writer import LLMMinutesWriter
from daemon.pipeline import Hearer, Processor
from daemon.report import collect_status, status
from daemon.settings import ASRSettings, OpenAIASRSettings
from daemon.testing import EchoChat
from integrations.openai_asr import OpenAITranscriber


@pytest.fixture
def api():
    fake = FakeAPI()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh_logging():
    import structlog

    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def recording(path: Path, seconds: float = 6.0, seed: int = 3) -> Path:
    audio, _ = meeting(seconds, seed=seed)
    pcm = (np.clip(audio.samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())
    return path


def daemon_with_openai(tmp_path: Path, api: FakeAPI, key_file: Path, **daemon_over) -> Running:
    s = settings_for(tmp_path, **daemon_over)
    s.asr = ASRSettings(backend="openai", openai=OpenAIASRSettings(
        base_url=api.base_url, api_key_file=key_file, max_retries=0, timeout_s=5.0))
    s.diarization.backend = "none"
    hearer = Hearer(s, OpenAITranscriber(s.asr), NoDiarizer())
    proc = Processor(s, hearer, LLMMinutesWriter(EchoChat(), max_new_tokens=256))
    return Running(s, processor=proc)


def test_a_rejected_key_waits_for_the_operator_then_resumes(tmp_path, api, capsys):
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-revoked\n")
    r = daemon_with_openai(tmp_path, api, key_file, max_attempts=2)
    r.svc.monitor.first_wait_s = 0.2
    with r:
        src = recording(tmp_path / "inbox" / "standup.wav")
        wait_for(lambda: r.svc.health and "rejected the API key" in r.svc.health, what="waiting")
        # it keeps waiting: several rejected tries, none of them counted
        wait_for(lambda: sum(e["kind"] == "environment" for e in r.svc.store.events()) >= 3,
                 what="tried again, still waiting")
        job = r.svc.store.jobs()[0]
        assert job.state in ("queued", "running") and job.step == "received"
        assert job.attempts <= 1  # 1 only while a try is running; given back after it
        assert not [e for e in r.svc.store.events() if e["kind"] in ("retry", "failed")]
        assert src.exists() and not list((tmp_path / "failed").glob("*"))
        st = collect_status(r.svc.settings)
        assert "rejected the API key" in st["daemon"]["health"]
        assert f"Fix: put the key the server expects in {key_file}" in st["daemon"]["health"]
        queued = st["queue"][0]
        assert "HTTP 401" in queued["last_error"] and "Fix:" in queued["last_error"]
        status(r.svc.settings)
        out = capsys.readouterr().out
        assert "health:   " in out and "Fix: put the key the server expects" in out
        # the operator puts a working key in place: the job resumes by itself
        key_file.write_text(KEY + "\n")
        wait_for(lambda: r.counts()["done"] == 1, what="resumed and archived")
        assert r.svc.health is None
        done = r.svc.store.jobs()[0]
        assert done.state == "done" and (tmp_path / "processed" / "standup.wav").exists()
        assert not [e for e in r.svc.store.events(sha=done.sha256) if e["kind"] == "retry"]
    good = [q for q in api.requests if q.headers.get("authorization") == f"Bearer {KEY}"]
    assert good and len(api.requests) > len(good)  # rejected tries, then the accepted ones


def test_a_503_is_transient_and_retried_with_backoff(tmp_path, api):
    key_file = tmp_path / "openai.key"
    key_file.write_text(KEY + "\n")
    body = {"error": {"message": "upstream overloaded", "type": "server_error", "param": None,
                      "code": None}}
    api.script = [(503, {}, body), (503, {}, body)]
    r = daemon_with_openai(tmp_path, api, key_file, max_attempts=3, retry_backoff_s=0.3,
                           retry_backoff_max_s=5.0)
    with r:
        recording(tmp_path / "inbox" / "review.wav")
        wait_for(lambda: r.counts()["done"] == 1, timeout=30, what="done after retries")
        sha = r.svc.store.jobs()[0].sha256
        retries = [e for e in reversed(r.svc.store.events(sha=sha)) if e["kind"] == "retry"]
    assert len(retries) == 2 and all("HTTP 503" in e["detail"] for e in retries)
    waits = [float(e["detail"].split('"in_s": ')[1].rstrip("}")) for e in retries]
    assert waits == [0.3, 0.6]  # backoff doubles
    assert r.svc.health is None  # a transient problem is not the operator's
