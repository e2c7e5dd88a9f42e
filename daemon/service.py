"""``minutesd run``: the watched-inbox daemon.

One process, a few threads:

* the **main loop** drains watcher events, rescans the inbox (at start and every
  ``rescan_interval_s``), takes files once complete (:mod:`daemon.watch`), hashes them into
  the job queue (:mod:`daemon.jobs`), writes a heartbeat and pings systemd's watchdog;
* **workers** (``daemon.concurrency``, 1 by default), each holding its own loaded models,
  take the oldest due job and run its remaining steps: transcribe → write minutes → archive
  → file the original (processed/, or kept).
* an **uploader** per mirror archive (Google Drive, when configured) copies archived
  meetings from the local archive at its own pace (:mod:`daemon.uploads`), so an outage or
  revoked credentials never hold up the inbox.

Exactly once: every step's output is committed with the step; the archive is idempotent per
sha256 (:mod:`daemon.archive`); moves record their destination first. A ``kill -9`` at any
instant therefore loses at most the step in progress, which is redone at the next start.

Failures: an undecodable file goes to ``failed/`` at once with ``<name>.error.json``; other
errors retry with exponential backoff and give up after ``max_attempts`` (crashes during a
step count too, so a file that kills the process cannot crash-loop the daemon). Disk-full and
permission problems are reported in words, never count against the file, and the job waits.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import json
import logging
import os
import signal
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from daemon.archive import Archive, ArchiveRecord, LocalArchive, build_archive, build_mirrors
from daemon.faults import crash_point
from daemon.files import (
    EnvironmentProblem,
    environment_problem,
    free_mb,
    is_within,
    move_file,
    sha256_file,
    unique_path,
)
from daemon.jobs import DB_NAME, Job, JobStore
from daemon.logs import get_logger
from daemon.notify import Notifier
from daemon.settings import Settings
from daemon.watch import InboxWatcher, StabilityTracker, scan

HEARTBEAT_S = 5.0
LOCK_NAME = "minutesd.lock"
STEP_VERB = {"transcribed": "transcribing", "minutes_written": "writing minutes",
             "archived": "archiving", "done": "filing the original"}


class Processing(Protocol):
    """What the daemon needs of :class:`daemon.pipeline.Processor` (so tests can pass fakes)."""

    def hear(self, path, progress=None): ...

    def understand(self, transcript, path): ...


ProcessorFactory = Callable[[Settings, Any], Processing]


def default_processor_factory(settings: Settings, log) -> Processing:
    from daemon.pipeline import Processor

    return Processor(settings, log=log)  # it also gives the roster to Whisper as hints


class LayoutError(Exception):
    """Folders that cannot work together (e.g. processed/ inside the inbox)."""


class AlreadyRunning(Exception):
    pass


class JobCancelled(Exception):
    pass


class _ToStructlog(logging.Handler):
    """Third-party stdlib logging through structlog, so it carries the job's bound context."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # logging must never raise
            get_logger(record.name).log(record.levelno, record.getMessage())


def _iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts or time.time(), UTC).isoformat(timespec="seconds")


def daemon_folders(settings: Settings, archive: Archive | None = None) -> dict[str, Path]:
    d = settings.daemon
    out = {name: d.resolved(name) for name in ("inbox", "processed", "failed", "duplicates")}
    out["state_dir"] = d.resolved_state_dir()
    root = getattr(archive, "root", None) if archive is not None else (
        settings.archive.resolved_path(d) if settings.archive.backend == "local" else None)
    if root is not None:
        out["archive"] = Path(root)
    return out


def check_layout(folders: dict[str, Path]) -> None:
    """Refuse folder layouts that would loop (outputs inside the inbox) or mix up."""
    inbox = folders["inbox"]
    for name, path in folders.items():
        if name == "inbox":
            continue
        label = "archive.path" if name == "archive" else f"daemon.{name}"
        if is_within(path, inbox):
            raise LayoutError(f"{label} ({path}) is inside the inbox ({inbox}): "
                              "minutesd would pick up its own output. Move it out.")
        if is_within(inbox, path):
            raise LayoutError(f"the inbox ({inbox}) is inside {label} ({path}). "
                              "Use separate folders.")


