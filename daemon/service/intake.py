"""Taking files from the inbox: which files, when they are complete, and into the queue.

Events from the watcher and full rescans feed a :class:`~daemon.watch.StabilityTracker`;
a file it calls complete is copied into the spool while it is hashed (read once, through a
descriptor opened without following links: :mod:`daemon.confined`, :mod:`daemon.service.spool`)
and becomes a new job, is noted as a duplicate (moved aside), is taken again after it failed,
or is refused (empty, too large, a name that is not text). Nothing here runs a model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from daemon.confined import NotConfined
from daemon.errors import environment_problem
from daemon.faults import crash_point
from daemon.pipeline import meeting_when
from daemon.service.filing import Filing, as_text
from daemon.service.queue import Job, JobStore
from daemon.service.spool import Spool
from daemon.settings import Settings
from daemon.watch import StabilityTracker, scan


class Intake:
    def __init__(self, settings: Settings, store: JobStore, filing: Filing, spool: Spool, log,
                 stop_event: threading.Event, work_event: threading.Event,
                 keepalive: Callable[[], None] = lambda: None):
        self.settings = settings
        self.cfg = settings.daemon
        self.inbox = self.cfg.resolved("inbox")
        self.confined = spool.inbox
        self.store = store
        self.filing = filing
        self.spool = spool
        self.log = log
        self.stop_event = stop_event
        self.work_event = work_event
        self.keepalive = keepalive  # pings systemd's watchdog while a big file is hashed
        self.tracker = StabilityTracker(self.cfg.stable_seconds, stat=self.confined.lstat)
        self.last_rescan = 0.0
        self._warned: dict[Path, tuple[int, int]] = {}

    # ------------------------------------------------------------------ finding files

    def events(self, events: list[tuple[str, Path]], polling: bool) -> None:
        """What the watcher saw since the last call."""
        while not self.filing.retake.empty():
            self.tracker.changed_after_taken(self.filing.retake.get())
        for kind, path in events:
            if kind == "deleted":
                self.tracker.forget(path)
            elif kind == "scan":  # a folder appeared: walked from the inbox, links unfollowed
                self.rescan()
            else:  # polling sees sizes and times only: stability is all it can judge
                self.tracker.touch(path, "scan" if polling else kind)

    def consider(self, path: Path) -> None:
        """A file found by a scan: skip it cheaply if a job already took it."""
        st = self.confined.lstat(path)
        if st is None:
            return
        if not _is_text(str(path)):  # refused by receive(); the queue cannot hold the name
            if path not in self.tracker.pending:
                self.tracker.touch(path)
            return
        if self.store.find_file(str(path), st.st_size, st.st_mtime_ns) is not None:
            return
        if path not in self.tracker.pending:
            self.tracker.touch(path)

    def rescan(self) -> None:
        self.last_rescan = time.monotonic()
        try:
            for p in scan(self.confined, self.cfg.ignore):
                try:
                    self.consider(p)
                except Exception as exc:  # one odd file must not keep the others out
                    self._file_error(p, exc)
        except OSError as exc:
            self.log.error("cannot scan the inbox", inbox=str(self.inbox),
                           error=str(environment_problem(exc) or exc))

    def take_ready(self) -> None:
        """Receive every file that is complete now."""
        for path in self.tracker.ready():
            if self.stop_event.is_set():
                break
            try:
                self.receive(path)
            except Exception as exc:  # one odd file must not keep the others out
                self._file_error(path, exc)

    def _file_error(self, path: Path, exc: Exception) -> None:
        self.log.error("cannot take a file from the inbox; it stays there",
                       file=as_text(str(self.filing.rel(path))),
                       error=str(environment_problem(exc) or exc), kind=type(exc).__name__)

    # ------------------------------------------------------------------ taking a file

    def receive(self, path: Path) -> Job | None:
        """A complete file: copy and hash it into the queue (or note a duplicate, or reject)."""
        rel = self.filing.rel(path)
        log = self.log.bind(file=as_text(str(rel)))
        st = self.confined.lstat(path)
        if st is None:
            return None  # gone, or a link / FIFO / device / socket: never taken (nor moved)
        if not _is_text(str(path)):
            self.filing.reject(path, "the file name is not valid UTF-8 text; rename the file "
                               "and drop it again")
            return None
        if self.store.find_file(str(path), st.st_size, st.st_mtime_ns) is not None:
            return None
        if st.st_size == 0:
            self.filing.reject(path, "empty file (0 bytes)")
            return None
        if self.cfg.max_file_mb and st.st_size > self.cfg.max_file_mb * 1e6:
            self.filing.reject(path, f"larger than daemon.max_file_mb ({self.cfg.max_file_mb} MB):"
                               f" {st.st_size / 1e6:.0f} MB")
            return None

        def tick() -> None:
            self.keepalive()
            if self.stop_event.is_set():
                raise InterruptedError("stopping")

        try:
            taken = self.spool.take(path, on_block=tick)
        except InterruptedError:
            return None  # SIGTERM while reading a big file: taken again at the next start
        except NotConfined:
            return None  # swapped for a link or a special file since it was looked at
        except OSError as exc:
            env = environment_problem(exc)
            key = (st.st_size, st.st_mtime_ns)
            if self._warned.get(path) != key:
                self._warned[path] = key
                log.error("cannot take a file from the inbox; it stays there",
                          error=str(env or exc))
            self.tracker.touch(path)  # tried again once it has been stable again
            return None
        self._warned.pop(path, None)
        if taken is None or (taken.size, taken.mtime_ns) != (st.st_size, st.st_mtime_ns):
            if taken is not None and self.store.get(taken.sha256) is None:
                self.spool.remove(taken.sha256)
            self.tracker.touch(path)  # changed while being read: not complete yet
            return None
        sha = taken.sha256
        log = log.bind(job=sha[:12])
        date, hhmm = meeting_when(taken.copy, self.settings.minutes.date, name=path.name)
        existing = self.store.get(sha)
        if existing is None:
            job = self.store.add(sha, path.name, str(path), st.st_size, st.st_mtime_ns,
                                 date, hhmm)
            log.info("received", size=st.st_size, date=date, time=hhmm)
            crash_point("received")
            self.work_event.set()
            return job
        if existing.state in ("failed", "cancelled"):
            job = self.store.requeue(sha, path.name, str(path), st.st_size, st.st_mtime_ns,
                                     date, hhmm)
            log.info(f"dropped again after it was {existing.state}: trying again",
                     resumes_after=job.step)
            self.work_event.set()
            return job
        if existing.state not in ("queued", "running"):
            self.spool.remove(sha)  # done: the copy just taken is not needed
        if existing.path == str(path):
            # The same file, touched (mtime changed, content not): remember its new mtime so
            # it is neither taken again at every rescan nor cancelled as changed.
            self.store.update_stat(sha, st.st_size, st.st_mtime_ns)
            return None
        self.filing.move_duplicate(path, sha, existing, log)
        return None


def _is_text(name: str) -> bool:
    """A name the queue, the logs and the archive can hold (not undecodable bytes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
