"""People's voice samples in one SQLite file (mode 0600: voiceprints are biometric data).

A person is a name; each of their samples is one L2-normalised embedding with the id of
the model that made it, where it came from ("enrolled FILE", "set in meeting X") and when.
Samples of different model ids are never compared: :meth:`ProfileStore.samples` returns
one model's only. ``meeting_voices`` keeps each archived meeting's speaker embeddings (not
yet anyone's), so that a name a person later sets in that meeting can become a sample
(``origin`` says which meeting and speaker, so a name set wrongly can be taken back). :meth:`ProfileStore.forget` deletes every sample of a person, with
SQLite's ``secure_delete`` on (freed pages are zeroed) and the write-ahead log truncated,
so no copy of the vectors stays behind in the file or beside it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daemon.sqlite import connect, immediate

SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    person INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    source TEXT NOT NULL,
    seconds REAL,
    created REAL NOT NULL,
    origin TEXT  -- "<meeting sha256>:<label>" for a sample learned from a meeting
);
CREATE INDEX IF NOT EXISTS samples_model ON samples(model_id);
CREATE TABLE IF NOT EXISTS meeting_voices (
    meeting TEXT NOT NULL,
    label TEXT NOT NULL,
    model_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (meeting, label)
);
"""


@dataclass
class Sample:
    id: int
    name: str
    model_id: str
    vector: np.ndarray
    source: str
    seconds: float | None
    created: float


@dataclass
class Person:
    name: str
    created: float
    samples: list[Sample]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "created": _iso(self.created),
            "samples": [{"model_id": s.model_id, "source": s.source, "seconds":
                         None if s.seconds is None else round(s.seconds, 1),
                         "created": _iso(s.created)} for s in self.samples],
        }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


def _private_file(path: Path) -> None:
    """Create ``path`` readable by its owner only (or make it so)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class ProfileStore:
    def __init__(self, path: Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly and not self.path.exists():
            self.db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self.db.executescript(SCHEMA)
        else:
            if not readonly:
                _private_file(self.path)  # before SQLite makes it; its -wal/-shm copy the mode
            self.db = connect(self.path, SCHEMA, readonly=readonly)
        self.db.execute("PRAGMA foreign_keys=ON")
        if not readonly:
            self.db.execute("PRAGMA secure_delete=ON")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_sample(self, name: str, vector: np.ndarray, model_id: str, source: str,
                   seconds: float | None = None, origin: str | None = None) -> int:
        name = " ".join(name.split())
        if not name:
            raise ValueError("a person needs a name")
        v = np.asarray(vector, dtype=np.float32).ravel()
        now = time.time()
        with immediate(self.db) as db:
            db.execute("INSERT OR IGNORE INTO people(name, created) VALUES (?, ?)", (name, now))
            (pid,) = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            cur = db.execute(
                "INSERT INTO samples(person, model_id, dim, vector, source, seconds, created,"
                " origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (pid, model_id, v.size, v.tobytes(), source, seconds, now, origin))
        return int(cur.lastrowid or 0)

    def _rows(self, where: str = "", args: tuple = ()) -> list[Sample]:
        rows = self.db.execute(
            "SELECT s.id, p.name, s.model_id, s.dim, s.vector, s.source, s.seconds, s.created "
            f"FROM samples s JOIN people p ON p.id = s.person {where} ORDER BY p.name, s.id",
            args).fetchall()
        return [Sample(r[0], r[1], r[2], np.frombuffer(r[4], dtype=np.float32, count=r[3]),
                       r[5], r[6], r[7]) for r in rows]

    def samples(self, model_id: str) -> list[Sample]:
        """Every sample made by ``model_id`` (and only those)."""
        return self._rows("WHERE s.model_id = ?", (model_id,))

    def people(self) -> list[Person]:
        out = {name: Person(name, created, []) for name, created in
               self.db.execute("SELECT name, created FROM people ORDER BY name")}
        for s in self._rows():
            out[s.name].samples.append(s)
        return list(out.values())

    # ------------------------------------------------------------------ meetings' voices

    def remember(self, meeting: str, embeddings: dict[str, np.ndarray], model_id: str) -> int:
        """Keep a meeting's speaker embeddings, so a name set later can be learned."""
        now = time.time()
        with immediate(self.db) as db:
            for label, vec in embeddings.items():
                v = np.asarray(vec, dtype=np.float32).ravel()
                db.execute("INSERT OR REPLACE INTO meeting_voices VALUES (?,?,?,?,?,?)",
                           (meeting, label, model_id, v.size, v.tobytes(), now))
        return len(embeddings)

    def meeting_voice(self, meeting: str, label: str) -> tuple[np.ndarray, str] | None:
        r = self.db.execute("SELECT dim, vector, model_id FROM meeting_voices WHERE meeting=?"
                            " AND label=?", (meeting, label)).fetchone()
        return (np.frombuffer(r[1], dtype=np.float32, count=r[0]), r[2]) if r else None

    def has_origin(self, name: str, origin: str) -> bool:
        return self.db.execute(
            "SELECT 1 FROM samples s JOIN people p ON p.id = s.person WHERE p.name=? AND"
            " s.origin=?", (" ".join(name.split()), origin)).fetchone() is not None

    def remove_origin(self, name: str, origin: str) -> int:
        """Take back the samples of ``name`` learned from ``origin`` (a wrong name)."""
        with immediate(self.db) as db:
            n = db.execute("DELETE FROM samples WHERE origin=? AND person IN (SELECT id FROM"
                           " people WHERE name=?)", (origin, " ".join(name.split()))).rowcount
            db.execute("DELETE FROM people WHERE NOT EXISTS (SELECT 1 FROM samples WHERE"
                       " samples.person = people.id)")
        if n:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(n)

    def forget(self, name: str) -> int:
        """Delete the person and every sample of theirs, and the meeting voices their samples
        were learned from; the number of samples deleted."""
        name = " ".join(name.split())
        with immediate(self.db) as db:
            row = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is None:
                return 0
            for (origin,) in db.execute("SELECT origin FROM samples WHERE person = ? AND"
                                        " origin IS NOT NULL", row).fetchall():
                meeting, _, label = origin.rpartition(":")
                db.execute("DELETE FROM meeting_voices WHERE meeting=? AND label=?",
                           (meeting, label))
            n = db.execute("DELETE FROM samples WHERE person = ?", row).rowcount
            db.execute("DELETE FROM people WHERE id = ?", row)
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(n)
