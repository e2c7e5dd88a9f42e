"""Opening the job queue at start: made once, never silently made again.

The queue is the daemon's memory of every recording it has seen (what is done, what is a
duplicate). When it is first created, a marker is written beside it
(``jobs.sqlite3.created``). If at a later start the queue is missing or empty (0 bytes: a
truncation, a restore gone wrong) while the marker says one was made here, minutesd does not
quietly start an empty queue, which would forget the history and the duplicates:

* the damaged file (with its ``-wal``/``-shm``) is renamed aside, ``jobs.sqlite3.lost-<time>``,
  never deleted;
* a new queue is made and every meeting of the local archive goes into it as a finished job
  (the archive's folders hold each meeting's sha256 and metadata, see
  :meth:`daemon.archive.local.LocalArchive.meetings_on_disk`), so the same recording dropped
  again is still a duplicate;
* the log says so loudly, with how many meetings came back, and the queue records a
  ``queue_rebuilt`` event.

What is lost is only what the archive cannot know: jobs still in progress (their recordings
are still in the inbox and are simply taken again) and pending Drive uploads (``minutesd
drive backfill`` queues them again; the Drive ledger keeps them exactly once).

A queue that is not empty but is not a database either (garbage, a half-written copy) is not
touched: the daemon refuses to start, naming the file and the way out.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path

from daemon.archive.base import Archive
from daemon.archive.local import LocalArchive
from daemon.errors import OperatorError, environment_problem
from daemon.output import atomic_write
from daemon.service.queue import CREATED_SUFFIX, JobStore


class QueueDamaged(OperatorError):
    """The job queue's file exists but is not a database."""


def marker_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + CREATED_SUFFIX)


def _set_aside(db_path: Path) -> Path | None:
    """Rename the lost queue (and its WAL) aside; returns the new name of the main file."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = None
    for suffix in ("", "-wal", "-shm"):
        p = db_path.with_name(db_path.name + suffix)
        if p.exists():
            dest = p.with_name(f"{db_path.name}.lost-{stamp}{suffix}")
            os.replace(p, dest)
            if suffix == "":
                aside = dest
    return aside


def open_queue(db_path: Path, archive: Archive, folders: dict[str, Path], log) -> JobStore:
    db_path = Path(db_path)
    marker = marker_path(db_path)
    lost = marker.exists() and (not db_path.exists() or db_path.stat().st_size == 0)
    aside = _set_aside(db_path) if lost else None
    try:
        store = JobStore(db_path)
    except sqlite3.DatabaseError as exc:
        if environment_problem(exc) is not None:
            raise
        raise QueueDamaged(
            f"the job queue {db_path} is damaged ({exc}); it is left as it is",
            fix=f"restore it from a backup, or move it aside (mv '{db_path}' "
                f"'{db_path}.bad'): minutesd then starts a new queue and rebuilds its "
                "history from the archive") from exc
    if not marker.exists():
        try:
            atomic_write(marker, json.dumps({"created_at": time.time(), "queue": str(db_path)})
                         + "\n")
        except OSError as exc:  # only the safeguard is missing; say so and go on
            log.warning("could not write the queue's marker", path=str(marker), error=str(exc))
    if lost:
        rebuild(store, archive, folders, log, aside)
    return store


def rebuild(store: JobStore, archive: Archive, folders: dict[str, Path], log,
            aside: Path | None) -> int:
    """Every meeting of the local archive into ``store`` as a finished job; how many."""
    what = "missing" if aside is None else "empty (0 bytes)"
    if not isinstance(archive, LocalArchive):
        log.error(f"THE JOB QUEUE WAS {what.upper()} and the {archive.name} archive has no "
                  "local folders to rebuild it from: the history is lost, recordings seen "
                  "before will be processed again", queue=str(store.path),
                  kept_aside=str(aside) if aside else None)
        store.note("queue_rebuilt", None, None, None,
                   {"recovered": 0, "kept_aside": str(aside) if aside else None})
        return 0
    processed = folders.get("processed")
    n = 0
    for m in archive.meetings_on_disk():
        original = processed / m["source"] if processed and m["source"] else None
        path = str(original) if original is not None and original.exists() else m["folder"]
        with contextlib.suppress(sqlite3.IntegrityError):
            n += store.add_archived(m["key"], m["source"] or Path(m["folder"]).name, path,
                                    m["folder"], m["title"], m["date"], m["time"])
    store.note("queue_rebuilt", None, None, None,
               {"recovered": n, "kept_aside": str(aside) if aside else None})
    log.error(f"THE JOB QUEUE WAS {what.upper()} although minutesd had created it: rebuilt "
              f"its history from the archive ({n} meetings recovered, so their recordings "
              "are still recognised as duplicates)", queue=str(store.path), recovered=n,
              archive=str(archive.root), kept_aside=str(aside) if aside else None)
    return n
