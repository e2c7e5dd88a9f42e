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
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import structlog

from daemon.archive.base import Archive
from daemon.errors import EnvironmentProblem, Handling, describe, handling_of, operator_problem
from daemon.faults import crash_point
from daemon.files import free_mb
from daemon.logs import RepeatLog
from daemon.protocols import Processing
from daemon.service.filing import Filing
from daemon.service.health import Health, backoff
from daemon.service.queue import Job, JobStore
from daemon.service.steps import BY_NAME, LAST, JobCancelled, Sources, StepContext
from daemon.settings import DaemonSettings

PREFLIGHT_FOLDERS = ("state_dir", "archive", "processed")


class StepRunner:
    def __init__(self, cfg: DaemonSettings, store: JobStore, archive: Archive,
                 mirrors: list[str], filing: Filing, health: Health,
                 folders: dict[str, Path], log, stop_event: threading.Event,
                 sources: Sources):
        self.cfg = cfg
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
                              sources=self.sources, log=log)
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
                log.info("step started", step=step.name, attempt=attempt)
                t0 = time.monotonic()
                try:
                    self.preflight()
                    assert step.run is not None
                    values = step.run(ctx, job)
                except JobCancelled as exc:
                    self.filing.cancel_job(job, str(exc))
                    log.warning("job cancelled", reason=str(exc))
                    return
                except Exception as exc:
                    self.step_failed(job, step.name, attempt, exc, log)
                    return
                finally:
                    worker.doing = None
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
