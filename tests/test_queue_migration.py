"""The job queue's schema migration: a database written by the minutesd before
per-recording facts (schema version 2) is opened by today's code and works."""

from __future__ import annotations

import json
import sqlite3

from daemon.service.queue import DB_NAME, SCHEMA_VERSION, JobStore

# daemon/service/queue.py's SCHEMA at version 2 (git show 0e9a08d:daemon/service/queue.py),
# its CHECK lists written out as they were.
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256          TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('queued','running','done','failed','cancelled')),
    step            TEXT    NOT NULL CHECK (step IN ('received','transcribed','minutes_written','archived','done')),
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
    finished_at     REAL
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
    state           TEXT NOT NULL CHECK (state IN ('pending','running','done','failed')),
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


def _columns(path) -> dict[str, list[tuple]]:
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'"
                                           " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: [tuple(r[1:]) for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        db.close()


def _old_database(path) -> None:
    """What minutesd at schema version 2 left behind: its schema, and a job mid-way."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V2)
    db.execute("PRAGMA user_version=2")
    db.execute("INSERT INTO jobs (sha256, name, path, size, mtime_ns, state, step, attempts,"
               " next_attempt_at, meeting_date, transcript_json, created_at, updated_at)"
               " VALUES ('ab' || hex(randomblob(31)), 'old.mp3', '/in/old.mp3', 5, 7, 'queued',"
               " 'transcribed', 0, 0, '2024-05-14', '{}', 1, 1)")
    db.commit()
    db.close()


def test_version_2_database_is_migrated_and_works(tmp_path):
    old = tmp_path / "old" / DB_NAME
    old.parent.mkdir()
    _old_database(old)
    assert "facts_json" not in [c[0] for c in _columns(old)["jobs"]]

    # a reader (minutesd status) before the daemon migrated it: reads, facts as None
    ro = JobStore(old, readonly=True)
    (job,) = ro.jobs()
    assert (job.name, job.step, job.facts_json) == ("old.mp3", "transcribed", None)
    ro.close()

    store = JobStore(old)
    (job,) = store.jobs()
    assert (job.name, job.step, job.meeting_date) == ("old.mp3", "transcribed", "2024-05-14")
    facts = json.dumps({"facts": {"attendees": ["Grace Kim"]}, "error": None, "sidecars": []})
    store.add("cd" * 32, "new.mp3", "/in/new.mp3", 3, 4, None, None, facts)
    assert store.get("cd" * 32).facts_json == facts
    store.claim_next()  # the old job, resumed
    store.finish_step(job.sha256, "minutes_written", minutes_json="{}")
    assert store.get(job.sha256).step == "minutes_written"
    store.close()

    # the same tables and columns as a database made fresh by today's code
    fresh = tmp_path / "fresh" / DB_NAME
    JobStore(fresh).close()
    assert _columns(old) == _columns(fresh)
    for p in (old, fresh):
        db = sqlite3.connect(p)
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        db.close()
    JobStore(old).close()  # opening a migrated database again changes nothing
    assert _columns(old) == _columns(fresh)
