"""A person corrects a meeting's speakers once: ``minutesd speakers MEETING --set/--merge``.

The archived meeting is re-rendered from its own JSON with the new names -- minutes (attendees,
talk time, action-item owners, who said each item's evidence, the names in the text and in
the quality flags), transcript, search index -- and its mirrors (Google Drive) are asked to
bring their copies up to date in place (the same Docs, updated, never a second pair). A name a person sets or confirms is also a voice sample for
that person (:class:`VoiceLearner`, when voice profiles are on); a name set wrongly and then
changed takes the wrong sample back.

Everything here works on an :class:`~daemon.archive.base.ArchiveRecord`; finding the meeting
and writing it back are the archive's (:meth:`daemon.archive.local.LocalArchive.update`).
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from daemon.archive.base import ArchiveRecord
from daemon.archive.local import LocalArchive, load_record
from daemon.errors import EXIT_NO_MATCH, EXIT_OK, EXIT_USAGE, OperatorError
from daemon.minutes.faithful import unsupported
from daemon.minutes.quality import unnamed_speakers
from daemon.render import hms
from daemon.service.queue import DB_NAME, JobStore
from daemon.settings import Settings
from daemon.text import printable
from daemon.types import (
    Evidence,
    Minutes,
    QualityFlag,
    Quote,
    Speaker,
    SpeakerTranscript,
    Topic,
)


class CorrectionError(OperatorError):
    """A correction that cannot be applied as asked (unknown label, ambiguous meeting)."""

    exit_code = EXIT_USAGE


class VoiceLearner(Protocol):
    """Voice profiles learn from names people set or confirm (``daemon.speakers``)."""

    def learn(self, meeting_key: str, label: str, name: str, source: str) -> bool: ...

    def unlearn(self, meeting_key: str, label: str, name: str) -> bool: ...


@dataclass
class Change:
    label: str
    old: str | None
    new: str | None
    kind: str  # "set", "confirm", "merge"


@dataclass
class SpeakerRow:
    label: str
    name: str | None
    talk_time_s: float
    evidence: list[Evidence] = field(default_factory=list)
    confidence: float | None = None


def display(rec: ArchiveRecord, label: str) -> str:
    """How the minutes call a speaker: the name, else "Speaker N" (its place in the list)."""
    for i, s in enumerate(rec.transcript.speakers):
        if s.id == label:
            return s.name or f"Speaker {i + 1}"
    return label


def rows(rec: ArchiveRecord) -> list[SpeakerRow]:
    return [SpeakerRow(s.id, s.name, s.talk_time_s, list(s.evidence), s.confidence)
            for s in sorted(rec.transcript.speakers, key=lambda s: -s.talk_time_s)]


def parse_pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        label, sep, value = item.partition("=")
        if not sep or not label.strip() or not value.strip():
            raise CorrectionError(f"{what} takes LABEL=VALUE (e.g. SPEAKER_01=\"Grace Kim\"), "
                                  f"not {item!r}")
        out.append((label.strip(), " ".join(value.split())))
    return out


def _label(rec: ArchiveRecord, label: str) -> str:
    """A speaker label as typed: ``SPEAKER_01``, ``speaker_01``, ``1``, or "Speaker 2"
    (the minutes' numbering) -- or the speaker's current name."""
    ids = [s.id for s in rec.transcript.speakers]
    if label in ids:
        return label
    low = label.lower()
    for s in rec.transcript.speakers:
        if s.id.lower() == low or (s.name and s.name.lower() == low):
            return s.id
    m = re.fullmatch(r"speaker (\d+)", low)
    if m and 1 <= int(m.group(1)) <= len(ids):
        return ids[int(m.group(1)) - 1]  # "Speaker 2": the minutes' numbering
    m = re.fullmatch(r"(?:speaker_?)?(\d+)", low)
    if m:
        for sid in ids:  # SPEAKER_01 for "1" or "speaker1"
            if re.fullmatch(rf"speaker_0*{int(m.group(1))}", sid.lower()):
                return sid
    raise CorrectionError(f"no speaker {label!r} in this meeting (its speakers: "
                          f"{', '.join(ids) or 'none'})")


def _rename(renames: dict[str, str], old: str | None, new: str) -> None:
    """Record old -> new, and make earlier renames that ended at ``old`` end at ``new``."""
    if not old:
        return
    for k, v in list(renames.items()):
        if v == old:
            renames[k] = new
    renames[old] = new


def _renamer(names: dict[str, str]):
    """Replace whole-word occurrences of old display names by new ones, longest first."""
    olds = sorted((o for o in names if o), key=len, reverse=True)
    if not olds:
        return lambda text: text
    pat = re.compile(r"(?<!\w)(" + "|".join(re.escape(o) for o in olds) + r")(?!\w)")
    return lambda text: pat.sub(lambda m: names[m.group(1)], text) if text else text


def correct(rec: ArchiveRecord, set_names: list[tuple[str, str]] | None = None,
            merges: list[tuple[str, str]] | None = None,
            confirm: list[str] | None = None) -> list[Change]:
    """Apply the corrections to ``rec`` in place; returns what changed. Merges first (``A=B``:
    A's speech becomes B's), then names, then confirmations."""
    changes: list[Change] = []
    t, m = rec.transcript, rec.minutes
    renames: dict[str, str] = {}  # old display text -> new
    for a, b in merges or []:
        la, lb = _label(rec, a), _label(rec, b)
        if la == lb:
            raise CorrectionError(f"{a} and {b} are the same speaker")
        sa = next(s for s in t.speakers if s.id == la)
        sb = next(s for s in t.speakers if s.id == lb)
        old_a, old_b = display(rec, la), display(rec, lb)
        for seg in t.segments:
            if seg.speaker == la:
                seg.speaker = lb
        for q in _quotes(m):
            if q.speaker == la:
                q.speaker = lb
        if sb.name is None and sa.name is not None:
            sb.name = sa.name
        sb.talk_time_s += sa.talk_time_s
        t.speakers = [s for s in t.speakers if s.id != la]
        m.speakers = [s for s in m.speakers if s.id != la]
        for s in m.speakers:
            if s.id == lb:
                s.name, s.talk_time_s = sb.name, sb.talk_time_s
        new_b = display(rec, lb)
        for old in (old_a, la, old_b, lb):
            _rename(renames, old, new_b)
        changes.append(Change(la, old_a, new_b, "merge"))
    for label, name in set_names or []:
        lab = _label(rec, label)
        sp = next(s for s in t.speakers if s.id == lab)
        old = display(rec, lab)
        if sp.name == name:
            changes.append(Change(lab, sp.name, name, "confirm"))
        else:
            for o in (old, lab, sp.name):
                _rename(renames, o, name)
            changes.append(Change(lab, sp.name, name, "set"))
        _set(sp, name)
        for s in m.speakers:
            if s.id == lab:
                _set(s, name)
    for label in confirm or []:
        lab = _label(rec, label)
        sp = next(s for s in t.speakers if s.id == lab)
        if not sp.name:
            raise CorrectionError(f"{lab} has no name to confirm; set one with --set "
                                  f"{lab}=\"Full Name\"")
        _set(sp, sp.name)
        for s in m.speakers:
            if s.id == lab:
                _set(s, sp.name)
        changes.append(Change(lab, sp.name, sp.name, "confirm"))
    rename = _renamer(renames)
    m.summary = rename(m.summary)
    m.discussion_points = [rename(p) for p in m.discussion_points]
    m.decisions = [rename(d) for d in m.decisions]
    m.topics = [Topic(rename(tp.title), [rename(x) for x in tp.points]) for tp in m.topics]
    for a in m.action_items:
        a.owner = renames.get(a.owner, rename(a.owner))
        a.task = rename(a.task)
    names = {s.id: s.name for s in t.speakers}
    for q in _quotes(m):  # who said the evidence: the speaker's name as it now is
        q.name = names.get(q.speaker, q.name)
    m.flags = _flags(m, t, rename)
    attendees = []
    for a in m.attendees:
        new = renames.get(a, a)
        if new not in attendees:
            attendees.append(new)
    # Every speaker who spoke is an attendee; unnamed ones by label, unless the recording's
    # attendee list already has as many people nobody's voice was given to (they are them).
    heard = [(s, s.name or f"Speaker {i + 1}") for i, s in enumerate(t.speakers)
             if s.talk_time_s > 0]
    spare = [a for a in attendees if a not in {s.name for s, _ in heard}
             and not re.fullmatch(r"Speaker \d+", a)]
    unnamed = [label for s, label in heard if not s.name]
    for s, label in heard:
        if label not in attendees and (s.name or len(unnamed) > len(spare)):
            attendees.append(label)
    m.attendees = attendees
    return changes


def _quotes(m: Minutes) -> list[Quote]:
    """Every quote the minutes' items rest on (action items', decisions')."""
    return [q for a in m.action_items for q in a.evidence] + [
        q for qs in m.decision_evidence for q in qs]


def _flags(m: Minutes, t: SpeakerTranscript, rename) -> list[QualityFlag]:
    """The quality flags after a correction: those about unnamed speakers and about names
    not in the transcript are made again (in their place: a name set may answer them), the
    others say the new names."""
    again = {"unnamed speaker": lambda: unnamed_speakers(t),
             "not in transcript": lambda: unsupported(m, t)}
    out: list[QualityFlag] = []
    done: set[str] = set()
    for f in m.flags:
        if f.kind in again:
            if f.kind not in done:
                out += again[f.kind]()
                done.add(f.kind)
        else:
            out.append(QualityFlag(f.kind, rename(f.message), f.start))
    return out


def _set(s: Speaker, name: str) -> None:
    s.name = name
    s.evidence = [Evidence("person", name, detail="set or confirmed by a person on "
                           + time.strftime("%Y-%m-%d %H:%M"))]
    s.confidence = 1.0


def learn(learner: VoiceLearner | None, rec: ArchiveRecord, changes: list[Change],
          folder: Path) -> list[str]:
    """Voice samples from what a person said: a name set or confirmed is learned; the name
    it replaced (a person's earlier, wrong setting) is taken back. Returns what happened."""
    if learner is None:
        return []
    done = []
    for c in changes:
        if c.kind == "merge" or not c.new:
            continue
        if c.kind == "set" and c.old and learner.unlearn(rec.key, c.label, c.old):
            done.append(f"removed the voice sample of {c.old} taken from {c.label}")
        if learner.learn(rec.key, c.label, c.new, f"set in meeting {folder.name}"):
            done.append(f"learned the voice of {c.new} from {c.label}")
    return done


# --------------------------------------------------------------------------- the command


def apply(settings: Settings, archive: LocalArchive, rec: ArchiveRecord, folder: Path,
          set_names: list[tuple[str, str]] | None = None,
          merges: list[tuple[str, str]] | None = None, confirm: list[str] | None = None,
          learner: VoiceLearner | None = None) -> tuple[list[Change], int, list[str]]:
    """What ``--set/--merge/--confirm`` do, for the command and the review page alike:
    correct the record, write it back (archive files and search index), queue the mirrors'
    updates (Drive Docs), learn the voices. Returns (changes, mirror updates queued, what
    the voice profiles learned)."""
    changes = correct(rec, set_names, merges, confirm)
    archive.update(rec)
    queued = _requeue_mirrors(settings, rec.key)
    learned = learn(learner, rec, changes, folder)
    return changes, queued, learned


def speakers_command(settings: Settings, ref: str, sets: list[str], merges: list[str],
                     confirms: list[str], as_json: bool = False,
                     learner: VoiceLearner | None = None) -> int:
    """``minutesd speakers MEETING [--set L=Name] [--merge A=B] [--confirm L] [--json]``."""
    archive = LocalArchive.from_settings(settings)
    if not archive.index_path.exists():
        print(f"minutesd: no archive yet at {archive.root}", file=sys.stderr)
        return EXIT_NO_MATCH
    try:
        found = archive.find(ref)
        if not found:
            print(f"minutesd: no archived meeting matches {printable(ref)!r} (a meeting "
                  "folder, its hash prefix, or words from it)", file=sys.stderr)
            return EXIT_NO_MATCH
        keys = {k for k, _ in found}
        if len(keys) > 1 and (sets or merges or confirms):
            print("minutesd: more than one meeting matches; name one by its folder or hash:",
                  file=sys.stderr)
            for k, f in found[:10]:
                print(f"  {k[:12]}  {printable(f)}", file=sys.stderr)
            return EXIT_USAGE
        key, folder = found[0]
        rec = load_record(Path(folder))
        changes: list[Change] = []
        queued, learned = 0, []
        if sets or merges or confirms:
            changes, queued, learned = apply(settings, archive, rec, Path(folder),
                                             parse_pairs(sets, "--set"),
                                             parse_pairs(merges, "--merge"), confirms, learner)
    except CorrectionError as exc:
        print(f"minutesd: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        archive.close()
    if as_json:
        print(json.dumps({"meeting": {"key": key, "folder": folder, "title": rec.minutes.title,
                                      "date": rec.date, "time": rec.time},
                          "speakers": [asdict(r) for r in rows(rec)],
                          "changes": [asdict(c) for c in changes],
                          "mirror_updates_queued": queued, "voice": learned},
                         indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"{rec.date} {rec.time or ''}  {printable(rec.minutes.title)}".replace("  ", " ", 1))
    print(f"    {printable(folder)}")
    for r in rows(rec):
        ev = "; ".join(_evidence_text(e) for e in r.evidence) or (
            "no evidence kept" if r.name else "not enough evidence for a name")
        sure = f" ({r.confidence:.2f})" if r.confidence is not None else ""
        print(f"  {r.label:<12} {hms(r.talk_time_s)}  {printable(r.name or '—'):<24} "
              f"{printable(ev)}{sure}")
    for c in changes:
        print(f"{c.kind}: {c.label} {printable(c.old or '—')} -> {printable(c.new or '—')}")
    if changes:
        print(f"archive, minutes and search index updated; {queued} mirror update(s) queued"
              + (" (the running daemon uploads them)" if queued else ""))
    for line in learned:
        print(line)
    return EXIT_OK


def _evidence_text(e: Evidence) -> str:
    if e.kind == "voice" and e.similarity is not None:
        return f"voice: similarity {e.similarity:.2f} to the profile of {e.profile or e.name}"
    return f"{e.kind}: {e.detail or e.name}"


def _requeue_mirrors(settings: Settings, key: str) -> int:
    db = settings.daemon.resolved_state_dir() / DB_NAME
    if not db.exists():
        return 0
    store = JobStore(db)
    try:
        return store.requeue_meeting_uploads(key)
    finally:
        store.close()
