"""The local archive (the embedded default)::

    archive/<YYYY>/<MM>/<YYYY-MM-DD HHMM> <title>/
        minutes.md  minutes.json  transcript.md  transcript.json  .minutesd.json
    archive/index.sqlite3        SQLite FTS5 index over minutes and transcripts

``store`` is idempotent per key (see :mod:`daemon.archive.base`). Inside it every stage is
restartable:

1. reserve the folder name in the index (state ``writing``): a retry reuses that name;
2. write the files into ``.staging/<key>/`` (each fsynced) with a ``.minutesd.json`` marker
   naming the key, then rename the whole folder into place (atomic: readers never see half
   a meeting);
3. index the text and mark the row ``done``, in one transaction.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daemon import sqlite
from daemon.archive.base import HIT_END, HIT_START, ArchiveRecord, SearchHit, folder_name
from daemon.errors import environment_problem
from daemon.faults import crash_point
from daemon.files import fsync_dir
from daemon.output import atomic_write, write_minutes, write_transcript
from daemon.types import Minutes, SpeakerTranscript

INDEX_NAME = "index.sqlite3"
MARKER = ".minutesd.json"
STAGING = ".staging"

_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str:
    """A user's words as a safe FTS5 query: every word must appear (any order); "quoted
    phrases" and hyphenated-words match as phrases; a trailing * matches a prefix."""
    parts: list[str] = []
    for m in re.finditer(r'"([^"]*)"|(\S+)', text):
        phrase, word = m.group(1), m.group(2)
        chunk = phrase if phrase is not None else word
        tokens = _WORD.findall(chunk)
        if not tokens:
            continue
        q = '"' + " ".join(tokens) + '"'
        if word is not None and word.endswith("*") and len(tokens) == 1:
            q += "*"
        parts.append(q)
    if not parts:
        raise ValueError(f"nothing to search for in {text!r}")
    return " ".join(parts)


def _minutes_text(m: Minutes) -> str:
    lines = [m.summary, *m.discussion_points, *m.decisions]
    lines += [f"{a.owner}: {a.task}" + (f" ({a.due})" if a.due else "") for a in m.action_items]
    lines += m.attendees
    return "\n".join(x for x in lines if x)


def _transcript_text(t: SpeakerTranscript) -> str:
    names = {s.id: (s.name or s.id) for s in t.speakers}
    return "\n".join(f"{names.get(s.speaker, s.speaker)}: {s.text}" for s in t.segments)


INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS meetings (
    key         TEXT PRIMARY KEY,
    folder      TEXT NOT NULL UNIQUE,
    date        TEXT NOT NULL,
    time        TEXT,
    title       TEXT NOT NULL,
    source      TEXT,
    state       TEXT NOT NULL CHECK (state IN ('writing', 'done')),
    archived_at REAL
);
CREATE VIRTUAL TABLE IF NOT EXISTS meetings_fts USING fts5(
    key UNINDEXED, title, minutes, transcript,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
"""


class LocalArchive:
    name = "local"

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None

    @classmethod
    def from_settings(cls, settings) -> LocalArchive:
        return cls(settings.archive.resolved_path(settings.daemon))

    # ------------------------------------------------------------------ index

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_NAME

    def db(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite.connect(self.index_path, INDEX_SCHEMA)
            db.row_factory = sqlite3.Row
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._lock, sqlite.immediate(self.db()) as db:
                yield db
        except sqlite3.OperationalError as exc:  # "disk is full" names no file: name ours
            env = environment_problem(exc)
            if env is None:
                raise
            raise env.at(str(self.root)) from exc

    # ------------------------------------------------------------------ Archive

    def lookup(self, key: str) -> str | None:
        with self._lock:
            r = self.db().execute("SELECT folder FROM meetings WHERE key=? AND state='done'",
                                  (key,)).fetchone()
        return str(self.root / r[0]) if r else None

    def _taken(self, db: sqlite3.Connection, folder: str) -> bool:
        if (self.root / folder).exists():
            return True
        return db.execute("SELECT 1 FROM meetings WHERE folder=?", (folder,)).fetchone() is not None

    def _choose(self, db: sqlite3.Connection, rec: ArchiveRecord) -> str:
        base = folder_name(rec.date, rec.time, rec.minutes.title)
        folder, n = base, 2
        while self._taken(db, folder):
            folder = f"{base} ({n})"
            n += 1
        return folder

    def _marker_key(self, folder: Path) -> str | None:
        try:
            return json.loads((folder / MARKER).read_text(encoding="utf-8")).get("key")
        except (OSError, ValueError):
            return None

    def _write(self, staging: Path, rec: ArchiveRecord) -> None:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        write_minutes(rec.minutes, staging, rec.time)
        write_transcript(rec.transcript, staging)
        atomic_write(staging / MARKER, json.dumps(
            {"key": rec.key, "source": rec.source_name, "date": rec.date, "time": rec.time,
             "archived_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2) + "\n")
        fsync_dir(staging)

    def store(self, rec: ArchiveRecord) -> str:
        with self._tx() as db:
            row = db.execute("SELECT folder, state FROM meetings WHERE key=?",
                             (rec.key,)).fetchone()
            if row is not None and row["state"] == "done":
                return str(self.root / row["folder"])  # stored before: exactly once
            if row is not None:
                folder = row["folder"]  # a reservation from an interrupted attempt
            else:
                folder = self._choose(db, rec)
                db.execute("INSERT INTO meetings (key, folder, date, time, title, source, state)"
                           " VALUES (?,?,?,?,?,?,'writing')",
                           (rec.key, folder, rec.date, rec.time, rec.minutes.title,
                            rec.source_name))
        crash_point("archive:reserved")
        final = self.root / folder
        if self._marker_key(final) != rec.key:  # not moved into place yet
            staging = self.root / STAGING / rec.key
            try:
                self._write(staging, rec)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)  # never leave half a folder behind
                raise
            crash_point("archive:staged")
            if final.exists():  # someone made a folder of that name meanwhile: pick another
                with self._tx() as db:
                    db.execute("DELETE FROM meetings WHERE key=?", (rec.key,))
                    folder = self._choose(db, rec)
                    db.execute("INSERT INTO meetings (key, folder, date, time, title, source,"
                               " state) VALUES (?,?,?,?,?,?,'writing')",
                               (rec.key, folder, rec.date, rec.time, rec.minutes.title,
                                rec.source_name))
                final = self.root / folder
            final.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(final)
            fsync_dir(final.parent)
            crash_point("archive:moved")
        with self._tx() as db:
            self._index(db, rec)
            db.execute("UPDATE meetings SET state='done', archived_at=? WHERE key=?",
                       (time.time(), rec.key))
        crash_point("archive:indexed")  # archived, but the job queue does not know yet
        return str(final)

    def update(self, rec: ArchiveRecord) -> str:
        """Write a stored meeting again with new content (a person corrected its speakers):
        the same folder, its files replaced one by one atomically, the search index
        renewed. The recording's key and the folder stay; returns the folder."""
        ref = self.lookup(rec.key)
        if ref is None:
            raise KeyError(f"no archived meeting with key {rec.key[:12]}")
        folder = Path(ref)
        write_minutes(rec.minutes, folder, rec.time)
        write_transcript(rec.transcript, folder)
        fsync_dir(folder)
        with self._tx() as db:
            self._index(db, rec)
            db.execute("UPDATE meetings SET title=? WHERE key=?", (rec.minutes.title, rec.key))
        return str(folder)

    @staticmethod
    def _index(db: sqlite3.Connection, rec: ArchiveRecord) -> None:
        """The meeting's words in the search index (replacing what was there)."""
        db.execute("DELETE FROM meetings_fts WHERE key=?", (rec.key,))
        db.execute("INSERT INTO meetings_fts (key, title, minutes, transcript) VALUES (?,?,?,?)",
                   (rec.key, rec.minutes.title, _minutes_text(rec.minutes),
                    _transcript_text(rec.transcript)))

    def find(self, ref: str, limit: int = 10) -> list[tuple[str, str]]:
        """Meetings a person means by ``ref``: (key, folder). A meeting folder (or a file in
        it), a key prefix (6+ hex digits), else a search (best hits first)."""
        p = Path(ref).expanduser()
        if p.exists():
            folder = p if p.is_dir() else p.parent
            key = self._marker_key(folder)
            return [(key, str(folder))] if key and self.lookup(key) else []
        if re.fullmatch(r"[0-9a-fA-F]{6,64}", ref):
            with self._lock:
                rows = self.db().execute(
                    "SELECT key, folder FROM meetings WHERE key LIKE ? AND state='done'",
                    (ref.lower() + "%",)).fetchall()
            if rows:
                return [(r["key"], str(self.root / r["folder"])) for r in rows]
        try:
            hits = self.search(ref, limit)
        except sqlite3.OperationalError:
            return []
        return [(h.key, h.ref) for h in hits]

    # ------------------------------------------------------------------ search and upkeep

    def search(self, query: str, limit: int = 10, raw: bool = False) -> list[SearchHit]:
        q = query if raw else fts_query(query)
        with self._lock:
            rows = self.db().execute(
                "SELECT m.key, m.folder, m.date, m.time, m.title, m.source,"
                f" snippet(meetings_fts, -1, '{HIT_START}', '{HIT_END}', '…', 18) AS snip,"
                " bm25(meetings_fts, 0.0, 10.0, 4.0, 1.0) AS score"
                " FROM meetings_fts JOIN meetings m ON m.key = meetings_fts.key"
                " WHERE meetings_fts MATCH ? AND m.state = 'done'"
                " ORDER BY score LIMIT ?", (q, limit)).fetchall()
        return [SearchHit(key=r["key"], date=r["date"], time=r["time"], title=r["title"],
                          snippet=" ".join(r["snip"].split()), ref=str(self.root / r["folder"]),
                          source=r["source"] or "", score=float(r["score"]))
                for r in rows]

    def listing(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Archived meetings, newest first (date, time): key, date, time, title, folder."""
        with self._lock:
            rows = self.db().execute(
                "SELECT key, folder, date, time, title FROM meetings WHERE state='done'"
                " ORDER BY date DESC, COALESCE(time, '') DESC, archived_at DESC"
                " LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return [{"key": r["key"], "date": r["date"], "time": r["time"], "title": r["title"],
                 "folder": str(self.root / r["folder"])} for r in rows]

    def count(self) -> int:
        with self._lock:
            return self.db().execute("SELECT COUNT(*) FROM meetings WHERE state='done'"
                                     ).fetchone()[0]

    def check(self) -> list[str]:
        """Problems between the index and the folders (for ``doctor``)."""
        problems = []
        with self._lock:
            rows = self.db().execute("SELECT key, folder, state FROM meetings").fetchall()
        for r in rows:
            f = self.root / r["folder"]
            if r["state"] == "done" and self._marker_key(f) != r["key"]:
                problems.append(f"indexed meeting missing or changed on disk: {f}")
        return problems

    def meetings_on_disk(self) -> list[dict[str, Any]]:
        """Every meeting folder, read from the folders themselves (their markers), not the
        index: key (the recording's sha256), source, date, time, title, folder."""
        out = []
        for m in sorted(self.root.glob(f"[0-9][0-9][0-9][0-9]/[0-9][0-9]/*/{MARKER}")):
            try:
                marker = json.loads(m.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(marker, dict) or not marker.get("key"):
                continue
            title = None
            with contextlib.suppress(OSError, ValueError, AttributeError):
                title = json.loads((m.parent / "minutes.json").read_text(encoding="utf-8")
                                   ).get("title")
            out.append({"key": marker["key"], "source": marker.get("source") or "",
                        "date": marker.get("date"), "time": marker.get("time"),
                        "title": title, "folder": str(m.parent)})
        return out

    def clean_staging(self) -> int:
        """Remove staging folders of keys no longer being written (after a crash)."""
        st = self.root / STAGING
        if not st.is_dir():
            return 0
        n = 0
        with self._lock:
            writing = {r[0] for r in self.db().execute(
                "SELECT key FROM meetings WHERE state='writing'")}
        for d in st.iterdir():
            if d.name not in writing:
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        return n


def load_record(folder: Path) -> ArchiveRecord:
    """A meeting back from its local archive folder (what mirrors upload)."""
    folder = Path(folder)
    marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    mdata = json.loads((folder / "minutes.json").read_text(encoding="utf-8"))
    tdata = json.loads((folder / "transcript.json").read_text(encoding="utf-8"))
    return ArchiveRecord(key=marker["key"], source_name=marker.get("source") or "",
                         minutes=Minutes.from_json(mdata),
                         transcript=SpeakerTranscript.from_json(tdata),
                         date=marker.get("date") or mdata.get("date"),
                         time=marker.get("time") or mdata.get("time"))
