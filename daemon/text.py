"""Small text helpers: sentences for the rules that read transcripts, and text made safe to
show people (:func:`printable`) or to use in a file name (:func:`cut_utf8`)."""

from __future__ import annotations

import re

# What must never reach a terminal, a log line or a rendered document raw: C0 controls
# (ESC starts ANSI sequences that recolour, move the cursor or retitle the terminal), DEL,
# C1 controls (U+0080-U+009F; U+009B is a one-character CSI), and the bidi overrides and
# isolates that make "evil\u202egpj.exe" read as "evilexe.jpg".
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


# A title's full stop does not end a sentence: "Thank you, Mr. Range." is one.
_SENTENCE_END = re.compile(r"(?<=[.?!])(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bMx\.)(?<!\bDr\.)"
                           r"(?<!\bSt\.)(?<!\bProf\.)\s+")


def split_sentences(text: str) -> list[str]:
    """``text`` cut after ., ? and ! (what Whisper's punctuation gives), not after a title
    ("Mr.", "Dr.")."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: object) -> str:
    """``text`` for a human-facing surface (console log, ``status``, ``search``, ``doctor``,
    transcript.md and minutes.md): control characters, escape sequences and bidi overrides
    shown as ``\\xNN`` / ``\\uNNNN``, everything else unchanged. Newlines and tabs are
    escaped too, so a file name can never forge a second line. JSON outputs do not use
    this: json escapes are exact."""
    s = text if isinstance(text, str) else str(text)
    return _UNPRINTABLE.sub(_escape, s)


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits ``max_bytes``, cut at a
    character boundary (never half a multibyte character)."""
    if len(text.encode("utf-8", errors="surrogateescape")) <= max_bytes:
        return text
    used, end = 0, 0
    for i, ch in enumerate(text):
        used += len(ch.encode("utf-8", errors="surrogateescape"))  # undecodable bytes: 1
        if used > max_bytes:
            break
        end = i + 1
    return text[:end]
