"""Running jobs: the workers, and the step runner that takes a job through its steps.

A worker thread holds its own loaded models (a :class:`~daemon.protocols.Processing`), takes
the oldest due job from the queue and hands it to the :class:`StepRunner`, which runs the
job's remaining steps from the table in :mod:`daemon.service.steps`, recording each with
its output. A failed step is handled by what kind of error it was (:mod:`daemon.errors`),
in one place, :meth:`StepRunner.step_failed`:

* needs the operator: the job waits (no attempt counted), health says the fix;
* permanent: to ``failed/`` now;
* transient: retried with backoff, to ``failed/`` after ``daemon.max_attempts``.

Crashes count too: an attempt is recorded before a step runs, so a recording that kills the
process every time still ends in ``failed/``.

Stuck steps: each step of the table may have a time budget relative to the recording's
length (:meth:`daemon.service.steps.Step.budget`, scaled by ``daemon.step_budget_factor``).
A :class:`StepWatch` beside the running step logs a progress line now and then, and once
the budget is spent it files the recording to ``failed/`` (permanent: "transcribing took
longer than N s for M s of audio"), dumps every thread's stack and ends the process with
:data:`EXIT_STUCK`: model code in native libraries cannot be interrupted, so the only way to
get the worker back is a fresh process (systemd's ``Restart=on-failure`` starts it again;
the queue is committed, nothing else is lost).
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from daemon.archive.base import Archive
from daemon.audio import probe_duration
from daemon.errors import EnvironmentProblem, Handling, describe, handling_of, operator_problem
from daemon.faults import crash_point
from daemon.files import free_mb
from daemon.live import Live
from daemon.logs import RepeatLog
from daemon.protocols import Processing
from daemon.service.filing import Filing
from daemon.service.health import Health, backoff
from daemon.service.queue import Job, JobStore
from daemon.service.steps import BY_NAME, LAST, JobCancelled, Sources, Step, StepContext
from daemon.settings import DaemonSettings

PREFLIGHT_FOLDERS = ("state_dir", "archive", "processed")
EXIT_STUCK = 3  # a step ran past its time budget: the job is in failed/, restart me
PROGRESS_EVERY_S = 60.0  # a "step still running" line this often during a long step


def audio_seconds(job: Job, sources: Sources) -> float | None:
    """The recording's length: from its transcript once there is one, else the header of
    the job's spooled copy (never the inbox file itself: that is read only through the
    confined descriptors)."""
    if job.transcript_json:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            return float(json.loads(job.transcript_json)["duration_s"])
    try:
        copy = sources.copy_of(job.sha256, job.name, Path(job.path))
    except OSError:
        return None
    return probe_duration(copy) if copy is not None else None


def _exit_stuck() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_STUCK)


class StepWatch:
    """Watches one running step: progress lines while it runs, and past its budget the job
    to ``failed/`` and the process ended (see the module docstring). :meth:`finish` is
    called by the worker when the step returns; whichever of the two comes first wins."""

    def __init__(self, runner: StepRunner, job: Job, step: Step, budget: float | None,
                 audio_s: float | None, log):
        self.runner = runner
        self.job = job
        self.step = step
        self.budget = budget
        self.audio_s = audio_s
        # Its own thread does not see the worker's bound context: bind the job here.
        self.log = log.bind(job=job.short, file=job.name)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._expired = False
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._watch, daemon=True,
                                       name=f"minutesd-watch-{step.name}")

    def start(self) -> StepWatch:
        self.thread.start()
        return self

    def finish(self) -> bool:
        """The step returned. False if the watch already gave up on it (the process is
        exiting: the caller must record nothing)."""
        with self._lock:
            if self._expired:
                return False
            self._done.set()
            return True

    def message(self) -> str:
        audio = (f"{self.audio_s:.0f} s of audio" if self.audio_s is not None
                 else "a recording of unknown length")
        return (f"{self.step.verb} took longer than {self.budget:.0f} s for {audio} "
                "(daemon.step_budget_factor sets the limit)")

    def _watch(self) -> None:
        every = PROGRESS_EVERY_S if self.budget is None else \
            max(0.5, min(PROGRESS_EVERY_S, self.budget / 2))
        while True:
            elapsed = time.monotonic() - self.t0
            wait = every if self.budget is None else min(every, self.budget - elapsed)
            if self._done.wait(max(0.0, wait)):
                return
            elapsed = time.monotonic() - self.t0
            if self.budget is None or elapsed < self.budget:
                self.log.info("step still running", step=self.step.name,
                              seconds=round(elapsed), budget_s=self._round(self.budget),
                              audio_s=self._round(self.audio_s))
                continue
            with self._lock:
                if self._done.is_set():
                    return
                self._expired = True
            self.runner.step_stuck(self)
            return

    @staticmethod
    def _round(x: float | None) -> float | None:
        return None if x is None else round(x, 1)


class StepRunner:
    def __init__(self, cfg: DaemonSettings, store: JobStore, archive: Archive,
                 mirrors: list[str], filing: Filing, health: Health,
                 folders: dict[str, Path], log, stop_event: threading.Event,
                 sources: Sources, live: Live | None = None):
        self.cfg = cfg
        self.live = live  # the review page's live view (None: nobody watches)
        self.store = store
        self.archive = archive
        self.mirrors = mirrors  # names of the mirrors a step that queues uploads queues
        self.filing = filing
        self.health = health
        self.folders = folders
        self.log = log
        self.stop_event = stop_event
        self.sources = sources

    def preflight(self) -> None:
        """Below ``daemon.min_free_mb`` on an output disk: wait (before the disk is full)."""
        if not self.cfg.min_free_mb:
            return
        for name in PREFLIGHT_FOLDERS:
            path = self.folders.get(name)
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
        store = self.store
        with structlog.contextvars.bound_contextvars(job=job.short, file=job.name):
            log = self.log
            ctx = StepContext(processor=processor, archive=self.archive, filing=self.filing,
                              sources=self.sources, log=log,
                              progress=self.live.progress if self.live else None)
            while job.step != LAST:
                if self.stop_event.is_set():
                    store.release(job.sha256)
                    return
                step = BY_NAME[job.next_step or LAST]
                if job.current_step == step.name and job.attempts >= self.cfg.max_attempts:
                    self.filing.fail_job(job, step.name, f"minutesd stopped {job.attempts} times "
                                         "during this step (a crash, kill -9 or out of memory)")
                    return
                attempt = store.begin_step(job.sha256, step.name)
                worker.doing = f"{job.name}: {step.verb}"
                worker.step = step.name
                budget, audio_s = self.budget(step, job)
                log.info("step started", step=step.name, attempt=attempt,
                         **({"budget_s": round(budget, 1)} if budget is not None else {}))
                t0 = time.monotonic()
                watch = StepWatch(self, job, step, budget, audio_s, log).start()
                if self.live:
                    self.live.begin(job.sha256, job.name, step.name, step.verb)
                ended = False
                try:
                    try:
                        self.preflight()
                        assert step.run is not None
                        values = step.run(ctx, job)
                    finally:
                        if not watch.finish():
                            threading.Event().wait()  # given up on: the process is exiting
                except JobCancelled as exc:
                    ended = self._end(job, step, str(exc))
                    self.filing.cancel_job(job, str(exc))
                    log.warning("job cancelled", reason=str(exc))
                    return
                except Exception as exc:
                    ended = self._end(job, step, describe(exc))
                    self.step_failed(job, step.name, attempt, exc, log)
                    return
                finally:
                    worker.doing = None
                    if not ended:
                        self._end(job, step, None)
                secs = round(time.monotonic() - t0, 2)
                store.finish_step(job.sha256, step.name, detail={"seconds": secs},
                                  uploads=self.mirrors if step.queues_uploads else [], **values)
                log.info("step finished", step=step.name, seconds=secs,
                         **({"archive": values["archive_ref"]} if "archive_ref" in values else {}))
                self.health.set(None)
                crash_point(step.name)
                job = store.get(job.sha256)
                assert job is not None
            log.info("job done", title=job.title, archive=job.archive_ref, original=job.path)

    def _end(self, job: Job, step: Step, error: str | None) -> bool:
        if self.live:
            self.live.end(job.sha256, step.name, error is None, error)
        return True

    def budget(self, step: Step, job: Job) -> tuple[float | None, float | None]:
        """The step's time budget (None: no limit) and the audio length it is for."""
        if step.budget(None, self.cfg.step_budget_factor) is None:
            return None, None
        audio_s = audio_seconds(job, self.sources)
        return step.budget(audio_s, self.cfg.step_budget_factor), audio_s

    def step_stuck(self, watch: StepWatch) -> None:
        """Called by a :class:`StepWatch` whose step is past its budget: the job to failed/,
        every thread's stack to stderr, then the process ends (:data:`EXIT_STUCK`)."""
        msg = watch.message()
        with structlog.contextvars.bound_contextvars(job=watch.job.short, file=watch.job.name):
            try:
                self.log.error("step over its time limit; giving up on this recording and "
                               "restarting minutesd (model code cannot be interrupted)",
                               step=watch.step.name, budget_s=round(watch.budget or 0, 1),
                               audio_s=watch._round(watch.audio_s), exit_status=EXIT_STUCK)
                with contextlib.suppress(Exception):
                    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                self.filing.fail_job(watch.job, watch.step.name, msg, permanent=True)
                with contextlib.suppress(Exception):
                    self.store.heartbeat("stopped", health=f"restarting: {msg}")
            finally:
                self.exit_stuck()

    exit_stuck: Callable[[], None] = staticmethod(_exit_stuck)

    def step_failed(self, job: Job, step: str, attempt: int, exc: Exception, log) -> None:
        """The one place that decides what a failed step means for the recording."""
        handling = handling_of(exc)
        if handling is Handling.OPERATOR:
            self.wait_for_operator(job, step, exc, log)
        elif handling is Handling.PERMANENT:
            self.filing.fail_job(job, step, describe(exc), permanent=True)
        elif attempt >= self.cfg.max_attempts:
            log.error("step failed", step=step, attempt=attempt, error=describe(exc),
                      exc_info=True)
            self.filing.fail_job(job, step, describe(exc))
        else:
            delay = backoff(attempt, self.cfg.retry_backoff_s, self.cfg.retry_backoff_max_s)
            self.store.retry_later(job.sha256, step, describe(exc), delay)
            log.warning("step failed; will retry", step=step, attempt=attempt,
                        max_attempts=self.cfg.max_attempts, error=describe(exc),
                        retry_in_s=round(delay, 1))

    def wait_for_operator(self, job: Job, step: str, exc: BaseException, log,
                          count_wait: bool = True) -> None:
        """Disk full, permissions, credentials: the job waits (its attempt given back) and
        health says what to fix; it is tried again after a growing delay."""
        problem = operator_problem(exc)
        assert problem is not None
        delay = self.health.next_wait_s() if count_wait else self.health.wait_s()
        self.health.set(problem)
        where = ({"what": problem.kind, "path": problem.path, "detail": problem.detail}
                 if isinstance(problem, EnvironmentProblem) else
                 {"what": "needs the operator", "detail": str(problem).split(". Fix:")[0]})
        log.error(f"cannot continue: {where.pop('what')}", step=step, **where, fix=problem.fix,
                  retry_in_s=round(delay), nothing_lost=True)
        self.store.wait_environment(job.sha256, step, str(problem), delay)


