"""Every common format decodes to 16 kHz mono float32; bad files get one clear error."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import encode, tone

from daemon.audio import SAMPLE_RATE, AudioDecodeError, decode_audio


def dominant_hz(samples: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    spec = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / sr)[int(np.argmax(spec))])


FORMATS = [
    # name, codec, container format, input sample rate, channels, video codec
    ("a.wav", "pcm_s16le", None, 16000, 1, None),
    ("a.mp3", "libmp3lame", None, 44100, 2, None),
    ("a.m4a", "aac", "mp4", 48000, 2, None),
    ("a.aac", "aac", "adts", 44100, 1, None),
    ("a.flac", "flac", None, 22050, 1, None),
    ("a.ogg", "vorbis", "ogg", 44100, 2, None),
    ("a.opus", "libopus", "ogg", 48000, 1, None),
    ("v.mp4", "aac", "mp4", 44100, 2, "libx264"),
    ("v.mkv", "libopus", "matroska", 48000, 2, "mpeg4"),
    ("v.webm", "libopus", "webm", 48000, 1, "libvpx"),
]


@pytest.mark.parametrize("name,codec,fmt,sr,channels,video", FORMATS, ids=[f[0] for f in FORMATS])
def test_formats_decode_to_16k_mono(tmp_path, name, codec, fmt, sr, channels, video):
    src = tone(2.0, freq=440.0, sr=sr)
    path = encode(tmp_path / name, src, sr=sr, codec=codec, channels=channels, video=video,
                  container_format=fmt)
    audio = decode_audio(path)
    assert audio.sample_rate == SAMPLE_RATE
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    # Lossy codecs pad a little at the edges; the length must still be about 2 s.
    assert 1.9 <= audio.duration_s <= 2.2, audio.duration_s
    mid = audio.samples[int(0.5 * SAMPLE_RATE) : int(1.5 * SAMPLE_RATE)]
    assert abs(dominant_hz(mid) - 440.0) < 5.0
    assert 0.1 < float(np.max(np.abs(mid))) <= 1.0


def test_stereo_is_downmixed_not_one_channel(tmp_path):
    import av

    # Left channel 300 Hz, right channel 700 Hz: a mono mix must carry both.
    sr, n = 16000, 32000
    t = np.arange(n) / sr
    left = 0.3 * np.sin(2 * np.pi * 300 * t)
    right = 0.3 * np.sin(2 * np.pi * 700 * t)
    path = tmp_path / "st.wav"
    with av.open(str(path), "w") as out:
        s = out.add_stream("pcm_s16le", rate=sr)
        s.layout = "stereo"
        inter = np.stack([left, right], 1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray((inter * 32767).astype(np.int16), format="s16",
                                           layout="stereo")
        frame.sample_rate = sr
        for p in s.encode(frame):
            out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    spec = np.abs(np.fft.rfft(decode_audio(path).samples))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    for f in (300, 700):
        assert spec[np.argmin(np.abs(freqs - f))] > 0.2 * spec.max()


def test_missing_file(tmp_path):
    with pytest.raises(AudioDecodeError, match="file not found") as e:
        decode_audio(tmp_path / "nope.mp3")
    assert e.value.path.endswith("nope.mp3")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp3"
    p.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty file") as e:
        decode_audio(p)
    assert "empty.mp3" in str(e.value)


def test_not_audio(tmp_path):
    p = tmp_path / "notes.mp3"
    p.write_text("These are meeting notes, not a recording.\n" * 50)
    with pytest.raises(AudioDecodeError, match="not an audio or video file|no audio"):
        decode_audio(p)


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.m4a"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioDecodeError):
        decode_audio(p)


def test_directory(tmp_path):
    with pytest.raises(AudioDecodeError, match="directory"):
        decode_audio(tmp_path)


def test_truncated_header_only(tmp_path):
    full = encode(tmp_path / "full.flac", tone(2.0), codec="flac")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[:60])  # the header and nothing else
    with pytest.raises(AudioDecodeError) as e:
        decode_audio(cut)
    assert "cut.flac" in str(e.value)


def test_truncated_midway_keeps_what_decoded(tmp_path):
    full = encode(tmp_path / "full.mp3", tone(4.0), codec="libmp3lame")
    cut = tmp_path / "half.mp3"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    audio = decode_audio(cut)
    assert 1.5 < audio.duration_s < 2.6


def test_zero_length_audio(tmp_path):
    import wave

    p = tmp_path / "zero.wav"  # a valid WAV header announcing 0 samples
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    assert p.stat().st_size > 0
    with pytest.raises(AudioDecodeError, match="zero-length|no audio|truncated|empty"):
        decode_audio(p)


def test_video_without_audio(tmp_path):
    import av

    p = tmp_path / "silent.mp4"
    with av.open(str(p), "w") as out:
        v = out.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            img = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for pkt in v.encode(img.reformat(format="yuv420p")):
                out.mux(pkt)
        for pkt in v.encode(None):
            out.mux(pkt)
    with pytest.raises(AudioDecodeError, match="no audio stream.*video"):
        decode_audio(p)


def test_unreadable_file(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files regardless of permissions")
    p = encode(tmp_path / "locked.wav", tone(1.0))
    p.chmod(0)
    with pytest.raises(AudioDecodeError, match="permission"):
        decode_audio(p)
