"""The one way minutesd opens its SQLite files (job queue, archive index, Drive ledger).

Autocommit connections (transactions are explicit, through :func:`immediate`), shared across
threads behind the caller's lock, WAL so readers in other processes (``minutesd status``)
see a consistent snapshot, and ``synchronous=FULL``: a recorded step is on disk even after a
power cut, not only after ``kill -9``. The schema is created in one transaction, and a
read-only open of a file that has no schema yet reads as empty.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path


def connect(path: Path, schema: str | None = None, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30,
                             isolation_level=None, check_same_thread=False)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=30000")
    if schema and not readonly:
        db.executescript(f"BEGIN IMMEDIATE;\n{schema}\nCOMMIT;")  # every table or none
    elif schema and not db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
        # A file whose writer has not written its schema yet (or was killed before it did)
        # holds nothing: a reader sees an empty store instead of "no such table".
        db.close()
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.executescript(schema)
    return db


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction, taken at once (no deadlock upgrading a read lock later)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
