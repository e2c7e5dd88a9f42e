"""The durable job queue: one SQLite database (WAL) in the state folder, keyed by sha256.

A job is one recording's content; its steps are defined in :mod:`daemon.service.steps`
(the CHECK constraint below is made from that table). Each step's output is written in the
same transaction that records the step, so after a crash or ``kill -9`` the job resumes at
the step after the last one recorded, with that step's inputs at hand. ``attempts`` counts
starts of the current step that did not finish (errors *and* crashes, recorded before the
step runs), so a recording that crashes the process every time still reaches ``failed/``
after ``max_attempts`` instead of crash-looping the daemon. Problems that need the operator
(disk full, permissions, revoked credentials) and clean shutdowns give the attempt back.

The queue is ordered by arrival (``id``); a job waiting for a retry is skipped until due.

Mirrors (Google Drive): the step that queues uploads (``archived``) also queues one
``uploads`` row per configured mirror, in the same transaction. An upload runs after its job
has left the worker (the meeting is in the local archive, the original filed) and keeps its
own state: ``pending`` (with ``next_attempt_at`` for retries, and ``waiting='auth'`` while
credentials are missing or revoked), ``running``, ``done`` (with ``ref``, the link) or
``failed`` (quota, permissions: reported, retried only when asked: ``minutesd drive retry``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from daemon import sqlite
from daemon.errors import environment_problem
from daemon.service.steps import ARCHIVED_STEPS, FIRST, LAST, NEXT_STEP, STEP_NAMES

STATES = ("queued", "running", "done", "failed", "cancelled")
UPLOAD_STATES = ("pending", "running", "done", "failed")
DB_NAME = "jobs.sqlite3"
CREATED_SUFFIX = ".created"  # jobs.sqlite3.created: the queue was made here once (rebuild.py)
SCHEMA_VERSION = 3  # 2: uploads (mirrors); 3: jobs.facts_json (per-recording facts)

# How a database written by an older minutesd becomes this version: per version, the
# statements that take it there from the one before. A fresh database is made from SCHEMA
# alone, which already holds all of it (tests/test_queue_migration.py checks that a migrated
# database and a fresh one have the same tables and columns).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    3: ("ALTER TABLE jobs ADD COLUMN facts_json TEXT",),
}

def _one_of(values: tuple[str, ...]) -> str:
    return ",".join(f"'{v}'" for v in values)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256          TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ({_one_of(STATES)})),
    step            TEXT    NOT NULL CHECK (step IN ({_one_of(STEP_NAMES)})),
    current_step    TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL DEFAULT 0,
    last_error      TEXT,
    meeting_date    TEXT,
    meeting_time    TEXT,
    transcript_json TEXT,
    minutes_json    TEXT,
    title           TEXT,
    archive_ref     TEXT,
    dest_path       TEXT,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    finished_at     REAL,
    facts_json      TEXT    -- version 3 (last: where ALTER TABLE puts it in older files)
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, next_attempt_at, id);
CREATE INDEX IF NOT EXISTS jobs_file ON jobs (path, size, mtime_ns);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    sha256  TEXT,
    name    TEXT,
    kind    TEXT NOT NULL,
    step    TEXT,
    detail  TEXT
);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, id);
CREATE TABLE IF NOT EXISTS uploads (
    sha256          TEXT NOT NULL,
    target          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ({_one_of(UPLOAD_STATES)})),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    waiting         TEXT,
    last_error      TEXT,
    ref             TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    done_at         REAL,
    PRIMARY KEY (sha256, target)
);
CREATE INDEX IF NOT EXISTS uploads_queue ON uploads (target, state, next_attempt_at);
CREATE TABLE IF NOT EXISTS daemon (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    pid          INTEGER,
    started_at   REAL,
    heartbeat_at REAL,
    phase        TEXT,
    health       TEXT,
    info         TEXT
);
"""


