"""The uploader: one thread per mirror archive (Google Drive) that copies archived meetings
from the local archive, at its own pace, so a slow or unreachable Drive never holds up the
inbox.

Each upload is a row in the job queue's ``uploads`` table (queued with the ``archived``
step). Outcomes:

* done: the link is recorded (``minutesd status`` shows it);
* transient (rate limits, 5xx, network, after the client's own retries): pending again, due
  after ``retry_backoff_s`` doubling up to ``retry_backoff_max_s``; never given up;
* credentials missing, expired or revoked: every pending upload *waits* (``waiting='auth'``,
  attempts not counted); the uploader looks again when the token file changes (a new
  ``minutesd auth google``) or every ``AUTH_RECHECK_S``;
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
from typing import Any

from daemon.faults import crash_point

AUTH_RECHECK_S = 300.0


class Uploader(threading.Thread):
    def __init__(self, service: Any, archive: Any):
        super().__init__(name=f"minutesd-upload-{archive.name}", daemon=True)
        self.service = service
        self.archive = archive
        self.target = archive.name
        cfg = getattr(archive, "cfg", None)
        self.backoff_s = getattr(cfg, "retry_backoff_s", 30.0)
        self.backoff_max_s = getattr(cfg, "retry_backoff_max_s", 3600.0)
        self.log = service.log.bind(archive=self.target)
        self.sha: str | None = None
        self.auth_problem: str | None = None
        self._auth_since = 0.0
        self._auth_marked = 0.0

    def backoff(self, attempt: int) -> float:
        return min(self.backoff_s * 2 ** max(0, attempt - 1), self.backoff_max_s)

    def _auth_changed(self) -> bool:
        auth = getattr(self.archive, "auth", None)
        return bool(auth and auth.changed_on_disk())

    def run(self) -> None:
        svc = self.service
        store = svc.store
        while not svc.stop_event.is_set():
            now = time.monotonic()
            if self.auth_problem is not None:
                if not (self._auth_changed() or now - self._auth_since >= AUTH_RECHECK_S):
                    if now - self._auth_marked >= 5:  # new uploads wait too, with the reason
                        self._auth_marked = now
                        with contextlib.suppress(Exception):
                            store.uploads_waiting(self.target, "auth", self.auth_problem)
                    svc.stop_event.wait(1.0)
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
                self.log.error("cannot read the upload queue", error=str(exc))
                svc.stop_event.wait(5.0)
                continue
            if row is None:
                svc.stop_event.wait(1.0)
                continue
            self.sha = row["sha256"]
            try:
                self.upload(row)
            except Exception as exc:  # never let the uploader die
                self.log.error("upload interrupted", job=row["sha256"][:12], error=str(exc),
                               exc_info=True)
                with contextlib.suppress(Exception):
                    store.upload_retry(row["sha256"], self.target, f"{type(exc).__name__}: "
                                       f"{exc}", self.backoff(row["attempts"]))
            finally:
                self.sha = None

    def upload(self, row: dict) -> None:
        from daemon.archive import load_record
        from integrations.gdrive import DrivePermanent, DriveTransient
        from integrations.google_auth import AuthProblem

        store = self.service.store
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
        rec.audio_path = job.path
        t0 = time.monotonic()
        log.info("upload started", attempt=attempt)
        try:
            ref = self.archive.store(rec)
        except AuthProblem as exc:
            self.auth_problem = str(exc)
            self._auth_since = self._auth_marked = time.monotonic()
            store.upload_retry(sha, self.target, str(exc), AUTH_RECHECK_S, waiting="auth")
            store.uploads_waiting(self.target, "auth", str(exc))
            log.error("uploads wait: google credentials", error=str(exc), fix=exc.fix,
                      nothing_lost=True)
            return
        except DrivePermanent as exc:
            store.upload_failed(sha, self.target, str(exc))
            log.error("upload failed (not retried)", error=str(exc))
            return
        except DriveTransient as exc:
            delay = self.backoff(attempt)
            store.upload_retry(sha, self.target, str(exc), delay)
            log.warning("upload failed; will retry", attempt=attempt, error=str(exc),
                        retry_in_s=round(delay, 1))
            return
        crash_point("upload:stored")  # in Drive and its ledger; the queue does not know yet
        store.upload_done(sha, self.target, ref)
        log.info("uploaded", ref=ref, seconds=round(time.monotonic() - t0, 2))
