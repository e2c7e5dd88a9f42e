"""Taking files from the inbox: which files, when they are complete, and into the queue.

Events from the watcher and full rescans feed a :class:`~daemon.watch.StabilityTracker`;
a file it calls complete is hashed into the job queue as a new job, noted as a duplicate
(moved aside), taken again after it failed, or refused (empty). Nothing here runs a model.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from daemon.errors import environment_problem
from daemon.faults import crash_point
from daemon.files import sha256_file
from daemon.pipeline import meeting_when
from daemon.service.filing import Filing
from daemon.service.queue import Job, JobStore
from daemon.settings import Settings
from daemon.watch import StabilityTracker, scan


class Intake:
    def __init__(self, settings: Settings, store: JobStore, filing: Filing, log,
                 stop_event: threading.Event, work_event: threading.Event,
                 keepalive: Callable[[], None] = lambda: None):
        self.settings = settings
        self.cfg = settings.daemon
        self.inbox = self.cfg.resolved("inbox")
        self.store = store
        self.filing = filing
        self.log = log
        self.stop_event = stop_event
        self.work_event = work_event
        self.keepalive = keepalive  # pings systemd's watchdog while a big file is hashed
        self.tracker = StabilityTracker(self.cfg.stable_seconds)
        self.last_rescan = 0.0
        self._warned: dict[Path, tuple[int, int]] = {}

    # ------------------------------------------------------------------ finding files

    def events(self, events: list[tuple[str, Path]], polling: bool) -> None:
        """What the watcher saw since the last call."""
        for kind, path in events:
            if kind == "deleted":
                self.tracker.forget(path)
            elif kind == "scan":
                for p in scan(path, self.cfg.ignore) if path.is_dir() else [path]:
                    self.consider(p)
            else:  # polling sees sizes and times only: stability is all it can judge
                self.tracker.touch(path, "scan" if polling else kind)

    def consider(self, path: Path) -> None:
        """A file found by a scan: skip it cheaply if a job already took it."""
        try:
            st = os.stat(path)
        except OSError:
            return
        if self.store.find_file(str(path), st.st_size, st.st_mtime_ns) is not None:
            return
        if path not in self.tracker.pending:
            self.tracker.touch(path)

    def rescan(self) -> None:
        self.last_rescan = time.monotonic()
        try:
            for p in scan(self.inbox, self.cfg.ignore):
                self.consider(p)
        except OSError as exc:
            self.log.error("cannot scan the inbox", inbox=str(self.inbox),
                           error=str(environment_problem(exc) or exc))

    def take_ready(self) -> None:
        """Receive every file that is complete now."""
        for path in self.tracker.ready():
            if self.stop_event.is_set():
                break
            self.receive(path)

    # ------------------------------------------------------------------ taking a file

    def receive(self, path: Path) -> Job | None:
        """A complete file: hash it into the queue (or note a duplicate, or reject it)."""
        rel = self.filing.rel(path)
        log = self.log.bind(file=str(rel))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None  # symlinks, fifos, sockets: never taken (nor moved)
        if self.store.find_file(str(path), st.st_size, st.st_mtime_ns) is not None:
            return None
        if st.st_size == 0:
            self.filing.reject(path, "empty file (0 bytes)")
            return None

        def tick() -> None:
            self.keepalive()
            if self.stop_event.is_set():
                raise InterruptedError("stopping")

        try:
            sha = sha256_file(path, on_block=tick)
        except InterruptedError:
            return None  # SIGTERM while hashing a big file: taken again at the next start
        except OSError as exc:
            env = environment_problem(exc)
            key = (st.st_size, st.st_mtime_ns)
            if self._warned.get(path) != key:
                self._warned[path] = key
                log.error("cannot read a file in the inbox; it stays there",
                          error=str(env or exc))
            return None
        self._warned.pop(path, None)
        try:
            st2 = os.stat(path)
        except FileNotFoundError:
            return None
        if (st2.st_size, st2.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.tracker.touch(path)  # changed while hashing: not complete yet
            return None
        log = log.bind(job=sha[:12])
        date, hhmm = meeting_when(path, self.settings.minutes.date)
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
        if existing.path == str(path):
            # The same file, touched (mtime changed, content not): remember its new mtime so
            # it is neither hashed again at every rescan nor cancelled as changed.
            self.store.update_stat(sha, st.st_size, st.st_mtime_ns)
            return None
        self.filing.move_duplicate(path, sha, existing, log)
        return None
