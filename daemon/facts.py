"""Per-recording facts: a sidecar file dropped beside a recording says what people know.

``standup.mp3`` is described by ``standup.meeting.yaml`` (or ``.meeting.yml`` /
``.meeting.json``): the recording's name without its extension, plus that suffix. Every
field is optional::

    title: Weekly design review
    date: 2026-11-30          # YYYY-MM-DD
    time: "14:00"             # HH:MM, 24 h
    language: en              # ISO 639-1 code: Whisper decodes in it, no detection
    attendees:                # full names: the roster for naming, Whisper's spelling
      - Grace Kim             #   hints, at most this many speakers for diarization, and
                              #   the minutes' attendee list
      - Tomas Novak
    speakers: 2               # the exact number of voices, when known

The inbox is hostile, so a sidecar is treated as untrusted input: it is read through the
same no-follow descriptors as recordings (:class:`daemon.confined.Confined`; a link or a
special file is refused, never followed), at most :data:`MAX_BYTES`, as UTF-8; YAML with the
safe loader, every value read as text (no booleans, numbers or dates guessed from the
spelling: ``time: 14:00`` is not the number 840), aliases refused (no "billion laughs");
unknown fields are refused too, so a misspelt ``atendees`` is an error rather than a silent
no-op. A sidecar that cannot be used fails its recording permanently with a reason naming the
file and the field (:class:`MeetingFactsError`): the facts are what the minutes will state as
certain (the date, who was there), so minutes made without them would look right and be wrong.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import date as _date
from pathlib import Path

import yaml

from daemon.confined import Confined, NotConfined
from daemon.errors import PermanentError
from daemon.types import MeetingInfo

MAX_BYTES = 64 * 1024
SUFFIXES = (".meeting.yaml", ".meeting.yml", ".meeting.json")
FIELDS = ("title", "date", "time", "language", "attendees", "speakers")
MAX_SPEAKERS = 32  # diarization.num_speakers' bound
MAX_ATTENDEES = 64
MAX_TEXT = 200
_FIX = ("correct the sidecar (format: README, 'Per-recording facts'), then drop the recording "
        "and its sidecar into the inbox again")


class MeetingFactsError(PermanentError):
    """A sidecar that cannot be used; the message names the file and what is wrong."""

    def __init__(self, message: str):
        super().__init__(message, fix=_FIX)


def is_sidecar(name: str) -> bool:
    """A facts file, never a recording (intake skips these names)."""
    return name.lower().endswith(SUFFIXES)


def candidates(recording: Path | str) -> list[Path]:
    """Where the sidecar of ``recording`` may be: ``<stem>.meeting.yaml|yml|json``."""
    p = Path(recording)
    return [p.with_name(p.stem + s) for s in SUFFIXES]


# --------------------------------------------------------------------------- parsing


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing aliases, and reading every scalar as text (null aside)."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a sidecar", mark)
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag == "tag:yaml.org,2002:null"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_LANG = re.compile(r"^[a-z]{2,3}$")


def _load(text: str, name: str):
    if name.lower().endswith(".json"):
        try:
            return json.loads(text, parse_constant=lambda c: _raise(f"{c} is not a value"))
        except ValueError as exc:
            raise MeetingFactsError(f"{name}: not valid JSON: {exc}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - the safe loader, restricted
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        what = getattr(exc, "problem", None) or str(exc)
        raise MeetingFactsError(f"{name}: not valid YAML{where}: {what}") from None


def _raise(msg: str):
    raise ValueError(msg)


def _text(name: str, field: str, v, limit: int = MAX_TEXT) -> str:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise MeetingFactsError(f"{name}: {field} must be text, not {type(v).__name__}")
    s = " ".join(str(v).split())
    if not s:
        raise MeetingFactsError(f"{name}: {field} is empty")
    if len(s) > limit:
        raise MeetingFactsError(f"{name}: {field} is longer than {limit} characters")
    if any(ord(c) < 32 for c in s):
        raise MeetingFactsError(f"{name}: {field} holds control characters")
    return s


def parse(data: bytes, name: str) -> MeetingInfo:
    """The facts in a sidecar's bytes; ``name`` (the file's name) is in every error."""
    if len(data) > MAX_BYTES:
        raise MeetingFactsError(f"{name}: larger than {MAX_BYTES // 1024} KiB; a sidecar "
                                "holds a few fields")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MeetingFactsError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    d = _load(text, name)
    if d is None:
        return MeetingInfo(source=name)  # an empty sidecar says nothing
    if not isinstance(d, dict):
        raise MeetingFactsError(f"{name}: must be a mapping of fields ({', '.join(FIELDS)}), "
                                f"not {type(d).__name__}")
    unknown = [str(k) for k in d if k not in FIELDS]
    if unknown:
        raise MeetingFactsError(f"{name}: unknown field(s) {', '.join(sorted(unknown))}; "
                                f"the fields are {', '.join(FIELDS)}")
    info = MeetingInfo(source=name)
    if d.get("title") is not None:
        info.title = _text(name, "title", d["title"])
    if d.get("date") is not None:
        v = _text(name, "date", d["date"])
        m = _DATE.match(v)
        try:
            if not m:
                raise ValueError
            _date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            raise MeetingFactsError(f"{name}: date {v!r} is not a date (YYYY-MM-DD)") from None
        info.date = v
    if d.get("time") is not None:
        v = _text(name, "time", d["time"])
        m = _TIME.match(v)
        if not m:
            raise MeetingFactsError(f"{name}: time {v!r} is not a time of day (HH:MM, 24 h)")
        info.time = f"{int(m[1]):02d}:{m[2]}"
    if d.get("language") is not None:
        v = _text(name, "language", d["language"]).lower()
        if not _LANG.match(v):
            raise MeetingFactsError(f"{name}: language {v!r} is not an ISO 639-1 code such as "
                                    "en, de, ja (leave it out to have it detected)")
        info.language = v
    if d.get("attendees") is not None:
        a = d["attendees"]
        if not isinstance(a, list):
            raise MeetingFactsError(f"{name}: attendees must be a list of full names")
        if len(a) > MAX_ATTENDEES:
            raise MeetingFactsError(f"{name}: more than {MAX_ATTENDEES} attendees")
        seen: set[str] = set()
        for i, person in enumerate(a, 1):
            who = _text(name, f"attendee {i}", person, 100)
            if not any(c.isalpha() for c in who):
                raise MeetingFactsError(f"{name}: attendee {i} ({who!r}) is not a name")
            if who.casefold() not in seen:
                seen.add(who.casefold())
                info.attendees.append(who)
    if d.get("speakers") is not None:
        v = d["speakers"]
        ok = not isinstance(v, bool) and isinstance(v, int | str) and str(v).strip().isdigit()
        n = int(str(v).strip()) if ok else 0
        if not 1 <= n <= MAX_SPEAKERS:
            raise MeetingFactsError(f"{name}: speakers must be a whole number from 1 to "
                                    f"{MAX_SPEAKERS}, not {v!r}")
        info.speakers = n
    return info


# --------------------------------------------------------------------------- finding and reading


@dataclass(frozen=True)
class Sidecar:
    path: Path
    stat: os.stat_result | None  # None: there, but a link or a special file


def present(confined: Confined, recording: Path | str) -> list[Sidecar]:
    """The sidecars beside ``recording`` that exist, looked at without following links."""
    out = []
    for p in candidates(recording):
        try:
            with confined.open(p) as (_fd, st):
                out.append(Sidecar(p, st))
        except NotConfined:
            out.append(Sidecar(p, None))
        except OSError:
            continue  # not there (or its folder is not reachable without a link)
    return out


def read(confined: Confined, recording: Path | str) -> tuple[MeetingInfo, Sidecar] | None:
    """The facts of ``recording`` from its sidecar, read through a no-follow descriptor;
    None when it has none. Raises :class:`MeetingFactsError` for a sidecar that cannot be
    used (two of them, a link, too large, invalid)."""
    found = present(confined, recording)
    if not found:
        return None
    if len(found) > 1:
        raise MeetingFactsError(f"{Path(recording).name} has {len(found)} sidecars ("
                                f"{', '.join(s.path.name for s in found)}); keep one")
    side = found[0]
    name = side.path.name
    try:
        with confined.open(side.path) as (fd, st):
            if st.st_size > MAX_BYTES:
                raise MeetingFactsError(f"{name}: larger than {MAX_BYTES // 1024} KiB; a "
                                        "sidecar holds a few fields")
            chunks, n = [], 0
            while n <= MAX_BYTES and (block := os.read(fd, MAX_BYTES + 1 - n)):
                chunks.append(block)
                n += len(block)
            data = b"".join(chunks)
    except NotConfined:
        raise MeetingFactsError(f"{name} is a link or a special file, not a sidecar (links "
                                "are never followed in the inbox); put the file itself "
                                "there") from None
    return parse(data, name), Sidecar(side.path, st)


# --------------------------------------------------------------------------- with the job


def record(info: MeetingInfo | None, sidecars: list[Path], error: str | None = None) -> str:
    """What the queue keeps of a recording's facts (``jobs.facts_json``): the facts, or the
    reason its sidecar cannot be used, and the sidecar files to file with the recording."""
    return json.dumps({"facts": info.to_json() if info else None, "error": error,
                       "sidecars": [str(p) for p in sidecars]}, ensure_ascii=False)


def sidecars_of(text: str | None) -> list[Path]:
    """The sidecar files recorded with a job (to file beside its recording)."""
    if not text:
        return []
    return [Path(p) for p in json.loads(text).get("sidecars", [])]


def from_record(text: str | None) -> MeetingInfo | None:
    """The facts recorded with a job; raises :class:`MeetingFactsError` with the reason
    recorded when its sidecar could not be used."""
    if not text:
        return None
    d = json.loads(text)
    if d.get("error"):
        raise MeetingFactsError(d["error"])
    return MeetingInfo.from_json(d["facts"]) if d.get("facts") else None
