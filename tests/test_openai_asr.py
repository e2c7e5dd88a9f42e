"""The openai ASR backend against a local fake of POST /v1/audio/transcriptions.

The fake speaks the real wire format (multipart upload in, JSON out) and is driven through
the real ``openai`` client with ``base_url=http://127.0.0.1:PORT/v1``. Its answers are
derived from the uploaded audio: it finds the tone bursts in each upload and names each by
its frequency, so the tests can check that every segment and word lands at the right time
of the original recording, and that no cut went through a burst.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import wave
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from daemon.audio import Audio
from daemon.backends.diar_none import NoDiarizer
from daemon.pipeline import Hearer
from daemon.protocols import Transcriber
from daemon.registry import build_transcriber
from daemon.settings import ASRSettings, OpenAIASRSettings, Settings
from integrations.openai_asr import (
    ConfigurationError,
    OpenAIAuthError,
    OpenAIRequestError,
    OpenAITranscriber,
    OpenAIUnavailableError,
    encode_wav,
    punctuate_words,
)

SR = 16_000
KEY_ENV = "MINUTESD_TEST_OPENAI_KEY"
KEY = "sk-test-good"
BLOCK = 160  # 10 ms

# --------------------------------------------------------------------------- synthetic audio


@dataclass
class Burst:
    start: float
    end: float
    freq: int


def tone(dur: float, freq: float, rng: np.random.Generator, dip_gain: float = 0.03) -> np.ndarray:
    """A word-like tone: 4 Hz amplitude modulation and, inside, short near-silent 60 ms dips
    (like stop consonants) that a cutter must not mistake for pauses."""
    t = np.arange(int(dur * SR)) / SR
    x = 0.3 * (0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)) * np.sin(2 * np.pi * freq * t)
    if dur > 0.5:
        for _ in range(int(dur * 2)):
            at = int(rng.uniform(0.15, dur - 0.2) * SR)
            x[at:at + int(0.06 * SR)] *= dip_gain
    return x


def meeting(
    seconds: float, seed: int = 0, noise: float = 0.003, gaps: tuple[float, float] = (0.45, 1.5)
) -> tuple[Audio, list[Burst]]:
    """Tone bursts of 0.6-3 s (each its own frequency) separated by silences, over noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * SR), dtype=np.float64)
    bursts: list[Burst] = []
    t = 0.4
    k = 0
    while True:
        dur = rng.uniform(0.6, 3.0)
        if t + dur > seconds - 0.4:
            break
        freq = 300 + 40 * k
        a = int(round(t * SR))
        y = tone(dur, freq, rng)
        x[a:a + len(y)] += y
        bursts.append(Burst(a / SR, (a + len(y)) / SR, freq))
        t += dur + rng.uniform(*gaps)
        k += 1
    x += noise * rng.standard_normal(len(x))
    return Audio(samples=x.astype(np.float32), source="synthetic"), bursts


# --------------------------------------------------------------------------- the fake API


def detect(x: np.ndarray) -> list[tuple[float, float, int]]:
    """(start_s, end_s, frequency) of each tone burst in ``x``: 10 ms RMS over a fixed
    threshold, gaps under 200 ms bridged, frequency from the FFT peak."""
    nb = len(x) // BLOCK
    if nb == 0:
        return []
    rms = np.sqrt(np.mean(x[: nb * BLOCK].reshape(nb, BLOCK) ** 2, axis=1))
    on = np.concatenate([[False], rms > 0.02, [False]])
    edges = np.flatnonzero(np.diff(on.astype(np.int8)))
    runs = [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True)]
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < 20:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    out = []
    for a, b in merged:
        if b - a < 10:
            continue
        seg = x[a * BLOCK: b * BLOCK]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n=1 << 17))
        freq = np.argmax(spec) * SR / (1 << 17)
        out.append((a * BLOCK / SR, b * BLOCK / SR, int(round(freq / 10.0)) * 10))
    return out


def parse_multipart(body: bytes, content_type: str) -> dict[str, list]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    assert m, content_type
    delim = b"--" + m.group(1).encode()
    fields: dict[str, list] = {}
    for part in body.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        disp = headers["content-disposition"]
        name = re.search(r'\bname="([^"]*)"', disp).group(1)
        fn = re.search(r'filename="([^"]*)"', disp)
        if fn:
            value = {"filename": fn.group(1), "content_type": headers.get("content-type"),
                     "data": content}
        else:
            value = content.decode("utf-8")
        fields.setdefault(name, []).append(value)
    return fields


