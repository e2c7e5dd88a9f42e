"""The uploader: one thread per mirror archive (Google Drive) that copies archived meetings
from the local archive, at its own pace, so a slow or unreachable Drive never holds up the
inbox.

Each upload is a row in the job queue's ``uploads`` table (queued with the ``archived``
step). Outcomes:

* done: the link is recorded (``minutesd status`` shows it);
* transient (rate limits, 5xx, network, after the client's own retries): pending again, due
  after ``retry_backoff_s`` doubling up to ``retry_backoff_max_s``; never given up;
* needs the operator -- credentials missing, expired or revoked: every pending upload
  *waits* (``waiting='auth'``, attempts not counted); the uploader looks again when the
  token file changes (a new ``minutesd auth google``) or every ``AUTH_RECHECK_S``;
* permanent (storage quota, permissions, a wrong folder): failed, reported with the fix;
  ``minutesd drive retry`` queues them again.

A ``kill -9`` mid-upload leaves the row running; the next start puts it back to pending and
the archive's own idempotency (ledger + appProperties lookup) makes the retry a no-op for
whatever already reached Drive.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from daemon.archive.base import Archive
from daemon.archive.local import load_record
from daemon.errors import (
    CredentialsError,
    Handling,
    MinutesdError,
    describe,
    handling_of,
    operator_problem,
)
from daemon.faults import crash_point
from daemon.service.health import backoff
from daemon.service.queue import JobStore
from daemon.service.spool import Spool

AUTH_RECHECK_S = 300.0
OPERATOR_RECHECK_S = 60.0


class Uploader(threading.Thread):
    def __init__(self, archive: Archive, store: JobStore, stop_event: threading.Event, log,
                 spool: Spool | None = None):
        super().__init__(name=f"minutesd-upload-{archive.name}", daemon=True)
        self.archive = archive
        self.spool = spool
        self.store = store
        self.stop_event = stop_event
        self.target = archive.name
        cfg = getattr(archive, "cfg", None)
        self.backoff_s = getattr(cfg, "retry_backoff_s", 30.0)
        self.backoff_max_s = getattr(cfg, "retry_backoff_max_s", 3600.0)
        self.log = log.bind(archive=self.target)
        self.sha: str | None = None
        self.auth_problem: str | None = None  # what every upload waits for, while it lasts
        self._auth_since = 0.0
        self._auth_marked = 0.0

    def backoff(self, attempt: int) -> float:
        return backoff(attempt, self.backoff_s, self.backoff_max_s)

    def _auth_changed(self) -> bool:
        auth = getattr(self.archive, "auth", None)
        return bool(auth and auth.changed_on_disk())

    def run(self) -> None:
        store = self.store
        while not self.stop_event.is_set():
            now = time.monotonic()
            if self.auth_problem is not None:
                if not (self._auth_changed() or now - self._auth_since >= AUTH_RECHECK_S):
                    if now - self._auth_marked >= 5:  # new uploads wait too, with the reason
                        self._auth_marked = now
                        with contextlib.suppress(Exception):
                            store.uploads_waiting(self.target, "auth", self.auth_problem)
                    self.stop_event.wait(1.0)
                    continue
                self.log.info("google credentials changed or due for a check; trying again")
                # Assume they work until an upload says otherwise (it sets this again then).
                self.auth_problem = None
                with contextlib.suppress(Exception):
                    store.requeue_uploads(self.target, failed=False)
                    store.uploads_waiting(self.target, None)
            try:
                row = store.claim_upload(self.target)
            except Exception as exc:  # the queue is unwell (disk full...): wait
                self.log.error("cannot read the upload queue", error=describe(exc))
                self.stop_event.wait(5.0)
                continue
            if row is None:
                self.stop_event.wait(1.0)
                continue
            self.sha = row["sha256"]
            try:
                self.upload(row)
            except Exception as exc:  # never let the uploader die
                self.log.error("upload interrupted", job=row["sha256"][:12], error=describe(exc),
                               exc_info=True)
                with contextlib.suppress(Exception):
                    store.upload_retry(row["sha256"], self.target, describe(exc),
                                       self.backoff(row["attempts"]))
            finally:
                self.sha = None

    def upload(self, row: dict) -> None:
        store = self.store
        sha, attempt = row["sha256"], row["attempts"]
        job = store.get(sha)
        log = self.log.bind(job=sha[:12], file=job.name if job else None)
        if job is None or not job.archive_ref:
            store.upload_failed(sha, self.target, "the job is gone from the queue")
            return
        try:
            rec = load_record(Path(job.archive_ref))
        except (OSError, ValueError, KeyError) as exc:
            store.upload_failed(sha, self.target, f"the local archive folder cannot be read "
                                f"({job.archive_ref}): {exc}. Fix: restore it, then "
                                "`minutesd drive retry`")
            log.error("upload failed: local archive folder unreadable", error=str(exc))
            return
        rec.audio_path = self.recording(job)
        t0 = time.monotonic()
        log.info("upload started", attempt=attempt)
        try:
            ref = self.archive.store(rec)
        except Exception as exc:
            self.failed(sha, attempt, exc, log)
            return
        if self.spool is not None and rec.audio_path and job.dest_path != rec.audio_path \
                and (cur := store.get(sha)) is not None and cur.state == "done":
            self.spool.remove(sha)  # the copy taken for this upload
        crash_point("upload:stored")  # in the mirror and its ledger; the queue does not know yet
        store.upload_done(sha, self.target, ref)
        log.info("uploaded", ref=ref, seconds=round(time.monotonic() - t0, 2))

    def recording(self, job) -> str | None:
        """The recording to upload beside the minutes, from a place only the daemon writes:
        processed/ once filed; else (``keep_originals``) a copy read from the inbox without
        following links and checked against the job's hash -- never the inbox path itself,
        where anyone who can drop a file can put a link."""
        if job.dest_path and Path(job.dest_path).is_file():
            return job.dest_path
        if self.spool is None:
            return None
        copy = self.spool.copy_of(job.sha256, job.name, Path(job.path))
        return str(copy) if copy is not None else None

    def failed(self, sha: str, attempt: int, exc: Exception, log) -> None:
        """The one place that decides what a failed upload means: wait for the operator
        (every upload waits), fail it (reported; ``minutesd drive retry``), or retry later."""
        store = self.store
        handling = handling_of(exc)
        if handling is Handling.OPERATOR:
            problem = operator_problem(exc)
            assert problem is not None
            if isinstance(problem, CredentialsError):  # every upload waits for new ones
                self.auth_problem = str(problem)
                self._auth_since = self._auth_marked = time.monotonic()
                store.upload_retry(sha, self.target, str(problem), AUTH_RECHECK_S,
                                   waiting="auth")
                store.uploads_waiting(self.target, "auth", str(problem))
                what = f"{getattr(self.archive, 'credentials_of', self.target)} credentials"
            else:  # disk full, permissions: this upload waits, its attempt given back
                store.upload_retry(sha, self.target, str(problem), OPERATOR_RECHECK_S,
                                   waiting="operator")
                what = "the operator"
            log.error(f"uploads wait: {what}", error=str(problem).split(". Fix:")[0],
                      fix=problem.fix, nothing_lost=True)
        elif handling is Handling.PERMANENT:
            store.upload_failed(sha, self.target, str(exc))
            log.error("upload failed (not retried)", error=str(exc))
        else:
            delay = self.backoff(attempt)
            store.upload_retry(sha, self.target, describe(exc), delay)
            log.warning("upload failed; will retry", attempt=attempt, error=describe(exc),
                        retry_in_s=round(delay, 1),
                        **({} if isinstance(exc, MinutesdError) else {"exc_info": True}))
