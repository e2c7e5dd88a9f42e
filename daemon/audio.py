"""Decode any common audio or video file to 16 kHz mono float32, once, in memory.

PyAV bundles FFmpeg, so no external binary is run and no user-controlled path reaches a
shell. Every failure surfaces as :class:`AudioDecodeError`, which names the file and the
cause in words a user can act on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daemon.errors import PermanentError
from daemon.types import SAMPLE_RATE, Audio

# Shorter than this is not a meeting; it is almost always a broken or empty file.
MIN_DURATION_S = 0.1


class AudioDecodeError(PermanentError):
    """A recording could not be decoded. ``path`` and ``cause`` are kept for error reports."""

    def __init__(self, path: str | Path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot decode {self.path}: {cause}")


__all__ = ["SAMPLE_RATE", "Audio", "AudioDecodeError", "decode_audio", "probe_duration"]


def probe_duration(path: str | Path) -> float | None:
    """The recording's length in seconds from its container header (nothing decoded), or
    None when it cannot be read (then the caller decides without it)."""
    import av

    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if container.duration is not None:
                return container.duration / av.time_base
            streams = [s for s in container.streams if s.type == "audio"]
            if streams and streams[0].duration is not None and streams[0].time_base:
                return float(streams[0].duration * streams[0].time_base)
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return None


def decode_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> Audio:
    """Decode the first audio stream of ``path`` to mono float32 at ``sample_rate``."""
    import av  # PyAV: FFmpeg's decoders, in process

    p = Path(path)
    if not p.exists():
        raise AudioDecodeError(p, "file not found")
    if p.is_dir():
        raise AudioDecodeError(p, "is a directory, not a recording")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise AudioDecodeError(p, f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise AudioDecodeError(p, "empty file (0 bytes)")

    chunks: list[np.ndarray] = []
    try:
        container = av.open(str(p), mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        raise AudioDecodeError(p, "not an audio or video file FFmpeg recognises") from exc
    except PermissionError as exc:
        raise AudioDecodeError(p, "permission denied") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioDecodeError(p, f"cannot open: {exc}") from exc
    with container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise AudioDecodeError(p, f"no audio stream (found: {kinds})")
        stream = streams[0]
        stream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        decode_errors = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    # A damaged packet mid-file: skip it, as players do, but not endlessly.
                    decode_errors += 1
                    if decode_errors > 50:
                        raise
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise AudioDecodeError(p, f"corrupt or truncated audio: {exc}") from exc
            # Truncated at the end: keep what decoded, which is what the user recorded.
    if not chunks:
        raise AudioDecodeError(p, "no audio could be decoded (truncated or corrupt file)")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.all(np.isfinite(samples)):
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    audio = Audio(samples=np.clip(samples, -1.0, 1.0), sample_rate=sample_rate, source=str(p))
    if audio.duration_s < MIN_DURATION_S:
        raise AudioDecodeError(
            p, f"audio is only {audio.duration_s * 1000:.0f} ms long (zero-length or truncated)"
        )
    return audio