class Worker(threading.Thread):
    """Takes due jobs from the queue, one at a time, and runs them with its own models."""

    def __init__(self, index: int, processor: Processing, runner: StepRunner,
                 work_event: threading.Event):
        super().__init__(name=f"minutesd-worker-{index}", daemon=True)
        self.index = index
        self.processor = processor
        self.runner = runner
        self.work_event = work_event
        self.sha: str | None = None
        self.step: str | None = None
        self.doing: str | None = None
        self.queue_errors = RepeatLog(runner.log)

    def run(self) -> None:
        r = self.runner
        while not r.stop_event.is_set():
            try:
                job = r.store.claim_next()
            except Exception as exc:  # the queue itself is unwell (disk full...): wait
                self.queue_errors.error("cannot read the job queue", error=describe(exc))
                r.stop_event.wait(r.health.wait_s())
                continue
            self.queue_errors.ok()
            if job is None:
                self.work_event.wait(timeout=0.5)
                self.work_event.clear()
                continue
            self.sha = job.sha256
            try:
                r.run_job(job, self.processor, self)
            except Exception as exc:  # never let a worker die
                self.interrupted(job, exc)
            finally:
                self.sha = None
                self.step = None
                self.doing = None

    def interrupted(self, job: Job, exc: Exception) -> None:
        """An error outside a step (recording its outcome failed, e.g. the state disk is
        full): the job goes back to the queue, by the same rules as a failed step."""
        r = self.runner
        operator = handling_of(exc) is Handling.OPERATOR
        r.log.error("job interrupted", job=job.short, file=job.name, error=describe(exc),
                    kind=type(exc).__name__, exc_info=not operator)
        with contextlib.suppress(Exception):
            if operator:
                r.wait_for_operator(job, self.step or "?", exc, r.log, count_wait=False)
            else:
                r.store.retry_later(job.sha256, self.step or "?", describe(exc),
                                    backoff(job.attempts + 1, r.cfg.retry_backoff_s,
                                            r.cfg.retry_backoff_max_s))
