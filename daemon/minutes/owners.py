"""Owners of action items are attendees (full name, first name, surname or a short form, or a
"Speaker N" label with a known name) or "unassigned": never an invented person."""

from __future__ import annotations

import re

from daemon.minutes.schema import UNASSIGNED


def match_person(text: str | None, people: list[str]) -> str | None:
    """The attendee ``text`` refers to (full name, first name or surname), else None."""
    if not text:
        return None
    t = text.strip().lower()
    t = re.sub(r"'s$", "", t)
    for p in people:
        if t == p.lower():
            return p
    tokens = set(re.findall(r"[a-z][a-z'-]+", t))
    hits = [p for p in people if tokens & {w.lower() for w in p.split() if len(w) > 1}]
    if not hits:  # a short form: "Sam" for Samuel, "Dave" is not matched (no prefix)
        hits = [p for p in people
                if any(w.lower().startswith(tok) for w in p.split() for tok in tokens
                       if len(tok) >= 3)]
    return hits[0] if len(hits) == 1 else None


def resolve_owner(owner: str, attendees: list[str], labels: dict[str, str]) -> str:
    """An attendee name, or "unassigned". ``labels`` maps "Speaker 2"/"SPEAKER_01" → name."""
    o = (owner or "").strip()
    if not o or o.lower() in (UNASSIGNED, "none", "nobody", "everyone", "all", "team"):
        return UNASSIGNED
    for label, name in labels.items():
        if o.lower() == label.lower():
            return name
    return match_person(o, attendees) or UNASSIGNED
