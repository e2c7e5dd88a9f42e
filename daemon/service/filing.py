"""Where the originals go: ``processed/`` once archived, ``failed/`` with ``<name>.error.json``,
``duplicates/`` when the content was seen before. Every move records its destination in the
queue first, so a crash mid-move is finished at the next start and never mistaken for a new
file. A recording's sidecar (:mod:`daemon.facts`) goes with it, named after it there (moved
just before the recording, so a crash between the two leaves no sidecar behind)."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon import facts
from daemon.confined import Confined, NotConfined
from daemon.errors import environment_problem
from daemon.faults import crash_point
from daemon.files import fit_name, unique_path
from daemon.output import atomic_write
from daemon.service.queue import Job, JobStore
from daemon.settings import DaemonSettings


def as_text(name: str) -> str:
    """A file name as text the queue and JSON can hold (undecodable bytes as ``\\xNN``)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts or time.time(), UTC).isoformat(timespec="seconds")


class Filing:
    def __init__(self, cfg: DaemonSettings, store: JobStore, log,
                 spool_done: Callable[[str], None] = lambda sha: None):
        self.cfg = cfg
        self.inbox = cfg.resolved("inbox")
        self.confined = Confined(self.inbox)
        self.spool_done = spool_done  # the job's spool copy is no longer needed
        # Inbox files whose job found them changed: intake looks at them again at once.
        self.retake: queue.SimpleQueue[Path] = queue.SimpleQueue()
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

    def file_sidecars(self, sidecars: list[Path], dest: Path, log=None) -> list[str]:
        """Move a recording's sidecars (still regular files in the inbox) beside ``dest``,
        where the recording goes, named after it; the new paths. Never fails the filing."""
        out = []
        for side in sidecars:
            if not (self.in_inbox(side) and self.confined.exists(side)):
                continue
            suffix = next((s for s in facts.SUFFIXES if side.name.lower().endswith(s)), ".yaml")
            target = unique_path(dest.parent, Path(dest.name).stem + suffix)
            try:
                self.confined.move_out(side, target)
                out.append(str(target))
            except OSError as exc:
                (log or self.log).error("could not move the recording's sidecar",
                                        sidecar=str(side),
                                        error=str(environment_problem(exc) or exc))
        return out

    # ------------------------------------------------------------------ processed/

    def in_inbox(self, path: Path | str) -> bool:
        """Lexically under the inbox (where the job found it), links not looked at."""
        try:
            self.confined.rel(path)
        except NotConfined:
            return False
        return True

    def file_original(self, job: Job, log) -> dict[str, Any]:
        """Move the original to processed/ (destination recorded first), or keep it. Only
        the very content that was processed is filed: a file rewritten since (even with the
        same size and mtime) stays in the inbox and is taken as a new recording."""
        if self.cfg.keep_originals:
            self.spool_done(job.sha256)
            return {}
        src = Path(job.path)
        if not self.in_inbox(src) and job.dest_path is None:
            self.spool_done(job.sha256)
            return {}  # already filed
        dest = Path(job.dest_path) if job.dest_path else None
        if dest is None:
            dest = unique_path(self.processed / self.rel(src).parent, fit_name(job.name))
            self.store.set_dest(job.sha256, str(dest))
        st = self.confined.lstat(src)
        if st is None:
            if dest.exists():
                self.spool_done(job.sha256)
                return {"path": str(dest)}  # moved before a crash; only the record was missing
            log.warning("the original vanished from the inbox after archiving", path=str(src))
            self.spool_done(job.sha256)
            return {}
        if (st.st_size, st.st_mtime_ns) != (job.size, job.mtime_ns) or \
                not self._same_content(job, src):
            log.warning("the file in the inbox no longer holds the recording that was archived;"
                        " left there, and taken as a new recording", path=str(src))
            self.store.update_stat(job.sha256, -1, -1)  # not "this file" any more
            self.store.set_dest(job.sha256, None)
            self.spool_done(job.sha256)
            self.retake.put(src)
            return {}
        if dest.exists() and dest.stat().st_size == st.st_size:
            self.confined.unlink(src, expect=st)  # a cross-device copy finished before a crash
            self.spool_done(job.sha256)
            return {"path": str(dest)}
        self.file_sidecars(facts.sidecars_of(job.facts_json), dest, log)
        self.confined.move_out(src, dest, expect=st)
        crash_point("done:moved")
        self.spool_done(job.sha256)
        return {"path": str(dest)}

    def _same_content(self, job: Job, src: Path) -> bool:
        h = hashlib.sha256()
        try:
            with self.confined.open(src) as (fd, _st):
                while block := os.read(fd, 1 << 20):
                    h.update(block)
        except OSError:
            return False
        return h.hexdigest() == job.sha256

    def cancel_job(self, job: Job, reason: str) -> None:
        """The recording went away or changed before it was archived: the job ends, and what
        is in the inbox now (if anything) is looked at again as a new recording."""
        self.store.cancel(job.sha256, reason)
        self.store.update_stat(job.sha256, -1, -1)
        self.spool_done(job.sha256)
        self.retake.put(Path(job.path))

    # ------------------------------------------------------------------ failed/

    def fail_job(self, job: Job, step: str, error: str, permanent: bool = False) -> None:
        """To failed/ with <name>.error.json. Recorded first, then moved, so a crash in between
        is finished at the next start and the file is never retried by mistake."""
        src = Path(job.path)
        dest = unique_path(self.failed / self.rel(src).parent, fit_name(job.name)) \
            if self.in_inbox(src) and self.confined.exists(src) else None
        self.spool_done(job.sha256)
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
                self.file_sidecars(facts.sidecars_of(cur.facts_json if cur else job.facts_json),
                                   dest)
                self.confined.move_out(src, dest)
                self.store.finish_move(job.sha256, str(dest))
            else:
                self.write_error_json(unique_path(self.failed, fit_name(job.name)), info)
        except OSError as exc:
            self.log.error("could not move the file to failed/; it stays where it is",
                           error=str(environment_problem(exc) or exc), path=str(src))
        self.log.error("failed: moved to failed/", step=step, error=error, permanent=permanent,
                       attempts=info["attempts"], moved_to=str(dest) if dest else None)

    def reject(self, path: Path, error: str) -> None:
        """A file refused before it became a job (empty, too large, a name that is not text):
        to failed/ with its error.json."""
        rel = self.rel(path)
        name = as_text(path.name)
        sha = hashlib.sha256(b"").hexdigest()  # not read: it is refused on what it is
        dest = unique_path(self.failed / rel.parent, fit_name(path.name))
        info = {"file": name, "sha256": None, "step": "received", "attempts": 0,
                "error": error, "permanent": True, "time": iso(),
                "inbox_path": as_text(str(path))}
        try:
            self.write_error_json(dest, info)
            self.file_sidecars([s.path for s in facts.present(self.confined, path) if s.stat],
                               dest)
            self.confined.move_out(path, dest)
        except OSError as exc:
            self.log.error("could not move a rejected file to failed/", file=as_text(str(rel)),
                           error=str(environment_problem(exc) or exc))
            return
        self.store.note("failed", sha, name, "received", {"error": error,
                                                          "moved_to": as_text(str(dest))})
        self.log.error("rejected: moved to failed/", file=as_text(str(rel)), error=error,
                       moved_to=as_text(str(dest)))

    def finish_failed_moves(self) -> None:
        """Failed jobs whose move to failed/ a crash interrupted."""
        for job in self.store.jobs("state='failed' AND dest_path IS NOT NULL AND path != dest_path"):
            src, dest = Path(job.path), Path(job.dest_path or "")
            try:
                if self.in_inbox(src) and self.confined.exists(src) and not dest.exists():
                    self.confined.move_out(src, dest)
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
            self.file_sidecars([s.path for s in facts.present(self.confined, path) if s.stat],
                               dest, log)
            self.confined.move_out(path, dest)
        except OSError as exc:
            log.error("duplicate recording, but it could not be moved aside",
                      error=str(environment_problem(exc) or exc))
            return
        self.store.note("duplicate", sha, path.name, None,
                        {"moved_to": str(dest), "original": existing.name,
                         "original_state": existing.state})
        log.warning("duplicate recording: same content as an earlier file; moved aside",
                    original=existing.name, original_state=existing.state, moved_to=str(dest))
