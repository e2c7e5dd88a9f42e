"""Small text helpers shared by the rules that read transcripts."""

from __future__ import annotations

import re


def split_sentences(text: str) -> list[str]:
    """``text`` cut after ., ? and ! (what Whisper's punctuation gives)."""
    return [s.strip() for s in re.split(r"(?<=[.?!])\s+", text) if s.strip()]
