"""What every archive shares: the meeting it stores, a search hit, the Protocols, and how a
meeting's folder (or Drive folder) is named.

``store`` must be idempotent per key (the recording's sha256): storing a key twice returns
the first reference and writes nothing. That is what makes archiving exactly-once even when
the daemon dies between an archive's commit and the job queue's: on resume the job asks
again and gets the same answer. The local archive is the *primary*; others (Google Drive)
are *mirrors*, fed from the local folder by the uploader (:mod:`daemon.service.uploads`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from daemon.text import cut_utf8
from daemon.types import Minutes, SpeakerTranscript

HIT_START, HIT_END = "\x02", "\x03"  # snippet markers, rendered by the caller


@dataclass
class ArchiveRecord:
    key: str  # sha256 of the recording
    source_name: str  # the file name as dropped
    minutes: Minutes
    transcript: SpeakerTranscript
    date: str  # YYYY-MM-DD
    time: str | None = None  # HH:MM
    audio_path: str | None = None  # the original recording (archives that keep it)


@dataclass
class SearchHit:
    key: str
    date: str
    time: str | None
    title: str
    snippet: str  # matches between HIT_START and HIT_END
    ref: str  # where it is (a folder for the local archive)
    source: str
    score: float

    def as_json(self, mark: tuple[str, str] = ("**", "**")) -> dict:
        d = asdict(self)
        d["snippet"] = render_snippet(self.snippet, *mark)
        d["score"] = round(self.score, 4)
        return d


@runtime_checkable
class Archive(Protocol):
    """Somewhere minutes are kept. ``store`` must be idempotent per ``record.key``."""

    name: str

    def store(self, record: ArchiveRecord) -> str:
        """Keep the meeting; return where it is. A key stored before returns the first ref."""
        ...

    def lookup(self, key: str) -> str | None:
        """Where the meeting with this key is, if it was stored."""
        ...


@runtime_checkable
class SearchableArchive(Archive, Protocol):
    def search(self, query: str, limit: int = 10, raw: bool = False) -> list[SearchHit]: ...


def render_snippet(snippet: str, start: str, end: str) -> str:
    return snippet.replace(HIT_START, start).replace(HIT_END, end)


_UNSAFE = re.compile('[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069/\\\\:*?"<>|]+')
TITLE_MAX_BYTES = 200  # "YYYY-MM-DD HHMM " before it and " (n)" after still fit in 255


def safe_title(title: str, max_len: int = 80, max_bytes: int = TITLE_MAX_BYTES) -> str:
    """A title fit for a folder name on Linux, macOS, Windows and Drive: no controls, bidi
    overrides or path characters; at most ``max_len`` characters and ``max_bytes`` bytes
    of UTF-8, cut at a word (or else a character) boundary."""
    t = _UNSAFE.sub(" ", title or "")
    t = " ".join(t.split()).strip(" .")
    if len(t) > max_len or len(t.encode("utf-8", "surrogateescape")) > max_bytes:
        cut = cut_utf8(t[:max_len], max_bytes)
        t = cut.rsplit(" ", 1)[0].rstrip(" .") or cut
    return t or "Meeting"


def folder_name(date: str, hhmm: str | None, title: str) -> str:
    """``<YYYY>/<MM>/<YYYY-MM-DD HHMM> <title>``; HHMM is 0000 when the time is unknown."""
    y, m = date[:4], date[5:7]
    clock = (hhmm or "00:00").replace(":", "")[:4]
    return f"{y}/{m}/{date} {clock} {safe_title(title)}"
