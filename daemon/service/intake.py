"""Taking files from the inbox: which files, when they are complete, and into the queue.

Events from the watcher and full rescans feed a :class:`~daemon.watch.StabilityTracker`;
a file it calls complete is copied into the spool while it is hashed (read once, through a
descriptor opened without following links: :mod:`daemon.confined`, :mod:`daemon.service.spool`)
and becomes a new job, is noted as a duplicate (moved aside), is taken again after it failed,
or is refused (empty, too large, a name that is not text). Nothing here runs a model.

A recording's sidecar (``<stem>.meeting.yaml``, :mod:`daemon.facts`) is never a recording
itself. Once a recording is complete, intake waits up to ``daemon.facts_wait_s`` for its
sidecar (a person may drop the recording first and its facts a moment later); a sidecar that
is there must have been unchanged for ``stable_seconds`` too. The facts, or the reason the
sidecar cannot be used, are stored with the job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from daemon import facts
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
        # complete recordings waiting for their sidecar: (deadline, size, mtime_ns) when found
        self.awaiting: dict[Path, tuple[float, int, int]] = {}
        # sidecars seen: (size, mtime_ns) and since when unchanged (monotonic)
        self._sidecar_seen: dict[Path, tuple[tuple[int, int], float]] = {}

    # ------------------------------------------------------------------ finding files

    def events(self, events: list[tuple[str, Path]], polling: bool) -> None:
        """What the watcher saw since the last call."""
        while not self.filing.retake.empty():
            self.tracker.changed_after_taken(self.filing.retake.get())
        for kind, path in events:
            if facts.is_sidecar(path.name):
                continue  # read with its recording, never taken as one
            if kind == "deleted":
                self.tracker.forget(path)
            elif kind == "scan":  # a folder appeared: walked from the inbox, links unfollowed
                self.rescan()
            else:  # polling sees sizes and times only: stability is all it can judge
                self.tracker.touch(path, "scan" if polling else kind)

    def consider(self, path: Path) -> None:
        """A file found by a scan: skip it cheaply if a job already took it."""
        st = self.confined.lstat(path)
        if st is None or facts.is_sidecar(path.name):
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
        """Receive every file that is complete now (and whose sidecar is, or is not coming)."""
        now = time.monotonic()
        for path in self.tracker.ready():
            st = self.confined.lstat(path)
            if st is not None:
                self.awaiting.setdefault(path, (now + self.cfg.facts_wait_s, st.st_size,
                                                st.st_mtime_ns))
        for path in list(self.awaiting):
            if self.stop_event.is_set():
                break
            try:
                if self._still_waiting(path, now):
                    continue
                self.awaiting.pop(path, None)
                self.receive(path)
            except Exception as exc:  # one odd file must not keep the others out
                self.awaiting.pop(path, None)
                self._file_error(path, exc)

    def _still_waiting(self, path: Path, now: float) -> bool:
        """Wait for the sidecar of a complete recording: until one is there and settled, or
        ``facts_wait_s`` has passed. A recording that changed meanwhile waits to be
        complete again; one a job already took needs no facts."""
        deadline, size, mtime_ns = self.awaiting[path]
        st = self.confined.lstat(path)
        if st is None or (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            self.awaiting.pop(path, None)
            if st is not None:
                self.tracker.touch(path)
            return True
        if not _is_text(str(path)) or self.store.find_file(
                str(path), st.st_size, st.st_mtime_ns) is not None:
            return False  # refused by receive(), or already taken: no facts needed
        found = facts.present(self.confined, path)
        if not found:
            return now < deadline
        settled = True
        for side in found:
            if side.stat is None:
                continue  # a link or a special file: refused when read, no use waiting
            key = (side.stat.st_size, side.stat.st_mtime_ns)
            seen = self._sidecar_seen.get(side.path)
            if seen is None or seen[0] != key:
                self._sidecar_seen[side.path] = seen = (key, now)
            if now - seen[1] < self.cfg.stable_seconds:
                settled = False
        if settled:
            for side in found:
                self._sidecar_seen.pop(side.path, None)
        return not settled

    def _facts(self, path: Path, log) -> str | None:
        """The facts of the recording at ``path`` as the queue keeps them (or the reason its
        sidecar cannot be used); None when it has no sidecar."""
        try:
            found = facts.read(self.confined, path)
        except facts.MeetingFactsError as exc:
            sidecars = [s.path for s in facts.present(self.confined, path) if s.stat]
            log.error("the recording's sidecar cannot be used", error=str(exc))
            return facts.record(None, sidecars, str(exc))
        except OSError as exc:
            if environment_problem(exc) is not None:
                raise
            sidecars = [s.path for s in facts.present(self.confined, path) if s.stat]
            return facts.record(None, sidecars, f"cannot read the sidecar: {exc}")
        if found is None:
            return None
        info, side = found
        log.info("meeting facts", sidecar=side.path.name, attendees=len(info.attendees),
                 speakers=info.speakers, language=info.language, date=info.date)
        return facts.record(info, [side.path])

    def _file_error(self, path: Path, exc: Exception) -> None:
        if environment_problem(exc) is not None:
            raise exc  # a full disk or the like is the daemon's problem, not this file's
        self.log.error("cannot take a file from the inbox; it stays there",
                       file=as_text(str(self.filing.rel(path))),
                       error=str(environment_problem(exc) or exc), kind=type(exc).__name__)

    # ------------------------------------------------------------------ taking a file

    def receive(self, path: Path) -> Job | None:
        """A complete file: copy and hash it into the queue (or note a duplicate, or reject)."""
        rel = self.filing.rel(path)
        log = self.log.bind(file=as_text(str(rel)))
        st = self.confined.lstat(path)
        if st is None or facts.is_sidecar(path.name):
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
        existing = self.store.get(sha)
        facts_json = self._facts(path, log) if existing is None or existing.state in (
            "failed", "cancelled") else None
        try:
            info = facts.from_record(facts_json)
        except facts.MeetingFactsError:
            info = None
        # For the log and `status`; the minutes step decides, with the recording's tags.
        date, hhmm, _src = meeting_when(taken.copy, self.settings.minutes.date, name=path.name,
                                        info=info, tags=False)
        if existing is None:
            job = self.store.add(sha, path.name, str(path), st.st_size, st.st_mtime_ns,
                                 date, hhmm, facts_json)
            log.info("received", size=st.st_size, date=date, time=hhmm)
            crash_point("received")
            self.work_event.set()
            return job
        if existing.state in ("failed", "cancelled"):
            job = self.store.requeue(sha, path.name, str(path), st.st_size, st.st_mtime_ns,
                                     date, hhmm, facts_json)
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
