"""Decode any common audio or video file to 16 kHz mono float32, once, in memory.

PyAV bundles FFmpeg, so no external binary is run and no user-controlled path reaches a
shell. Every failure surfaces as :class:`AudioDecodeError`, which names the file and the
cause in words a user can act on.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
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


__all__ = ["SAMPLE_RATE", "Audio", "AudioDecodeError", "decode_audio", "probe_duration",
           "recorded_at"]

# Container tags that say when a recording was made, best first: QuickTime's local time
# with its offset, MP4/MOV creation_time (UTC), ID3 recording time (TDRC, "date" in FFmpeg).
DATE_TAGS = ("com.apple.quicktime.creationdate", "creation_time", "date", "tdrc",
             "date_recorded", "tdor")
_TAG_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?"
                       r"\s*(Z|[+-]\d{2}:?\d{2})?$")
_EARLIEST_YEAR = 1990  # MP4 writers that know no time write 1904 or 1970


def parse_tag_time(value: str, now: datetime | None = None) -> tuple[str, str | None] | None:
    """(YYYY-MM-DD, HH:MM or None) of a container's date tag, in local time when the tag has
    a zone (MP4 creation_time is UTC); None for a year alone, a zero date or the future."""
    m = _TAG_TIME.match(value.strip())
    if not m:
        return None
    y, mo, d, hh, mm, ss, zone = m.groups()
    try:
        when = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
        if zone:
            z = zone.replace(":", "")
            offset = 0 if z == "Z" else (1 if z[0] == "+" else -1) * (
                int(z[1:3]) * 60 + int(z[3:5]))
            when = when.replace(tzinfo=timezone(timedelta(minutes=offset)))
            when = when.astimezone().replace(tzinfo=None)
    except ValueError:
        return None
    now = now or datetime.now()
    if when.year < _EARLIEST_YEAR or when > now + timedelta(days=1):
        return None
    return when.strftime("%Y-%m-%d"), (when.strftime("%H:%M") if hh else None)


def recorded_at(path: str | Path) -> tuple[str, str | None] | None:
    """When the recording was made, from its container's tags (PyAV); None if they do not
    say (or the file cannot be opened: decoding reports that)."""
    import av

    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, OSError):
        return None
    with container:
        tags = [{k.lower(): v for k, v in (container.metadata or {}).items()}]
        tags += [{k.lower(): v for k, v in (s.metadata or {}).items()}
                 for s in container.streams]
    for key in DATE_TAGS:
        for t in tags:
            if isinstance(t.get(key), str) and (found := parse_tag_time(t[key])):
                return found
    return None


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