@dataclass
class Job:
    id: int
    sha256: str
    name: str
    path: str
    size: int
    mtime_ns: int
    state: str
    step: str
    current_step: str | None
    attempts: int
    next_attempt_at: float
    last_error: str | None
    meeting_date: str | None
    meeting_time: str | None
    transcript_json: str | None
    minutes_json: str | None
    title: str | None
    archive_ref: str | None
    dest_path: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    facts_json: str | None = None  # the sidecar's facts ({"error": ...} if unusable)

    @property
    def short(self) -> str:
        return self.sha256[:12]

    @property
    def next_step(self) -> str | None:
        return NEXT_STEP.get(self.step)

    def summary(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if f.name not in ("transcript_json", "minutes_json", "facts_json")}
        return d


class JobStore:
    """Thread-safe (one connection behind a lock); readers in other processes (``minutesd
    status``) see a consistent snapshot thanks to WAL."""

    def __init__(self, path: Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self.db = sqlite.connect(self.path, SCHEMA, readonly=readonly)
        if not readonly:
            self._migrate()
        self.db.row_factory = sqlite3.Row
        self._cols = self._select_list()

    def _migrate(self) -> None:
        """Bring a database an older minutesd wrote up to :data:`SCHEMA_VERSION`, in one
        transaction per version (a fresh one, just made from SCHEMA, needs none)."""
        with self._lock:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                with sqlite.immediate(self.db) as db:
                    have = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
                    for stmt in MIGRATIONS.get(v, ()):
                        words = stmt.split()
                        if words[:4] == ["ALTER", "TABLE", "jobs", "ADD"] and words[5] in have:
                            continue  # made from this SCHEMA already (a version 0 file)
                        db.execute(stmt)
                    db.execute(f"PRAGMA user_version={v}")
            if version > SCHEMA_VERSION:
                return  # written by a newer minutesd: leave its version alone
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _select_list(self) -> str:
        """The job columns to select; one a reader's older database lacks reads as NULL
        (``minutesd status`` of a queue the running, older daemon has not migrated)."""
        have = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
        return ", ".join(f.name if f.name in have else f"NULL AS {f.name}" for f in fields(Job))

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction. SQLite's "disk is full" names no file: this one names the
        state folder, so the fix says where."""
        try:
            with self._lock, sqlite.immediate(self.db) as db:
                yield db
        except sqlite3.OperationalError as exc:
            env = environment_problem(exc)
            if env is None:
                raise
            raise env.at(str(self.path.parent)) from exc

    def _job(self, row: sqlite3.Row | None) -> Job | None:
        return Job(**dict(row)) if row is not None else None

    def _event(self, db: sqlite3.Connection, kind: str, sha: str | None, name: str | None,
               step: str | None = None, detail: Any = None) -> None:
        if detail is not None and not isinstance(detail, str):
            detail = json.dumps(detail, ensure_ascii=False)
        db.execute("INSERT INTO events (at, sha256, name, kind, step, detail) VALUES (?,?,?,?,?,?)",
                   (time.time(), sha, name, kind, step, detail))

    # ------------------------------------------------------------------ lookups

    def get(self, sha: str) -> Job | None:
        with self._lock:
            return self._job(self.db.execute(f"SELECT {self._cols} FROM jobs WHERE sha256=?",
                                             (sha,)).fetchone())

    def find_file(self, path: str, size: int, mtime_ns: int) -> Job | None:
        """The job that already took exactly this file (same path, size and mtime)."""
        with self._lock:
            return self._job(self.db.execute(
                f"SELECT {self._cols} FROM jobs WHERE path=? AND size=? AND mtime_ns=?",
                (path, size, mtime_ns)).fetchone())

    def jobs(self, where: str = "1", args: tuple = (), order: str = "id",
             limit: int = 1000) -> list[Job]:
        with self._lock:
            rows = self.db.execute(
                f"SELECT {self._cols} FROM jobs WHERE {where} ORDER BY {order} LIMIT ?",
                (*args, limit)).fetchall()
        return [Job(**dict(r)) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    def events(self, kind: str | None = None, limit: int = 20, sha: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM events WHERE 1", []
        if kind:
            q += " AND kind=?"
            args.append(kind)
        if sha:
            q += " AND sha256=?"
            args.append(sha)
        q += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [dict(r) for r in self.db.execute(q, args).fetchall()]

    def event_count(self, kind: str) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM events WHERE kind=?", (kind,)).fetchone()[0]

    # ------------------------------------------------------------------ changes

    def note(self, kind: str, sha: str | None, name: str | None, step: str | None = None,
             detail: Any = None) -> None:
        with self.tx() as db:
            self._event(db, kind, sha, name, step, detail)

    def add(self, sha: str, name: str, path: str, size: int, mtime_ns: int,
            meeting_date: str | None, meeting_time: str | None,
            facts_json: str | None = None) -> Job:
        now = time.time()
        with self.tx() as db:
            db.execute(
                "INSERT INTO jobs (sha256, name, path, size, mtime_ns, state, step, attempts,"
                " next_attempt_at, meeting_date, meeting_time, facts_json, created_at,"
                " updated_at) VALUES (?,?,?,?,?,'queued',?,0,0,?,?,?,?,?)",
                (sha, name, path, size, mtime_ns, FIRST, meeting_date, meeting_time, facts_json,
                 now, now))
            self._event(db, FIRST, sha, name, FIRST, {"path": path, "size": size})
        job = self.get(sha)
        assert job is not None
        return job

    def add_archived(self, sha: str, name: str, path: str, archive_ref: str,
                     title: str | None, meeting_date: str | None,
                     meeting_time: str | None) -> bool:
        """A meeting found in the archive while rebuilding a lost queue: a finished job, so
        the same content dropped again is recognised as a duplicate. False if known."""
        now = time.time()
        with self.tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO jobs (sha256, name, path, size, mtime_ns, state, step,"
                " attempts, next_attempt_at, meeting_date, meeting_time, title, archive_ref,"
                " created_at, updated_at, finished_at)"
                " VALUES (?,?,?,0,0,'done',?,0,0,?,?,?,?,?,?,?)",
                (sha, name, path, LAST, meeting_date, meeting_time, title, archive_ref,
                 now, now, now))
            if cur.rowcount:
                self._event(db, "rebuilt", sha, name, LAST, {"archive": archive_ref})
            return bool(cur.rowcount)

    def requeue(self, sha: str, name: str, path: str, size: int, mtime_ns: int,
                meeting_date: str | None, meeting_time: str | None,
                facts_json: str | None = None) -> Job:
        """A failed (or cancelled) recording dropped into the inbox again: try it again,
        from the last step it finished, or from the start if its sidecar's facts changed."""
        with self.tx() as db:
            db.execute(
                "UPDATE jobs SET state='queued', name=?, path=?, size=?, mtime_ns=?, attempts=0,"
                " next_attempt_at=0, current_step=NULL, dest_path=NULL, finished_at=NULL,"
                # other facts than last time: heard again (they steer diarization and ASR)
                " step=CASE WHEN facts_json IS ? THEN step ELSE ? END,"
                " meeting_date=?, meeting_time=?, facts_json=?, updated_at=? WHERE sha256=?",
                (name, path, size, mtime_ns, facts_json, FIRST, meeting_date, meeting_time,
                 facts_json, time.time(), sha))
            self._event(db, "requeued", sha, name, None, {"path": path})
        job = self.get(sha)
        assert job is not None
        return job

    def claim_next(self, now: float | None = None) -> Job | None:
        """The oldest queued job that is due, marked running; None if there is none."""
        now = time.time() if now is None else now
        with self.tx() as db:
            row = db.execute(
                f"SELECT {self._cols} FROM jobs WHERE state='queued' AND next_attempt_at<=?"
                " ORDER BY id LIMIT 1", (now,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state='running', updated_at=? WHERE sha256=?",
                       (time.time(), row["sha256"]))
        job = self.get(row["sha256"])
        return job

    def next_due_in(self, now: float | None = None) -> float | None:
        now = time.time() if now is None else now
        with self._lock:
            r = self.db.execute("SELECT MIN(next_attempt_at) FROM jobs WHERE state='queued'"
                                ).fetchone()[0]
        return None if r is None else max(0.0, r - now)

    def begin_step(self, sha: str, step: str) -> int:
        """Record that ``step`` starts (before it runs, so a crash counts); the attempt number."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET attempts=attempts+1, current_step=?, updated_at=?"
                       " WHERE sha256=?", (step, time.time(), sha))
            return db.execute("SELECT attempts FROM jobs WHERE sha256=?", (sha,)).fetchone()[0]

    def finish_step(self, sha: str, step: str, detail: Any = None,
                    uploads: tuple[str, ...] | list[str] = (), **values: Any) -> None:
        """Record ``step`` as done together with its outputs (and the uploads to mirrors it
        calls for), in one transaction."""
        allowed = {"transcript_json", "minutes_json", "title", "archive_ref", "dest_path",
                   "path", "meeting_date", "meeting_time"}
        assert set(values) <= allowed, set(values) - allowed
        now = time.time()
        sets = ", ".join(f"{k}=?" for k in values)
        extra = (", " + sets) if sets else ""
        done = step == LAST
        with self.tx() as db:
            db.execute(
                f"UPDATE jobs SET step=?, attempts=0, current_step=NULL, last_error=NULL,"
                f" next_attempt_at=0, updated_at=?{extra}"
                + (", state='done', finished_at=?, transcript_json=NULL, minutes_json=NULL"
                   if done else "")
                + " WHERE sha256=?",
                (step, now, *values.values(), *((now,) if done else ()), sha))
            name = db.execute("SELECT name FROM jobs WHERE sha256=?", (sha,)).fetchone()[0]
            self._event(db, step, sha, name, step, detail)
            for target in uploads:
                db.execute("INSERT OR IGNORE INTO uploads (sha256, target, state, created_at,"
                           " updated_at) VALUES (?,?,'pending',?,?)", (sha, target, now, now))

    def update_stat(self, sha: str, size: int, mtime_ns: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE jobs SET size=?, mtime_ns=?, updated_at=? WHERE sha256=?",
                       (size, mtime_ns, time.time(), sha))

    def set_dest(self, sha: str, dest: str | None) -> None:
        with self.tx() as db:
            db.execute("UPDATE jobs SET dest_path=?, updated_at=? WHERE sha256=?",
                       (dest, time.time(), sha))

    def retry_later(self, sha: str, step: str, error: str, delay_s: float) -> None:
        with self.tx() as db:
            db.execute("UPDATE jobs SET state='queued', current_step=NULL, last_error=?,"
                       " next_attempt_at=?, updated_at=? WHERE sha256=?",
                       (error, time.time() + delay_s, time.time(), sha))
            name = db.execute("SELECT name FROM jobs WHERE sha256=?", (sha,)).fetchone()[0]
            self._event(db, "retry", sha, name, step, {"error": error, "in_s": round(delay_s, 1)})

    def wait_environment(self, sha: str, step: str, error: str, delay_s: float) -> None:
        """Disk full / permission denied: the attempt does not count; retry after the delay."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET state='queued', current_step=NULL, last_error=?,"
                       " attempts=MAX(0, attempts-1), next_attempt_at=?, updated_at=?"
                       " WHERE sha256=?", (error, time.time() + delay_s, time.time(), sha))
            name = db.execute("SELECT name FROM jobs WHERE sha256=?", (sha,)).fetchone()[0]
            self._event(db, "environment", sha, name, step, {"error": error})

    def release(self, sha: str) -> None:
        """Back to the queue without counting the attempt (clean shutdown mid-step)."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET state='queued', current_step=NULL,"
                       " attempts=MAX(0, attempts-1), updated_at=? WHERE sha256=?"
                       " AND state='running'", (time.time(), sha))

    def fail(self, sha: str, step: str, error: str, path: str | None,
             detail: Any = None) -> None:
        now = time.time()
        with self.tx() as db:
            db.execute("UPDATE jobs SET state='failed', current_step=NULL, last_error=?,"
                       " path=COALESCE(?, path), finished_at=?, updated_at=? WHERE sha256=?",
                       (error, path, now, now, sha))
            name = db.execute("SELECT name FROM jobs WHERE sha256=?", (sha,)).fetchone()[0]
            self._event(db, "failed", sha, name, step, detail or {"error": error})

    def finish_move(self, sha: str, dest: str) -> None:
        """The original now lives at ``dest`` (failed/): record it."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET path=?, dest_path=?, updated_at=? WHERE sha256=?",
                       (dest, dest, time.time(), sha))

    def cancel(self, sha: str, reason: str) -> None:
        now = time.time()
        with self.tx() as db:
            db.execute("UPDATE jobs SET state='cancelled', current_step=NULL, last_error=?,"
                       " finished_at=?, updated_at=? WHERE sha256=?", (reason, now, now, sha))
            name = db.execute("SELECT name FROM jobs WHERE sha256=?", (sha,)).fetchone()[0]
            self._event(db, "cancelled", sha, name, None, {"reason": reason})

    def recover(self) -> list[Job]:
        """At start: jobs left 'running' by a process that died. Back to the queue (the
        interrupted attempt stays counted); returns them."""
        with self.tx() as db:
            rows = db.execute(f"SELECT {self._cols} FROM jobs WHERE state='running' ORDER BY id"
                              ).fetchall()
            for r in rows:
                db.execute("UPDATE jobs SET state='queued', updated_at=? WHERE sha256=?",
                           (time.time(), r["sha256"]))
                self._event(db, "recovered", r["sha256"], r["name"], r["current_step"],
                            {"attempts": r["attempts"], "last_step": r["step"]})
        return [Job(**dict(r)) for r in rows]

    # ------------------------------------------------------------------ uploads to mirrors

    def uploads(self, where: str = "1", args: tuple = (), limit: int = 1000) -> list[dict]:
        with self._lock:
            rows = self.db.execute(
                "SELECT u.*, j.name AS name, j.title AS title FROM uploads u"
                " LEFT JOIN jobs j ON j.sha256 = u.sha256"
                f" WHERE {where} ORDER BY u.created_at LIMIT ?", (*args, limit)).fetchall()
        return [dict(r) for r in rows]

    def upload_counts(self, target: str | None = None) -> dict[str, int]:
        q, args = "SELECT state, COUNT(*) FROM uploads", ()
        if target:
            q, args = q + " WHERE target=?", (target,)
        with self._lock:
            rows = self.db.execute(q + " GROUP BY state", args).fetchall()
        out = dict.fromkeys(UPLOAD_STATES, 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    def claim_upload(self, target: str, now: float | None = None) -> dict | None:
        """The oldest due upload whose job is out of the workers' hands, marked running."""
        now = time.time() if now is None else now
        with self.tx() as db:
            row = db.execute(
                "SELECT u.sha256 FROM uploads u JOIN jobs j ON j.sha256 = u.sha256"
                " WHERE u.target=? AND u.state='pending' AND u.next_attempt_at<=?"
                " AND j.state != 'running' AND j.archive_ref IS NOT NULL"
                " ORDER BY u.created_at LIMIT 1", (target, now)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE uploads SET state='running', attempts=attempts+1, updated_at=?"
                       " WHERE sha256=? AND target=?", (now, row[0], target))
        return self.uploads("u.sha256=? AND u.target=?", (row[0], target))[0]

    def _upload_event(self, db, kind: str, sha: str, target: str, detail: Any) -> None:
        r = db.execute("SELECT name FROM jobs WHERE sha256=?", (sha,)).fetchone()
        self._event(db, kind, sha, r[0] if r else None, target, detail)

    def upload_done(self, sha: str, target: str, ref: str) -> None:
        now = time.time()
        with self.tx() as db:
            db.execute("UPDATE uploads SET state='done', ref=?, waiting=NULL, last_error=NULL,"
                       " next_attempt_at=0, done_at=?, updated_at=? WHERE sha256=? AND target=?",
                       (ref, now, now, sha, target))
            self._upload_event(db, "uploaded", sha, target, {"ref": ref})

    def upload_retry(self, sha: str, target: str, error: str, delay_s: float,
                     waiting: str | None = None) -> None:
        """Back to pending, due in ``delay_s``. ``waiting='auth'``: not the upload's fault,
        so the attempt is given back."""
        now = time.time()
        with self.tx() as db:
            db.execute("UPDATE uploads SET state='pending', last_error=?, waiting=?,"
                       " next_attempt_at=?, updated_at=?,"
                       " attempts=CASE WHEN ? IS NULL THEN attempts ELSE MAX(0, attempts-1) END"
                       " WHERE sha256=? AND target=?",
                       (error, waiting, now + delay_s, now, waiting, sha, target))
            self._upload_event(db, "upload_wait" if waiting else "upload_retry", sha, target,
                               {"error": error, "in_s": round(delay_s, 1)})

    def upload_failed(self, sha: str, target: str, error: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE uploads SET state='failed', last_error=?, waiting=NULL,"
                       " updated_at=? WHERE sha256=? AND target=?",
                       (error, time.time(), sha, target))
            self._upload_event(db, "upload_failed", sha, target, {"error": error})

    def uploads_waiting(self, target: str, why: str | None, problem: str | None = None) -> None:
        """Mark every pending upload as waiting for ``why`` (e.g. 'auth'), or clear it."""
        with self.tx() as db:
            if why is None:
                db.execute("UPDATE uploads SET waiting=NULL WHERE target=? AND waiting IS NOT"
                           " NULL", (target,))
            else:
                db.execute("UPDATE uploads SET waiting=?, last_error=? WHERE target=? AND"
                           " state='pending'", (why, problem, target))

    def requeue_uploads(self, target: str | None = None, failed: bool = True) -> int:
        """``minutesd drive retry``: failed uploads back to pending, waiting ones due now."""
        q = ("UPDATE uploads SET state='pending', attempts=0, next_attempt_at=0, updated_at=?"
             " WHERE (state='failed' OR state='pending')" if failed else
             "UPDATE uploads SET next_attempt_at=0, updated_at=? WHERE state='pending'")
        args: tuple = (time.time(),)
        if target:
            q += " AND target=?"
            args += (target,)
        with self.tx() as db:
            return db.execute(q, args).rowcount

    def requeue_meeting_uploads(self, sha: str) -> int:
        """A meeting was corrected in the local archive: its mirrors bring their copies up
        to date (every upload of it pending again, due now). How many."""
        with self.tx() as db:
            n = db.execute("UPDATE uploads SET state='pending', attempts=0, next_attempt_at=0,"
                           " waiting=NULL, updated_at=? WHERE sha256=? AND state != 'running'",
                           (time.time(), sha)).rowcount
            if n:
                name = db.execute("SELECT name FROM jobs WHERE sha256=?", (sha,)).fetchone()
                self._event(db, "corrected", sha, name[0] if name else None, None,
                            {"uploads": n})
        return n

    def backfill_uploads(self, target: str) -> int:
        """Queue uploads for meetings archived before ``target`` was configured."""
        now = time.time()
        with self.tx() as db:
            return db.execute(
                "INSERT OR IGNORE INTO uploads (sha256, target, state, created_at, updated_at)"
                " SELECT sha256, ?, 'pending', ?, ? FROM jobs WHERE archive_ref IS NOT NULL"
                f" AND step IN ({_one_of(ARCHIVED_STEPS)}) ORDER BY id", (target, now, now)
            ).rowcount

    def recover_uploads(self) -> int:
        """At start: uploads a dead process left running go back to pending."""
        with self.tx() as db:
            return db.execute("UPDATE uploads SET state='pending', updated_at=? WHERE"
                              " state='running'", (time.time(),)).rowcount

    def release_upload(self, sha: str, target: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE uploads SET state='pending', attempts=MAX(0, attempts-1),"
                       " updated_at=? WHERE sha256=? AND target=? AND state='running'",
                       (time.time(), sha, target))

    # ------------------------------------------------------------------ the daemon's own row

    def heartbeat(self, phase: str, health: str | None = None,
                  info: dict[str, Any] | None = None, started: bool = False) -> None:
        now = time.time()
        with self.tx() as db:
            if started:
                db.execute("INSERT OR REPLACE INTO daemon (id, pid, started_at, heartbeat_at,"
                           " phase, health, info) VALUES (1,?,?,?,?,?,?)",
                           (os.getpid(), now, now, phase, health,
                            json.dumps(info or {}, ensure_ascii=False)))
            else:
                db.execute("UPDATE daemon SET heartbeat_at=?, phase=?, health=?,"
                           " info=COALESCE(?, info) WHERE id=1",
                           (now, phase, health,
                            json.dumps(info, ensure_ascii=False) if info is not None else None))

    def daemon_info(self) -> dict[str, Any] | None:
        with self._lock:
            r = self.db.execute("SELECT * FROM daemon WHERE id=1").fetchone()
        if r is None:
            return None
        d = dict(r)
        d["info"] = json.loads(d["info"]) if d.get("info") else {}
        return d