@dataclass
class Request:
    headers: dict[str, str]
    fields: dict[str, list]

    def field(self, name: str):
        values = self.fields.get(name)
        return values[0] if values else None

    @property
    def file(self) -> dict:
        return self.fields["file"][0]

    @property
    def index(self) -> int:
        return int(re.search(r"(\d+)", self.file["filename"]).group(1))

    @property
    def pcm(self) -> np.ndarray:
        with wave.open(io.BytesIO(self.file["data"])) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


@dataclass
class FakeAPI:
    api_key: str = KEY
    # scripted failures, answered in order before normal service: (status, headers, body)
    script: list[tuple[int, dict, dict]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                api.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, status: int, body: dict, headers: dict | None = None):
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("x-request-id", "req_test")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        if h.path != "/v1/audio/transcriptions":
            return self.reply(h, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        req = Request({k.lower(): v for k, v in h.headers.items()},
                      parse_multipart(body, h.headers["Content-Type"]))
        with self.lock:
            self.requests.append(req)
            scripted = self.script.pop(0) if self.script else None
        if scripted:
            return self.reply(h, scripted[0], scripted[2], scripted[1])
        if req.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.reply(h, 401, {"error": {
                "message": "Incorrect API key provided: sk-te***. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
        x = req.pcm.astype(np.float64) / 32767.0
        found = detect(x)
        fmt = req.field("response_format") or "json"
        if fmt == "json":
            text = " ".join(f"tone {f}" for _, _, f in found)
            return self.reply(h, 200, {"text": text, "usage": {
                "type": "tokens", "input_tokens": 10, "output_tokens": 5, "total_tokens": 15}})
        assert fmt == "verbose_json"
        segments, words = [], []
        for i, (s, e, f) in enumerate(found):
            segments.append({
                "id": i, "seek": 0, "start": round(s, 2), "end": round(e, 2),
                "text": f" Tone {f}, done.", "tokens": [1, 2, 3], "temperature": 0.0,
                "avg_logprob": -0.2, "compression_ratio": 1.1, "no_speech_prob": 0.01,
            })
            third = (e - s) / 3
            for j, w in enumerate(["Tone", str(f), "done"]):
                words.append({"word": w, "start": round(s + j * third, 2),
                              "end": round(s + (j + 1) * third, 2)})
        return self.reply(h, 200, {
            "task": "transcribe", "language": "english", "duration": len(x) / SR,
            "text": " ".join(seg["text"].strip() for seg in segments),
            "segments": segments, "words": words,
            "usage": {"type": "duration", "seconds": round(len(x) / SR)},
        })


@pytest.fixture
def api():
    fake = FakeAPI()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def settings(base_url: str, **over) -> ASRSettings:
    top = {k: over.pop(k) for k in ("language", "initial_prompt") if k in over}
    oa = {"model": "gpt-4o-mini-transcribe", "base_url": base_url, "api_key_env": KEY_ENV,
          "max_retries": 2, "timeout_s": 5.0, **over}
    return ASRSettings(backend="openai", openai=OpenAIASRSettings(**oa), **top)


def near(a: float, b: float, tol: float = 0.04) -> bool:
    return abs(a - b) <= tol


def cuts_of(reqs: list[Request], original: Audio) -> list[int]:
    """Cut points in samples, reconstructed from the uploads; checks nothing was lost,
    duplicated or reordered on the way."""
    reqs = sorted(reqs, key=lambda r: r.index)
    pcm = [r.pcm for r in reqs]
    whole = np.frombuffer(encode_wav(original.samples, SR)[44:], dtype="<i2")
    assert np.array_equal(np.concatenate(pcm), whole)
    return list(np.cumsum([len(p) for p in pcm])[:-1])


def assert_in_gaps(cuts: list[int], bursts: list[Burst], clearance: float = 0.1) -> None:
    for c in cuts:
        t = c / SR
        inside = [b for b in bursts if b.start - clearance < t < b.end + clearance]
        assert not inside, f"cut at {t:.3f} s is within {clearance} s of burst {inside}"


# --------------------------------------------------------------------------- tests


def test_whisper_verbose_json_segments_words_and_offsets(api):
    audio, bursts = meeting(40.0, seed=1)
    cfg = settings(api.base_url, model="whisper-1", max_upload_mb=0.3)  # ~9.4 s an upload
    seen: list[tuple[str, float, float]] = []
    tr = OpenAITranscriber(cfg).transcribe(audio, lambda *a: seen.append(a))

    n = len(api.requests)
    assert n >= 5
    for r in api.requests:
        assert r.field("model") == "whisper-1"
        assert r.field("response_format") == "verbose_json"
        assert sorted(r.fields["timestamp_granularities[]"]) == ["segment", "word"]
        assert "language" not in r.fields and "prompt" not in r.fields
        assert len(r.file["data"]) <= 300_000
        assert r.file["content_type"] == "audio/wav"
    assert_in_gaps(cuts_of(api.requests, audio), bursts)

    # one segment per burst, at the burst's time in the whole recording, in order
    assert [s.text for s in tr.segments] == [f"Tone {b.freq}, done." for b in bursts]
    for seg, b in zip(tr.segments, bursts, strict=True):
        assert near(seg.start, b.start) and near(seg.end, b.end), (seg, b)
        assert [w.text for w in seg.words] == [" Tone", f" {b.freq},", " done."]
        third = (b.end - b.start) / 3
        for j, w in enumerate(seg.words):
            assert near(w.start, b.start + j * third) and near(w.end, b.start + (j + 1) * third)
            assert seg.start - 1e-6 <= w.start <= w.end <= seg.end + 1e-6
    assert tr.language == "en"  # "english" from the API, as a code

    # progress: once per piece, growing, ending at the full duration
    assert len(seen) == n and all(s[0] == "transcribe" for s in seen)
    assert [s[1] for s in seen] == sorted(s[1] for s in seen)
    assert seen[-1][1] == pytest.approx(audio.duration_s) and seen[-1][2] == audio.duration_s

    # word times let the pipeline rebuild punctuated text per speaker
    hearer = Hearer(Settings(), transcriber=OpenAITranscriber(cfg), diarizer=NoDiarizer())
    out = hearer.hear_audio(audio).transcript
    joined = " ".join(s.text for s in out.segments)
    assert joined == " ".join(f"Tone {b.freq}, done." for b in bursts)


@pytest.mark.parametrize(("max_upload_mb", "max_piece_s"), [(24.0, 30.0), (0.25, 7.82)])
def test_text_only_model_pieces_cut_in_silence(api, max_upload_mb, max_piece_s):
    audio, bursts = meeting(100.0, seed=2)
    cfg = settings(api.base_url, max_upload_mb=max_upload_mb)
    tr = OpenAITranscriber(cfg).transcribe(audio)

    reqs = sorted(api.requests, key=lambda r: r.index)
    assert len(reqs) >= int(audio.duration_s / max_piece_s) + 1
    for r in reqs:
        assert r.field("response_format") == "json"
        assert "timestamp_granularities[]" not in r.fields
        assert len(r.file["data"]) <= max_upload_mb * 1_000_000
        assert len(r.pcm) <= max_piece_s * SR + 1
    cuts = cuts_of(reqs, audio)
    assert_in_gaps(cuts, bursts)

    # one segment per piece, spanning exactly the bursts in it, with their names
    bounds = [0, *cuts, len(audio.samples)]
    assert len(tr.segments) == len(reqs)
    for seg, a, b in zip(tr.segments, bounds[:-1], bounds[1:], strict=True):
        inside = [x for x in bursts if a / SR <= x.start and x.end <= b / SR]
        assert inside
        assert seg.text == " ".join(f"tone {x.freq}" for x in inside)
        assert near(seg.start, inside[0].start) and near(seg.end, inside[-1].end), (seg, inside)
        assert seg.words == []
    assert sum(len(s.text.split()) for s in tr.segments) == 2 * len(bursts)


def test_cut_goes_in_the_last_pause_not_in_word_internal_dips():
    """Long tones with dead-silent 60 ms dips inside, and 0.5 s pauses with louder room tone:
    per 30 ms frame the dips are the quietest places, but a cut belongs in a pause, and in
    the last pause before the limit (fewer, longer pieces)."""
    rng = np.random.default_rng(3)

    def pause() -> np.ndarray:
        return 0.006 * rng.standard_normal(int(0.5 * SR))

    x = np.concatenate([
        tone(20.0, 400, rng, dip_gain=0.0), pause(),  # pause 20.0-20.5
        tone(3.0, 500, rng, dip_gain=0.0), pause(),  # pause 23.5-24.0
        tone(20.0, 700, rng, dip_gain=0.0), pause(),  # pause 44.0-44.5
        tone(10.0, 900, rng, dip_gain=0.0),
    ])
    x = (x + 0.002 * rng.standard_normal(len(x))).astype(np.float32)
    # the premise: the quietest 30 ms frame in the first search window is a dip, not a pause
    frames = x[15 * SR: 30 * SR][: (15 * SR // 480) * 480].reshape(-1, 480)
    quietest = 15.0 + np.argmin((frames**2).mean(axis=1)) * 0.03
    assert not (19.95 <= quietest <= 20.55 or 23.45 <= quietest <= 24.05)
    tr = OpenAITranscriber(settings("http://127.0.0.1:9/v1"))
    _, pieces = tr.plan(Audio(x))
    cuts = [p.start / SR for p in pieces[1:]]
    assert len(cuts) == 2
    assert 23.6 <= cuts[0] <= 23.9 and 44.1 <= cuts[1] <= 44.4, cuts


def test_silent_pieces_are_not_uploaded(api):
    rng = np.random.default_rng(4)
    x = np.concatenate([np.zeros(SR // 2), tone(2.0, 500, rng), np.zeros(80 * SR),
                        tone(2.0, 800, rng), np.zeros(SR // 2)]).astype(np.float32)
    audio = Audio(x)
    seen = []
    tr = OpenAITranscriber(settings(api.base_url)).transcribe(audio, lambda *a: seen.append(a))
    assert len(api.requests) == 2
    assert [s.text for s in tr.segments] == ["tone 500", "tone 800"]
    assert near(tr.segments[0].start, 0.5) and near(tr.segments[0].end, 2.5)
    assert near(tr.segments[1].start, 82.5) and near(tr.segments[1].end, 84.5)
    assert len(seen) > 2 and seen[-1][1] == pytest.approx(audio.duration_s)


def test_fields_sent(api):
    audio, _ = meeting(4.0, seed=5)
    cfg = settings(api.base_url, language="de", initial_prompt="Teilnehmer: Jörg, Ana.",
                   model="gpt-4o-transcribe")
    tr = OpenAITranscriber(cfg).transcribe(audio)
    (r,) = api.requests
    assert r.headers["authorization"] == f"Bearer {KEY}"
    assert r.field("model") == "gpt-4o-transcribe"
    assert r.field("language") == "de"
    assert r.field("prompt") == "Teilnehmer: Jörg, Ana."
    assert r.field("response_format") == "json"
    assert tr.language == "de"

    api.requests.clear()
    OpenAITranscriber(settings(api.base_url)).transcribe(audio)
    (r,) = api.requests
    assert "language" not in r.fields and "prompt" not in r.fields


def test_retries_429_then_500_then_success(api):
    audio, bursts = meeting(8.0, seed=6)
    assert bursts
    fast = {"retry-after-ms": "10"}
    api.script = [
        (429, fast, {"error": {"message": "Rate limit reached for requests",
                               "type": "requests", "param": None, "code": "rate_limit_exceeded"}}),
        (500, fast, {"error": {"message": "The server had an error while processing your "
                               "request.", "type": "server_error", "param": None, "code": None}}),
    ]
    t0 = time.monotonic()
    tr = OpenAITranscriber(settings(api.base_url, max_retries=5)).transcribe(audio)
    elapsed = time.monotonic() - t0
    assert len(api.requests) == 3
    assert [r.headers["x-stainless-retry-count"] for r in api.requests] == ["0", "1", "2"]
    first = api.requests[0].file["data"]
    assert len(first) == 44 + 2 * len(audio.samples)
    assert all(r.file["data"] == first for r in api.requests)  # the body is replayed whole
    assert tr.segments[0].text == " ".join(f"tone {b.freq}" for b in bursts)
    assert elapsed < 2.0  # retry-after-ms honoured instead of the 0.5 s+ default backoff


@pytest.mark.parametrize(("status", "code", "words"), [
    (503, None, "HTTP 503"),
    (429, "insufficient_quota", "out of quota"),
])
def test_gives_up_after_max_retries(api, status, code, words):
    audio, _ = meeting(3.0, seed=7)
    body = {"error": {"message": "nope", "type": "x", "param": None, "code": code}}
    api.script = [(status, {"retry-after-ms": "10"}, body)] * 3
    with pytest.raises(OpenAIUnavailableError, match=words) as exc:
        OpenAITranscriber(settings(api.base_url, max_retries=2)).transcribe(audio)
    assert len(api.requests) == 3
    assert "2 retries" in str(exc.value)


@pytest.mark.parametrize(("status", "words"), [(401, "revoked"), (403, "may not use model")])
def test_auth_errors_are_clear_and_not_retried(api, monkeypatch, status, words):
    audio, _ = meeting(3.0, seed=8)
    if status == 401:
        monkeypatch.setenv(KEY_ENV, "sk-revoked")
    else:
        api.script = [(403, {}, {"error": {
            "message": "You are not allowed to sample from this model", "type": "invalid_request_error",
            "param": None, "code": "model_not_found"}})]
    with pytest.raises(OpenAIAuthError, match=words) as exc:
        OpenAITranscriber(settings(api.base_url)).transcribe(audio)
    assert KEY_ENV in str(exc.value) and f"HTTP {status}" in str(exc.value)
    assert len(api.requests) == 1


def test_failure_in_one_of_many_concurrent_pieces_surfaces(api):
    audio, _ = meeting(100.0, seed=10)
    api.script = [(400, {}, {"error": {"message": "Audio file might be corrupted or unsupported",
                                       "type": "invalid_request_error", "param": "file",
                                       "code": "invalid_value"}})]
    with pytest.raises(OpenAIRequestError, match="HTTP 400.*corrupted"):
        OpenAITranscriber(settings(api.base_url, max_upload_mb=0.25)).transcribe(audio)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_key_fails_at_construction(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(KEY_ENV, value)
    with pytest.raises(ConfigurationError, match=KEY_ENV):
        OpenAITranscriber(settings("http://127.0.0.1:9/v1"))


def test_connection_failure_after_retries(hangup_server):
    """A server that accepts and hangs up: the client retries, then a clear error."""
    port, accepted = hangup_server
    audio, _ = meeting(2.0, seed=9)
    cfg = settings(f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(OpenAIUnavailableError, match=f"127.0.0.1:{port}") as exc:
        OpenAITranscriber(cfg).transcribe(audio)
    assert "cannot reach" in str(exc.value)
    assert len(accepted) == 2  # the first try and one retry


def test_upload_limit_too_small_for_a_second_is_a_configuration_error():
    tr = OpenAITranscriber(settings("http://127.0.0.1:9/v1", max_upload_mb=0.01))
    with pytest.raises(ConfigurationError, match="max_upload_mb"):
        tr.plan(Audio(np.zeros(SR * 5, dtype=np.float32)))


def test_built_by_the_pipeline(tmp_path):
    tr = build_transcriber(settings("http://127.0.0.1:9/v1"), tmp_path)
    assert isinstance(tr, OpenAITranscriber) and isinstance(tr, Transcriber)
    assert tr.name == "openai"


def test_punctuate_words():
    assert punctuate_words(["Hello", "world", "its", "me"], " Hello, world! It's me.") == [
        "Hello,", "world!", "It's", "me."]
    # a word the text does not contain stays as the API gave it; alignment carries on
    assert punctuate_words(["a", "zebra", "b"], "A, b.") == ["A,", "zebra", "b."]


def test_recordings_language_and_prompt_beat_the_settings(api):
    """A recording's facts (language, roster prompt) are what the service is sent."""
    audio, _ = meeting(4.0, seed=5)
    cfg = settings(api.base_url, language="de", initial_prompt="Teilnehmer: Jörg.")
    tr = OpenAITranscriber(cfg).transcribe(audio, language="ja", prompt="Attendees: Kenji Sato.")
    (r,) = api.requests
    assert r.field("language") == "ja" and r.field("prompt") == "Attendees: Kenji Sato."
    assert tr.language == "ja"