class Service:
    def __init__(
        self,
        settings: Settings,
        processor_factory: ProcessorFactory | None = None,
        archive: Archive | None = None,
        notifier: Notifier | None = None,
        mirrors: list[Archive] | None = None,
    ):
        self.settings = settings
        d = settings.daemon
        self.cfg = d
        self.inbox = d.resolved("inbox")
        self.processed = d.resolved("processed")
        self.failed = d.resolved("failed")
        self.duplicates = d.resolved("duplicates")
        self.state_dir = d.resolved_state_dir()
        self.archive = archive or build_archive(settings)
        self.mirrors: list[Archive] | None = mirrors  # built in open() (they keep state there)
        self.uploaders: list[Any] = []
        self.notifier = notifier or Notifier()
        self.processor_factory = processor_factory or default_processor_factory
        self.log = get_logger("minutesd.daemon")
        self.stop_event = threading.Event()
        self.work_event = threading.Event()
        self.tracker = StabilityTracker(d.stable_seconds)
        self.watcher: InboxWatcher | None = None
        self.store: JobStore | None = None
        self.processors: list[Processing] = []
        self.workers: list[Worker] = []
        self.health: str | None = None
        self._env_delay = max(1.0, min(d.retry_backoff_s, 60.0))
        self._warned: dict[Path, tuple[int, int]] = {}
        self._signals = 0
        self._lock_fd: int | None = None
        self._last_rescan = 0.0
        self._last_heartbeat = 0.0
        self._last_orphan_check = 0.0
        self._last_watch_restart = 0.0
        self._status_text = ""

    # ------------------------------------------------------------------ set-up

    def folders(self) -> dict[str, Path]:
        return daemon_folders(self.settings, self.archive)

    def check_layout(self) -> None:
        check_layout(self.folders())

    def open(self) -> list[Job]:
        """Folders, the instance lock, the queue; jobs a dead process left running."""
        self.check_layout()
        for p in self.folders().values():
            p.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip()
            os.close(self._lock_fd)
            self._lock_fd = None
            raise AlreadyRunning(f"another minutesd run (pid {other or '?'}) holds "
                                 f"{self.state_dir / LOCK_NAME}") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        self.store = JobStore(self.state_dir / DB_NAME)
        if self.mirrors is None:
            self.mirrors = build_mirrors(self.settings)
        self.store.heartbeat("starting", info=self.backends(), started=True)
        if self.store.recover_uploads():
            self.log.warning("resuming uploads interrupted by a crash or kill")
        recovered = self.store.recover()
        for job in recovered:
            self.log.warning("resuming a job interrupted by a crash or kill", job=job.short,
                             file=job.name, last_step=job.step, interrupted_step=job.current_step,
                             attempts=job.attempts)
        self._finish_failed_moves()
        if isinstance(self.archive, LocalArchive):
            self.archive.clean_staging()
        return recovered

    def backends(self) -> dict[str, Any]:
        s = self.settings
        return {
            "asr": f"{s.asr.backend}:{s.asr.model}",
            "diarizer": s.diarization.backend,
            "llm": f"{s.llm.backend}:{s.llm.model if s.llm.backend != 'openai' else s.llm.openai.model}",
            "archive": "+".join([getattr(self.archive, "name", type(self.archive).__name__)]
                                + [m.name for m in self.mirrors or []]),
            "watch": self.watcher.mode if self.watcher else ("polling" if self.cfg.polling
                                                               else "inotify"),
            "concurrency": self.cfg.concurrency,
            "inbox": str(self.inbox),
        }

    def load_models(self) -> bool:
        """Build one Processor per worker, in a thread, while the main thread keeps systemd
        informed. False if a stop was asked for meanwhile."""
        result: dict[str, Any] = {}

        def load() -> None:
            try:
                for i in range(self.cfg.concurrency):
                    result.setdefault("procs", []).append(
                        self.processor_factory(self.settings, self.log.bind(worker=i)))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                result["error"] = exc

        t0 = time.monotonic()
        self.log.info("loading models", **self.backends())
        self.notifier.status("loading models")
        th = threading.Thread(target=load, name="minutesd-load", daemon=True)
        th.start()
        while th.is_alive():
            th.join(timeout=1.0)
            self.notifier.watchdog()
            if int(time.monotonic() - t0) % 30 == 0:
                self.notifier.extend_timeout(90)
            if self.stop_event.is_set():
                return False
        if "error" in result:
            raise result["error"]
        self.processors = result["procs"]
        self.log.info("models ready", seconds=round(time.monotonic() - t0, 1))
        return True

    # ------------------------------------------------------------------ the main loop

    def run(self) -> int:
        """The whole life of the daemon; returns the exit status."""
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            # `systemctl kill -s USR1 minutesd`: every thread's stack into the journal;
            # a fatal signal in native code prints the Python stacks too.
            faulthandler.enable()
            faulthandler.register(signal.SIGUSR1, all_threads=True)
            root = logging.getLogger()
            for h in list(root.handlers):
                root.removeHandler(h)
            root.addHandler(_ToStructlog())
        try:
            self.open()
        except (LayoutError, AlreadyRunning) as exc:
            self.log.error("cannot start", error=str(exc))
            return 2
        except (OSError, sqlite3.Error) as exc:
            env = environment_problem(exc)
            self.log.error("cannot start", error=str(env or exc),
                           state_dir=str(self.state_dir))
            return 1
        assert self.store is not None
        try:
            if not self.load_models():
                return self._stop_now("stopped while loading models")
        except Exception as exc:
            self.log.error("models failed to load", error=str(exc), kind=type(exc).__name__)
            self.store.heartbeat("stopped", health=f"models failed to load: {exc}")
            return 1
        self.watcher = InboxWatcher(self.inbox, self.cfg.ignore, self.cfg.polling,
                                    self.cfg.poll_interval_s, self.log)
        self.watcher.start()
        self.rescan()
        for i, proc in enumerate(self.processors):
            w = Worker(self, i, proc)
            self.workers.append(w)
            w.start()
        from daemon.uploads import Uploader

        for m in self.mirrors or []:
            u = Uploader(self, m)
            self.uploaders.append(u)
            u.start()
        self.store.heartbeat("ready", info=self.backends())
        counts = self.store.counts()
        self.notifier.ready(self.status_line())
        self.log.info("ready", watch=self.watcher.mode, inbox=str(self.inbox),
                      queued=counts["queued"], done=counts["done"], failed=counts["failed"])
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception as exc:  # the main loop must survive anything a tick meets
                env = environment_problem(exc)
                self.log.error("main loop error", error=str(env or exc), kind=type(exc).__name__)
                if env is not None:
                    self.set_health(str(env))
            self.stop_event.wait(0.25)
        return self.shutdown()

    def _on_signal(self, signum, frame) -> None:
        self._signals += 1
        if self._signals > 1:
            sys.stderr.write("minutesd: second signal, exiting now\n")
            os._exit(1)
        self.stop_event.set()
        self.work_event.set()

    def stop(self) -> None:
        self.stop_event.set()
        self.work_event.set()

    def tick(self) -> None:
        assert self.store is not None and self.watcher is not None
        now = time.monotonic()
        polling = self.watcher.mode == "polling"
        for kind, path in self.watcher.drain():
            if kind == "deleted":
                self.tracker.forget(path)
            elif kind == "scan":
                for p in scan(path, self.cfg.ignore) if path.is_dir() else [path]:
                    self._consider(p)
            else:  # polling sees sizes and times only: stability is all it can judge
                self.tracker.touch(path, "scan" if polling else kind)
        if self.cfg.rescan_interval_s and now - self._last_rescan >= self.cfg.rescan_interval_s:
            self.rescan()
        for path in self.tracker.ready():
            if self.stop_event.is_set():
                break
            self.receive(path)
        if not self.watcher.alive() and now - self._last_watch_restart >= 30:
            self._last_watch_restart = now
            self.log.warning("the inbox watcher stopped (folder gone or unmounted?); "
                             "restarting it", inbox=str(self.inbox))
            self.watcher.stop()
            self.watcher.start()
            self.rescan()
        if now - self._last_orphan_check >= 60:
            self._last_orphan_check = now
            self._requeue_orphans()
        if now - self._last_heartbeat >= HEARTBEAT_S:
            self._last_heartbeat = now
            self.store.heartbeat("ready", health=self.health)
            line = self.status_line()
            if line != self._status_text:
                self._status_text = line
                self.notifier.status(line)
        self.notifier.watchdog()

    def status_line(self) -> str:
        busy = [w.doing for w in self.workers if w.doing]
        counts = self.store.counts() if self.store else {}
        tail = f"{counts.get('queued', 0)} queued, {counts.get('done', 0)} done, " \
               f"{counts.get('failed', 0)} failed"
        head = "; ".join(busy) if busy else "idle"
        if self.mirrors and self.store:
            up = self.store.upload_counts()
            tail += f", {up['pending'] + up['running']} uploads pending"
            if up["failed"]:
                tail += f", {up['failed']} uploads failed"
            if any(u.auth_problem for u in self.uploaders):
                tail += " (waiting for Google credentials: minutesd auth google)"
        if self.health:
            head = f"degraded ({self.health.split('. Fix:')[0]}); {head}"
        return f"{head}; {tail}"

    def _consider(self, path: Path) -> None:
        """A file found by a scan: skip it cheaply if a job already took it."""
        try:
            st = os.stat(path)
        except OSError:
            return
        assert self.store is not None
        if self.store.find_file(str(path), st.st_size, st.st_mtime_ns) is not None:
            return
        if path not in self.tracker.pending:
            self.tracker.touch(path)

    def rescan(self) -> None:
        self._last_rescan = time.monotonic()
        try:
            for p in scan(self.inbox, self.cfg.ignore):
                self._consider(p)
        except OSError as exc:
            self.log.error("cannot scan the inbox", inbox=str(self.inbox),
                           error=str(environment_problem(exc) or exc))

    # ------------------------------------------------------------------ taking a file

    def _rel(self, path: Path) -> Path:
        try:
            return path.relative_to(self.inbox)
        except ValueError:
            return Path(path.name)

    def receive(self, path: Path) -> Job | None:
        """A complete file: hash it into the queue (or note a duplicate, or reject it)."""
        from daemon.pipeline import meeting_when

        assert self.store is not None
        rel = self._rel(path)
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
            self.reject(path, "empty file (0 bytes)")
            return None
        def tick() -> None:
            self.notifier.watchdog()
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
        dest = unique_path(self.duplicates / rel.parent, path.name)
        try:
            move_file(path, dest)
        except OSError as exc:
            log.error("duplicate recording, but it could not be moved aside",
                      error=str(environment_problem(exc) or exc))
            return None
        self.store.note("duplicate", sha, path.name, None,
                        {"moved_to": str(dest), "original": existing.name,
                         "original_state": existing.state})
        log.warning("duplicate recording: same content as an earlier file; moved aside",
                    original=existing.name, original_state=existing.state, moved_to=str(dest))
        return None

    def reject(self, path: Path, error: str) -> None:
        """A file refused before it became a job (empty): to failed/ with its error.json."""
        import hashlib

        assert self.store is not None
        rel = self._rel(path)
        sha = hashlib.sha256(b"").hexdigest()  # only empty files are refused before hashing
        dest = unique_path(self.failed / rel.parent, path.name)
        info = {"file": path.name, "sha256": sha, "step": "received", "attempts": 0,
                "error": error, "permanent": True, "time": _iso(), "inbox_path": str(path)}
        try:
            self._write_error_json(dest, info)
            move_file(path, dest)
        except OSError as exc:
            self.log.error("could not move a rejected file to failed/", file=str(rel),
                           error=str(environment_problem(exc) or exc))
            return
        self.store.note("failed", sha, path.name, "received", {"error": error,
                                                               "moved_to": str(dest)})
        self.log.error("rejected: moved to failed/", file=str(rel), job=sha[:12], error=error,
                       moved_to=str(dest))

    def _write_error_json(self, dest: Path, info: dict) -> Path:
        from daemon.output import atomic_write

        p = dest.with_name(dest.name + ".error.json")
        atomic_write(p, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        return p

    # ------------------------------------------------------------------ running a job

    def backoff(self, attempt: int) -> float:
        return min(self.cfg.retry_backoff_s * 2 ** max(0, attempt - 1),
                   self.cfg.retry_backoff_max_s)

    def set_health(self, problem: str | None) -> None:
        if problem == self.health:
            return
        self.health = problem
        if problem is None:
            self._env_delay = max(1.0, min(self.cfg.retry_backoff_s, 60.0))
            self.log.info("healthy again")
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.heartbeat("ready", health=problem)

    def preflight(self) -> None:
        if not self.cfg.min_free_mb:
            return
        for name in ("state_dir", "archive", "processed"):
            path = self.folders().get(name)
            if path is None:
                continue
            try:
                free = free_mb(path)
            except OSError:
                continue
            if free < self.cfg.min_free_mb:
                raise EnvironmentProblem(
                    "disk full", str(path),
                    f"only {free:.0f} MB free, below daemon.min_free_mb ({self.cfg.min_free_mb})")

    def run_job(self, job: Job, processor: Processing, worker: Worker) -> None:
        assert self.store is not None
        store = self.store
        with structlog.contextvars.bound_contextvars(job=job.short, file=job.name):
            log = self.log
            while job.step != "done":
                if self.stop_event.is_set():
                    store.release(job.sha256)
                    return
                step = job.next_step
                assert step is not None
                if job.current_step == step and job.attempts >= self.cfg.max_attempts:
                    self.fail_job(job, step, f"minutesd stopped {job.attempts} times during "
                                  f"this step (a crash, kill -9 or out of memory)")
                    return
                attempt = store.begin_step(job.sha256, step)
                worker.doing = f"{job.name}: {STEP_VERB[step]}"
                worker.step = step
                log.info("step started", step=step, attempt=attempt)
                t0 = time.monotonic()
                try:
                    self.preflight()
                    values = self.do_step(job, step, processor, log)
                except JobCancelled as exc:
                    store.cancel(job.sha256, str(exc))
                    log.warning("job cancelled", reason=str(exc))
                    return
                except Exception as exc:
                    self.step_failed(job, step, attempt, exc, log)
                    return
                finally:
                    worker.doing = None
                secs = round(time.monotonic() - t0, 2)
                uploads = [m.name for m in self.mirrors or []] if step == "archived" else []
                store.finish_step(job.sha256, step, detail={"seconds": secs}, uploads=uploads,
                                  **values)
                log.info("step finished", step=step, seconds=secs,
                         **({"archive": values["archive_ref"]} if "archive_ref" in values else {}))
                self.set_health(None)
                crash_point(step)
                job = store.get(job.sha256)
                assert job is not None
            log.info("job done", title=job.title, archive=job.archive_ref,
                     original=job.path)

    def step_failed(self, job: Job, step: str, attempt: int, exc: Exception, log) -> None:
        from daemon.audio import AudioDecodeError

        assert self.store is not None
        env = environment_problem(exc)
        if env is not None:
            delay = self._env_delay
            self._env_delay = min(self._env_delay * 2, max(60.0, self.cfg.retry_backoff_max_s))
            self.store.wait_environment(job.sha256, step, str(env), delay)
            self.set_health(str(env))
            log.error(f"cannot continue: {env.kind}", step=step, path=env.path, detail=env.detail,
                      fix=str(env).split("Fix: ")[-1], retry_in_s=round(delay),
                      nothing_lost=True)
            return
        if isinstance(exc, AudioDecodeError):
            self.fail_job(job, step, f"cannot decode the recording: {exc.cause}", permanent=True)
            return
        from daemon.minutes import MinutesError

        if isinstance(exc, MinutesError):
            # The writer already retried with the error shown to the model; the same transcript
            # gives the same answer again. Re-dropping the file resumes here (transcript kept).
            self.fail_job(job, step, f"no valid minutes from the LLM: {exc}", permanent=True)
            return
        error = f"{type(exc).__name__}: {exc}"
        if attempt >= self.cfg.max_attempts:
            log.error("step failed", step=step, attempt=attempt, error=error, exc_info=True)
            self.fail_job(job, step, error)
            return
        delay = self.backoff(attempt)
        self.store.retry_later(job.sha256, step, error, delay)
        log.warning("step failed; will retry", step=step, attempt=attempt,
                    max_attempts=self.cfg.max_attempts, error=error, retry_in_s=round(delay, 1))

    def _source_check(self, job: Job) -> Path:
        src = Path(job.path)
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise JobCancelled(f"{src} was removed from the inbox before it was processed") from None
        if (st.st_size, st.st_mtime_ns) != (job.size, job.mtime_ns):
            raise JobCancelled(f"{src} changed after it was received; the new content is "
                               "taken as a new recording")
        return src

    def do_step(self, job: Job, step: str, proc: Processing, log) -> dict[str, Any]:
        from daemon.pipeline import Minutes, SpeakerTranscript

        if step == "transcribed":
            src = self._source_check(job)
            from daemon.cli import ProgressReporter

            heard = proc.hear(src, progress=ProgressReporter(log, every_s=30.0))
            return {"transcript_json": json.dumps(heard.transcript.to_json(),
                                                  ensure_ascii=False)}
        if step == "minutes_written":
            transcript = SpeakerTranscript.from_json(json.loads(job.transcript_json or "{}"))
            minutes, facts = proc.understand(transcript, Path(job.path))
            if job.meeting_date:
                minutes.date = job.meeting_date
            data = minutes.to_json()
            data["time"] = job.meeting_time or facts.time
            return {"minutes_json": json.dumps(data, ensure_ascii=False), "title": minutes.title,
                    "meeting_time": data["time"]}
        if step == "archived":
            mdata = json.loads(job.minutes_json or "{}")
            rec = ArchiveRecord(
                key=job.sha256, source_name=job.name, minutes=Minutes.from_json(mdata),
                transcript=SpeakerTranscript.from_json(json.loads(job.transcript_json or "{}")),
                date=mdata.get("date") or job.meeting_date or time.strftime("%Y-%m-%d"),
                time=mdata.get("time"))
            return {"archive_ref": self.archive.store(rec)}
        if step == "done":
            return self.file_original(job, log)
        raise AssertionError(step)

    def file_original(self, job: Job, log) -> dict[str, Any]:
        """Move the original to processed/ (destination recorded first), or keep it."""
        assert self.store is not None
        if self.cfg.keep_originals:
            return {}
        src = Path(job.path)
        if not is_within(src, self.inbox) and job.dest_path is None:
            return {}  # already filed
        dest = Path(job.dest_path) if job.dest_path else None
        if dest is None:
            dest = unique_path(self.processed / self._rel(src).parent, job.name)
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

    def fail_job(self, job: Job, step: str, error: str, permanent: bool = False) -> None:
        """To failed/ with <name>.error.json. Recorded first, then moved, so a crash in between
        is finished at the next start and the file is never retried by mistake."""
        assert self.store is not None
        log = self.log
        src = Path(job.path)
        dest = unique_path(self.failed / self._rel(src).parent, job.name) \
            if src.exists() and is_within(src, self.inbox) else None
        history = [{"time": _iso(e["at"]), "kind": e["kind"], "step": e["step"],
                    "detail": json.loads(e["detail"]) if e["detail"] else None}
                   for e in reversed(self.store.events(sha=job.sha256, limit=20))]
        cur = self.store.get(job.sha256)
        info = {"file": job.name, "sha256": job.sha256, "step": step,
                "attempts": max(cur.attempts if cur else job.attempts, 1), "error": error,
                "permanent": permanent, "time": _iso(), "inbox_path": job.path,
                "history": history}
        self.store.fail(job.sha256, step, error, None,
                        {"error": error, "moved_to": str(dest) if dest else None})
        if dest is not None:
            self.store.set_dest(job.sha256, str(dest))
        try:
            if dest is not None:
                self._write_error_json(dest, info)
                move_file(src, dest)
                self.store.finish_move(job.sha256, str(dest))
            else:
                self._write_error_json(unique_path(self.failed, job.name), info)
        except OSError as exc:
            log.error("could not move the file to failed/; it stays where it is",
                      error=str(environment_problem(exc) or exc), path=str(src))
        log.error("failed: moved to failed/", step=step, error=error, permanent=permanent,
                  attempts=info["attempts"], moved_to=str(dest) if dest else None)

    def _finish_failed_moves(self) -> None:
        """Failed jobs whose move to failed/ a crash interrupted."""
        assert self.store is not None
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

    def _requeue_orphans(self) -> None:
        """Jobs marked running that no worker holds (a worker could not record the outcome,
        e.g. while the state disk was full): back to the queue. Only stale ones, so a job
        being claimed right now is never touched."""
        assert self.store is not None
        active = {w.sha for w in self.workers if w.sha}
        for job in self.store.jobs("state='running' AND updated_at < ?", (time.time() - 120,)):
            if job.sha256 not in active:
                self.store.release(job.sha256)
                self.work_event.set()

    # ------------------------------------------------------------------ stopping

    def _stop_now(self, why: str) -> int:
        self.notifier.stopping(why)
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.heartbeat("stopped")
        self.log.info(why)
        return 0

    def shutdown(self) -> int:
        """SIGTERM: stop taking files, let the current step finish (up to stop_timeout_s),
        else leave it to be redone at the next start. Exits 0 either way."""
        assert self.store is not None
        busy = [w.doing for w in self.workers if w.doing]
        self.notifier.stopping("stopping" + (f": finishing {'; '.join(busy)}" if busy else ""))
        self.log.info("stopping", busy=busy, wait_s=self.cfg.stop_timeout_s)
        if self.watcher is not None:
            self.watcher.stop()
        deadline = time.monotonic() + self.cfg.stop_timeout_s
        for w in self.workers:
            while w.is_alive() and time.monotonic() < deadline:
                w.join(timeout=0.5)
                self.notifier.watchdog()
        for u in self.uploaders:
            while u.is_alive() and time.monotonic() < deadline:
                u.join(timeout=0.5)
                self.notifier.watchdog()
            if u.is_alive() and u.sha:
                self.store.release_upload(u.sha, u.target)  # redone at the next start
        stuck = [w for w in self.workers if w.is_alive()]
        for w in stuck:
            if w.sha:
                self.store.release(w.sha)
                self.log.warning("step abandoned at shutdown; it is redone at the next start",
                                 job=w.sha[:12], step=w.step)
        self.store.heartbeat("stopped", health=self.health)
        self.log.info("stopped", abandoned=len(stuck))
        if stuck:
            # Workers are inside native model code and cannot be interrupted; everything they
            # could lose is uncommitted, so leave without waiting for them.
            if threading.current_thread() is threading.main_thread():
                sys.stderr.flush()
                os._exit(0)
            return 0
        if any(u.is_alive() for u in self.uploaders):
            return 0  # an upload is still inside an HTTP request: leave it to the next start
        self.store.close()
        if isinstance(self.archive, LocalArchive):
            self.archive.close()
        return 0


class Worker(threading.Thread):
    def __init__(self, service: Service, index: int, processor: Processing):
        super().__init__(name=f"minutesd-worker-{index}", daemon=True)
        self.service = service
        self.index = index
        self.processor = processor
        self.sha: str | None = None
        self.step: str | None = None
        self.doing: str | None = None

    def run(self) -> None:
        svc = self.service
        assert svc.store is not None
        while not svc.stop_event.is_set():
            try:
                job = svc.store.claim_next()
            except Exception as exc:  # the queue itself is unwell (disk full...): wait
                svc.log.error("cannot read the job queue", error=str(environment_problem(exc)
                                                                       or exc))
                svc.stop_event.wait(svc._env_delay)
                continue
            if job is None:
                svc.work_event.wait(timeout=0.5)
                svc.work_event.clear()
                continue
            self.sha = job.sha256
            try:
                svc.run_job(job, self.processor, self)
            except Exception as exc:  # never let a worker die
                env = environment_problem(exc)
                svc.log.error("job interrupted", job=job.short, file=job.name,
                              error=str(env or exc), kind=type(exc).__name__,
                              exc_info=env is None)
                if env is not None:
                    svc.set_health(str(env))
                with contextlib.suppress(Exception):
                    if env is not None:
                        svc.store.wait_environment(job.sha256, self.step or "?", str(env),
                                                   svc._env_delay)
                    else:
                        svc.store.retry_later(job.sha256, self.step or "?",
                                              f"{type(exc).__name__}: {exc}",
                                              svc.backoff(job.attempts + 1))
            finally:
                self.sha = None
                self.step = None
                self.doing = None
