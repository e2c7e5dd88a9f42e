"""Shared fixtures: audio made on the fly (tones with PyAV, speech with espeak-ng).

Nothing here reaches the network: HF_HUB_OFFLINE is set for the whole test session, so any
code path that tries the Hugging Face hub fails loudly instead of downloading; and
``tests/netguard`` (in this process, and on PYTHONPATH for every Python the tests start)
makes any attempt to resolve or connect to a real Google host raise. Attempts are logged and
the session fails at its end if there were any.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from daemon.privacy import lock_down  # noqa: E402

lock_down()

REPO = Path(__file__).resolve().parent.parent
NETGUARD = Path(__file__).resolve().parent / "netguard"


def _install_netguard() -> Path:
    import importlib.util
    import tempfile

    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(NETGUARD), os.environ.get("PYTHONPATH", "")) if p)
    if not os.environ.get("MINUTESD_NET_GUARD_LOG"):
        fd, log = tempfile.mkstemp(prefix="minutesd-netguard-", suffix=".log")
        os.close(fd)
        os.environ["MINUTESD_NET_GUARD_LOG"] = log
    spec = importlib.util.spec_from_file_location("minutesd_netguard",
                                                  NETGUARD / "sitecustomize.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return Path(os.environ["MINUTESD_NET_GUARD_LOG"])


NETGUARD_LOG = _install_netguard()


@pytest.fixture(scope="session", autouse=True)
def no_real_google_hosts():
    """The whole session (and every subprocess) must never try to reach Google."""
    yield
    tried = NETGUARD_LOG.read_text() if NETGUARD_LOG.exists() else ""
    assert not tried, "attempts to reach real Google hosts:\n" + tried
    NETGUARD_LOG.unlink(missing_ok=True)
SR = 16_000


def tone(seconds: float, freq: float = 440.0, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(
    path: Path,
    samples: np.ndarray,
    sr: int = SR,
    codec: str = "pcm_s16le",
    channels: int = 1,
    video: str | None = None,
    container_format: str | None = None,
) -> Path:
    """Encode mono float samples into ``path`` with PyAV (optionally with a video stream)."""
    import av

    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), mode="w", format=container_format) as out:
        v = None
        if video:
            v = out.add_stream(video, rate=10)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream(codec, rate=sr, options={"strict": "experimental"})
        a.layout = layout
        fmt = a.codec_context.codec.audio_formats[0].name
        frame_size = a.codec_context.frame_size or 1024
        data = np.tile(samples[None, :], (channels, 1))
        n_video = 0
        for i in range(0, data.shape[1], frame_size):
            chunk = data[:, i : i + frame_size]
            if chunk.shape[1] < frame_size and a.codec_context.frame_size:
                chunk = np.pad(chunk, ((0, 0), (0, frame_size - chunk.shape[1])))
            f = _audio_frame(chunk, layout)
            f.sample_rate = sr
            f.pts = i
            f.time_base = Fraction(1, sr)
            f = _convert(f, fmt, layout, sr)
            for p in a.encode(f):
                out.mux(p)
            while v is not None and n_video * sr / 10 <= i:
                img = av.VideoFrame.from_ndarray(
                    np.full((48, 64, 3), (n_video * 7) % 255, np.uint8), format="rgb24"
                ).reformat(format="yuv420p")
                img.pts = n_video
                for p in v.encode(img):
                    out.mux(p)
                n_video += 1
        for p in a.encode(None):
            out.mux(p)
        if v is not None:
            for p in v.encode(None):
                out.mux(p)
    return path


def _audio_frame(chunk: np.ndarray, layout: str):
    import av

    # packed float: shape (1, samples * channels), interleaved
    inter = np.ascontiguousarray(chunk.T.reshape(1, -1).astype(np.float32))
    return av.AudioFrame.from_ndarray(inter, format="flt", layout=layout)


def _convert(frame, fmt: str, layout: str, sr: int):
    import av

    if frame.format.name == fmt:
        return frame
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=sr)
    out = resampler.resample(frame)
    return out[0]


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str, path: Path, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng and return 16 kHz mono float32 samples."""
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
        check=True, capture_output=True,
    )
    from daemon.audio import decode_audio

    return decode_audio(path).samples


DIALOGUE = [
    ("A", "en-us+m3", 40, "Good morning everyone. Today we need to plan the garden project for the spring."),
    ("B", "en-gb+f4", 75, "Thanks. I have the budget here. We can spend about two thousand dollars on plants."),
    ("A", "en-us+m3", 40, "That sounds fine. Can you order the seeds and the tools by Friday?"),
    ("B", "en-gb+f4", 75, "Yes, I will order everything this week and send you the receipt."),
]


@pytest.fixture(scope="session")
def dialogue(tmp_path_factory) -> tuple[Path, list[tuple[str, float, float, str]]]:
    """A two-speaker espeak-ng conversation as mp3, with its ground truth turns."""
    if not have_espeak():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    d = tmp_path_factory.mktemp("dialogue")
    parts, truth, t = [], [], 0.5
    parts.append(np.zeros(int(0.5 * SR), np.float32))
    for i, (spk, voice, pitch, text) in enumerate(DIALOGUE):
        s = speak(text, voice, d / f"turn{i}.wav", pitch=pitch)
        parts.append(s * 0.8)
        truth.append((spk, t, t + len(s) / SR, text))
        t += len(s) / SR
        gap = np.zeros(int(0.6 * SR), np.float32)
        parts.append(gap)
        t += 0.6
    audio = np.concatenate(parts)
    mp3 = encode(d / "dialogue.mp3", audio, codec="libmp3lame")
    return mp3, truth


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


@pytest.fixture
def hangup_server():
    """A TCP server on 127.0.0.1 that accepts each connection and hangs up at once (a port
    that answers, but no API behind it). Yields ``(port, accepted)``; ``accepted`` lists the
    connections taken, so a test can count a client's tries."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted: list = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(conn)
            conn.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        th.join(2)
        listener.close()


# Tables that tests hand to the end of the run (e.g. the hostile-inbox table): (title, lines).
REPORTS: list[tuple[str, list[str]]] = []


def pytest_terminal_summary(terminalreporter) -> None:
    for title, lines in REPORTS:
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
