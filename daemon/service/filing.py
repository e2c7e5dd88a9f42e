"""Where the originals go: ``processed/`` once archived, ``failed/`` with ``<name>.error.json``,
``duplicates/`` when the content was seen before. Every move records its destination in the
queue first, so a crash mid-move is finished at the next start and never mistaken for a new
file."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.errors import environment_problem
from daemon.faults import crash_point
from daemon.files import fit_name, is_within, move_file, unique_path
from daemon.output import atomic_write
from daemon.service.queue import Job, JobStore
from daemon.settings import DaemonSettings


def iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts or time.time(), UTC).isoformat(timespec="seconds")


class Filing:
    def __init__(self, cfg: DaemonSettings, store: JobStore, log):
        self.cfg = cfg
        self.inbox = cfg.resolved("inbox")
        self.processed = cfg.resolved("processed")
        self.failed = cfg.resolved("failed")
        self.duplicates = cfg.resolved("duplicates")
        self.store = store
        self.log = log

    def rel(self, path: Path) -> Path:
        """``path`` relative to the inbox (sub-folders are kept in the outputs)."""
        try:
            return path.relative_to(self.inbox)
        except ValueError:
            return Path(path.name)

    def write_error_json(self, dest: Path, info: dict) -> Path:
        p = dest.with_name(dest.name + ".error.json")
        atomic_write(p, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        return p

    # ------------------------------------------------------------------ processed/

    def file_original(self, job: Job, log) -> dict[str, Any]:
        """Move the original to processed/ (destination recorded first), or keep it."""
        if self.cfg.keep_originals:
            return {}
        src = Path(job.path)
        if not is_within(src, self.inbox) and job.dest_path is None:
            return {}  # already filed
        dest = Path(job.dest_path) if job.dest_path else None
        if dest is None:
            dest = unique_path(self.processed / self.rel(src).parent, fit_name(job.name))
            self.store.set_dest(job.sha256, str(dest))
        try:
            st = os.stat(src)
        except FileNotFoundError:
            if dest.exists():
                return {"path": str(dest)}  # moved before a crash; only the record was missing
            log.warning("the original vanished from the inbox after archiving", path=str(src))
            return {}
        if (st.st_size, st.st_mtime_ns) != (job.size, job.mtime_ns):
            log.warning("a different file now has the original's name; left in the inbox",
                        path=str(src))
            return {}
        if dest.exists() and dest.stat().st_size == st.st_size:
            os.unlink(src)  # a cross-device copy finished before a crash: drop the source
            return {"path": str(dest)}
        move_file(src, dest)
        crash_point("done:moved")
        return {"path": str(dest)}

    # ------------------------------------------------------------------ failed/

    def fail_job(self, job: Job, step: str, error: str, permanent: bool = False) -> None:
        """To failed/ with <name>.error.json. Recorded first, then moved, so a crash in between
        is finished at the next start and the file is never retried by mistake."""
        src = Path(job.path)
        dest = unique_path(self.failed / self.rel(src).parent, fit_name(job.name)) \
            if src.exists() and is_within(src, self.inbox) else None
        history = [{"time": iso(e["at"]), "kind": e["kind"], "step": e["step"],
                    "detail": json.loads(e["detail"]) if e["detail"] else None}
                   for e in reversed(self.store.events(sha=job.sha256, limit=20))]
        cur = self.store.get(job.sha256)
        info = {"file": job.name, "sha256": job.sha256, "step": step,
                "attempts": max(cur.attempts if cur else job.attempts, 1), "error": error,
                "permanent": permanent, "time": iso(), "inbox_path": job.path,
                "history": history}
        self.store.fail(job.sha256, step, error, None,
                        {"error": error, "moved_to": str(dest) if dest else None})
        if dest is not None:
            self.store.set_dest(job.sha256, str(dest))
        try:
            if dest is not None:
                self.write_error_json(dest, info)
                move_file(src, dest)
                self.store.finish_move(job.sha256, str(dest))
            else:
                self.write_error_json(unique_path(self.failed, fit_name(job.name)), info)
        except OSError as exc:
            self.log.error("could not move the file to failed/; it stays where it is",
                           error=str(environment_problem(exc) or exc), path=str(src))
        self.log.error("failed: moved to failed/", step=step, error=error, permanent=permanent,
                       attempts=info["attempts"], moved_to=str(dest) if dest else None)

    def reject(self, path: Path, error: str) -> None:
        """A file refused before it became a job (empty): to failed/ with its error.json."""
        rel = self.rel(path)
        sha = hashlib.sha256(b"").hexdigest()  # only empty files are refused before hashing
        dest = unique_path(self.failed / rel.parent, fit_name(path.name))
        info = {"file": path.name, "sha256": sha, "step": "received", "attempts": 0,
                "error": error, "permanent": True, "time": iso(), "inbox_path": str(path)}
        try:
            self.write_error_json(dest, info)
            move_file(path, dest)
        except OSError as exc:
            self.log.error("could not move a rejected file to failed/", file=str(rel),
                           error=str(environment_problem(exc) or exc))
            return
        self.store.note("failed", sha, path.name, "received", {"error": error,
                                                               "moved_to": str(dest)})
        self.log.error("rejected: moved to failed/", file=str(rel), job=sha[:12], error=error,
                       moved_to=str(dest))

    def finish_failed_moves(self) -> None:
        """Failed jobs whose move to failed/ a crash interrupted."""
        for job in self.store.jobs("state='failed' AND dest_path IS NOT NULL AND path != dest_path"):
            src, dest = Path(job.path), Path(job.dest_path or "")
            try:
                if src.exists() and not dest.exists():
                    move_file(src, dest)
                if dest.exists():
                    self.store.finish_move(job.sha256, str(dest))
            except OSError as exc:
                self.log.error("could not finish moving a failed file", file=job.name,
                               error=str(environment_problem(exc) or exc))

    # ------------------------------------------------------------------ duplicates/

    def move_duplicate(self, path: Path, sha: str, existing: Job, log) -> None:
        """Same content as an earlier file: aside into duplicates/, noted, no second minutes."""
        dest = unique_path(self.duplicates / self.rel(path).parent, fit_name(path.name))
        try:
            move_file(path, dest)
        except OSError as exc:
            log.error("duplicate recording, but it could not be moved aside",
                      error=str(environment_problem(exc) or exc))
            return
        self.store.note("duplicate", sha, path.name, None,
                        {"moved_to": str(dest), "original": existing.name,
                         "original_state": existing.state})
        log.warning("duplicate recording: same content as an earlier file; moved aside",
                    original=existing.name, original_state=existing.state, moved_to=str(dest))
