"""``minutesd run``: the daemon's life -- start, load models, the main loop, stop.

One process, a few threads:

* the **main loop** (here) drains watcher events into :class:`~daemon.service.intake.Intake`,
  rescans the inbox (at start and every ``rescan_interval_s``), writes a heartbeat, keeps
  systemd informed and pings its watchdog;
* **workers** (``daemon.concurrency``, 1 by default), each holding its own loaded models,
  run jobs through their steps (:mod:`daemon.service.runner`);
* an **uploader** per mirror archive (Google Drive, when configured) copies archived
  meetings from the local archive at its own pace (:mod:`daemon.service.uploads`).

Exactly once: every step's output is committed with the step; the archive is idempotent per
sha256; moves record their destination first. A ``kill -9`` at any instant therefore loses
at most the step in progress, which is redone at the next start.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon import registry
from daemon.archive.base import Archive
from daemon.archive.local import LocalArchive
from daemon.confined import Confined
from daemon.errors import (
    EXIT_ERROR,
    EXIT_OK,
    OperatorError,
    describe,
    environment_problem,
)
from daemon.files import is_within
from daemon.live import Live
from daemon.logs import RepeatLog, get_logger
from daemon.notify import Notifier
from daemon.protocols import Processing
from daemon.service.filing import Filing
from daemon.service.health import Health
from daemon.service.intake import Intake
from daemon.service.layout import HEARTBEAT_S, check_layout, daemon_folders
from daemon.service.locks import Locks
from daemon.service.queue import DB_NAME, Job, JobStore
from daemon.service.rebuild import open_queue
from daemon.service.runner import StepRunner, Worker
from daemon.service.spool import SPOOL_NAME, Spool
from daemon.service.statusfile import STATUS_NAME, StatusFile
from daemon.service.uploads import Uploader
from daemon.settings import Settings
from daemon.watch import InboxWatcher
from daemon.web.guard import WebRefused
from daemon.web.server import WebServer

ProcessorFactory = Callable[[Settings, Any], Processing]


class _ToStructlog(logging.Handler):
    """Third-party stdlib logging through structlog, so it carries the job's bound context."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # logging must never raise
            get_logger(record.name).log(record.levelno, record.getMessage())


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
        self.state_dir = d.resolved_state_dir()
        self.archive = archive or registry.build_archive(settings)
        self.mirrors: list[Archive] | None = mirrors  # built in open() (they keep state there)
        self.notifier = notifier or Notifier()
        # The review page inside the daemon (web.enabled): a live hub the steps and the
        # minutes writer publish to, served as server-sent events.
        self.live: Live | None = Live() if settings.web.enabled else None
        self.web: WebServer | None = None
        live = self.live
        self.processor_factory = processor_factory or (
            (lambda s, log: registry.build_processor(s, log, on_token=live.token)) if live
            else registry.build_processor)
        self.log = get_logger("minutesd.daemon")
        self.stop_event = threading.Event()
        self.work_event = threading.Event()
        self.monitor = Health(self.log, first_wait_s=max(1.0, min(d.retry_backoff_s, 60.0)),
                              max_wait_s=max(60.0, d.retry_backoff_max_s),
                              publish=self._publish_health)
        self.watcher: InboxWatcher | None = None
        self.store: JobStore | None = None
        self.filing: Filing | None = None
        self.intake: Intake | None = None
        self.runner: StepRunner | None = None
        self.processors: list[Processing] = []
        self.workers: list[Worker] = []
        self.uploaders: list[Uploader] = []
        self._signals = 0
        self.locks = Locks(self.state_dir, self.inbox, self.log)
        self.statusfile = StatusFile(self.state_dir / STATUS_NAME)
        self._phase = "starting"
        self._started_at = time.time()
        self.loop_errors = RepeatLog(self.log)
        self._heartbeat_failed = False
        self._loader: threading.Thread | None = None
        self._last_heartbeat = 0.0
        self._last_orphan_check = 0.0
        self._last_watch_restart = 0.0
        self._status_text = ""

    @property
    def health(self) -> str | None:
        """The problem that needs the operator right now, in words (None when healthy)."""
        return self.monitor.problem

    def _publish_health(self, problem: str | None) -> None:
        self.write_status()
        if self.store is not None:
            self.store.heartbeat("ready", health=problem)

    def write_status(self, phase: str | None = None) -> None:
        """The status file (in place, so it works on a full state disk; see statusfile)."""
        if phase is not None:
            self._phase = phase
        self.statusfile.write({
            "pid": os.getpid(), "phase": self._phase, "started_at": self._started_at,
            "health": self.health, "blocked": self.monitor.detail,
            "info": self.backends() if self.mirrors is not None else {}})

    # ------------------------------------------------------------------ set-up

    def folders(self) -> dict[str, Path]:
        return daemon_folders(self.settings, getattr(self.archive, "root", None))

    def open(self) -> list[Job]:
        """Folders, the instance lock, the queue; jobs a dead process left running."""
        folders = self.folders()
        check_layout(folders)
        for p in folders.values():
            p.mkdir(parents=True, exist_ok=True)
        self.locks.take_instance()
        self.locks.take_inbox()
        with contextlib.suppress(OSError):  # without it, status falls back to the heartbeat
            self.statusfile.open()
        self.write_status("starting")
        self.store = store = open_queue(self.state_dir / DB_NAME, self.archive, folders,
                                        self.log)
        if self.mirrors is None:
            self.mirrors = registry.build_mirrors(self.settings)
        # The copy must fit; daemon.min_free_mb is then the step runner's to enforce.
        self.spool = spool = Spool(self.state_dir / SPOOL_NAME, Confined(self.inbox),
                                   disk=self.state_dir)
        self.filing = Filing(self.cfg, store, self.log, spool_done=spool.remove)
        self.intake = Intake(self.settings, store, self.filing, spool, self.log, self.stop_event,
                             self.work_event, keepalive=self.notifier.watchdog)
        self.runner = StepRunner(self.cfg, store, self.archive, [m.name for m in self.mirrors],
                                 self.filing, self.monitor, folders, self.log, self.stop_event,
                                 sources=spool, live=self.live)
        store.heartbeat("starting", info=self.backends(), started=True)
        if store.recover_uploads():
            self.log.warning("resuming uploads interrupted by a crash or kill")
        recovered = store.recover()
        for job in recovered:
            self.log.warning("resuming a job interrupted by a crash or kill", job=job.short,
                             file=job.name, last_step=job.step, interrupted_step=job.current_step,
                             attempts=job.attempts)
        self.filing.finish_failed_moves()
        active = {j.sha256 for j in store.jobs("state IN ('queued','running')", limit=1_000_000)}
        if spool.clean(keep=active):
            self.log.info("removed recording copies no job needs", folder=str(spool.folder))
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
        self._loader = th
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

    def _install_signals(self) -> None:
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

    def run(self) -> int:
        """The whole life of the daemon; returns the exit status."""
        if threading.current_thread() is threading.main_thread():
            self._install_signals()
        try:
            self.open()
        except OperatorError as exc:
            self.log.error("cannot start", error=str(exc), state_dir=str(self.state_dir))
            self._not_started()
            return exc.exit_code or EXIT_ERROR
        except Exception as exc:  # noqa: BLE001 - say why, exit non-zero
            self.log.error("cannot start", error=describe(exc), state_dir=str(self.state_dir))
            self._not_started()
            return EXIT_ERROR
        store = self.store
        assert store is not None and self.intake is not None and self.runner is not None
        if self.settings.web.enabled:
            try:
                self.web = WebServer(self.settings, self.live).start()
                self.log.info("review page", url=f"http://{self.web.host}:{self.web.port}/")
            except WebRefused as exc:  # open to the network without a token: not at all
                self.log.error("cannot start", error=str(exc))
                self._not_started()
                return exc.exit_code or EXIT_ERROR
            except OperatorError as exc:  # e.g. the port is taken: recordings still go on
                self.log.error("review page not started", error=str(exc))
        try:
            if not self.load_models():
                return self._stop_while_loading()
        except Exception as exc:
            self.log.error("models failed to load", error=str(exc), kind=type(exc).__name__)
            self.write_status("stopped")
            store.heartbeat("stopped", health=f"models failed to load: {exc}")
            return EXIT_ERROR
        self.watcher = InboxWatcher(self.inbox, self.cfg.ignore, self.cfg.polling,
                                    self.cfg.poll_interval_s, self.log)
        self.watcher.start()
        self.intake.rescan()
        for i, proc in enumerate(self.processors):
            w = Worker(i, proc, self.runner, self.work_event)
            self.workers.append(w)
            w.start()
        for m in self.mirrors or []:
            u = Uploader(m, store, self.stop_event, self.log, spool=self.spool)
            self.uploaders.append(u)
            u.start()
        store.heartbeat("ready", info=self.backends())
        counts = store.counts()
        self.notifier.ready(self.status_line())
        self.log.info("ready", watch=self.watcher.mode, inbox=str(self.inbox),
                      queued=counts["queued"], done=counts["done"], failed=counts["failed"])
        self.write_status("ready")
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception as exc:  # the main loop must survive anything a tick meets
                env = environment_problem(exc)
                # once, then a count: a full disk meets every tick, four times a second
                # keyed by what is wrong where, not the wording: a full disk met by the
                # heartbeat and by taking a file is one problem
                self.loop_errors.error("main loop error", error=describe(exc),
                                       kind=type(exc).__name__,
                                       key=f"{env.kind}|{env.path}" if env is not None
                                       else f"{type(exc).__name__}|{exc}")
                if env is not None:
                    self.monitor.set(env)
            else:
                self.loop_errors.ok()
            self.stop_event.wait(0.25)
        return self.shutdown()

    def _on_signal(self, signum, frame) -> None:
        self._signals += 1
        if self._signals > 1:
            sys.stderr.write("minutesd: second signal, exiting now\n")
            os._exit(1)
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        self.work_event.set()

    def tick(self) -> None:
        assert self.store is not None and self.watcher is not None and self.intake is not None
        now = time.monotonic()
        self.intake.events(self.watcher.drain(), polling=self.watcher.mode == "polling")
        if self.cfg.rescan_interval_s and now - self.intake.last_rescan >= self.cfg.rescan_interval_s:
            self.intake.rescan()
        self.intake.take_ready()
        if not self.watcher.alive() and now - self._last_watch_restart >= 30:
            self._last_watch_restart = now
            self.log.warning("the inbox watcher stopped (folder gone or unmounted?); "
                             "restarting it", inbox=str(self.inbox))
            self.watcher.stop()
            self.watcher.start()
            self.intake.rescan()
        if now - self._last_orphan_check >= 60:
            self._last_orphan_check = now
            self._requeue_orphans()
        if now - self._last_heartbeat >= HEARTBEAT_S or self._heartbeat_failed:
            self._last_heartbeat = now
            self.write_status("ready")
            self._heartbeat_failed = True  # until it is written: tried again at every tick
            self.store.heartbeat("ready", health=self.health)
            self._heartbeat_failed = False
            blocked = self.monitor.detail or {}
            if blocked.get("path") and is_within(Path(blocked["path"]), self.state_dir):
                self.monitor.set(None)  # the state folder takes writes again
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

    def _not_started(self) -> None:
        if self.locks.instance_fd is not None:  # ours: say so, then let the next one start
            self.write_status("stopped")
        self.statusfile.close()
        self.locks.release()

    def _stop_now(self, why: str) -> int:
        self.notifier.stopping(why)
        self.write_status("stopped")
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.heartbeat("stopped")
        self.log.info(why)
        return EXIT_OK

    def _stop_while_loading(self) -> int:
        """SIGTERM while the models load: the loader thread is inside native code (torch,
        CTranslate2) and cannot be stopped, and letting the interpreter tear down around it
        aborts the process ("terminate called without an active exception", exit 134). So:
        record the stop, close the queue and the archive index cleanly, flush the logs and
        leave with os._exit(0). Nothing was in progress; nothing is lost."""
        code = self._stop_now("stopped while loading models")
        loading = self._loader is not None and self._loader.is_alive()
        if not loading or threading.current_thread() is not threading.main_thread():
            return code
        with contextlib.suppress(Exception):
            if self.store is not None:
                self.store.close()
        with contextlib.suppress(Exception):
            if isinstance(self.archive, LocalArchive):
                self.archive.close()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

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
        if self.web is not None:
            self.web.stop()
        self.write_status("stopped")
        with contextlib.suppress(Exception):  # the state disk may be full
            self.store.heartbeat("stopped", health=self.health)
        self.log.info("stopped", abandoned=len(stuck))
        if stuck:
            # Workers are inside native model code and cannot be interrupted; everything they
            # could lose is uncommitted, so leave without waiting for them.
            if threading.current_thread() is threading.main_thread():
                sys.stderr.flush()
                os._exit(0)
            return EXIT_OK
        if any(u.is_alive() for u in self.uploaders):
            return EXIT_OK  # an upload is still inside an HTTP request: leave it to the next start
        self.store.close()
        if isinstance(self.archive, LocalArchive):
            self.archive.close()
        self.statusfile.close()
        self.locks.release()
        return EXIT_OK
