"""The steps of a job, defined once: the table at the bottom of this file.

A job is one recording's content (its sha256). It moves through recorded steps::

    received ──▶ transcribed ──▶ minutes_written ──▶ archived ──▶ done
                 (transcript     (minutes JSON       (archive      (original moved to
                  JSON stored)    stored)             reference)    processed/ or kept)

Each step is a function from the job (and the few objects it needs, a :class:`StepContext`)
to the values the queue records with the step, in one transaction. From the table come the
queue's schema (its CHECK constraint), the order of the steps, the words the log and
``status`` use, the dispatch of the step runner, and which step queues uploads to mirrors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from daemon.archive.base import Archive, ArchiveRecord
from daemon.confined import Confined
from daemon.facts import from_record
from daemon.progress import ProgressReporter
from daemon.protocols import Processing
from daemon.types import Minutes, SpeakerTranscript


class JobCancelled(Exception):
    """Not an error: the job's recording went away or changed before it was processed (the
    new content, if any, is taken as a new recording). The runner records it as cancelled."""


class JobRecord(Protocol):
    """The fields of a queued job a step reads (:class:`daemon.service.queue.Job`)."""

    sha256: str
    name: str
    path: str
    size: int
    mtime_ns: int
    meeting_date: str | None
    meeting_time: str | None
    transcript_json: str | None
    minutes_json: str | None
    facts_json: str | None


class Filer(Protocol):
    def file_original(self, job: Any, log: Any) -> dict[str, Any]: ...


class Sources(Protocol):
    """The recordings' copies (:class:`daemon.service.spool.Spool`)."""

    inbox: Confined

    def copy_of(self, sha: str, name: str, inbox_path: Path) -> Path | None: ...

    def unchanged(self, sha: str, inbox_path: Path) -> bool | None: ...


@dataclass
class StepContext:
    processor: Processing
    archive: Archive
    filing: Filer
    sources: Sources
    log: Any
    progress: Callable[[str, float, float], None] | None = None  # also told (the live view)


def check_source(ctx: StepContext, job: JobRecord, content: bool = False) -> Path:
    """The job's copy of its recording, while the inbox still holds that recording (the
    same size and mtime; with ``content``, the same bytes). A recording removed from the
    inbox or changed there cancels the job: the new content is taken as a new recording,
    so a file that grows or is rewritten becomes one meeting, never two."""
    src = Path(job.path)
    st = ctx.sources.inbox.lstat(src)
    if st is None:
        raise JobCancelled(f"{src} was removed from the inbox before it was processed")
    changed = JobCancelled(f"{src} changed after it was read; the new content is taken as a "
                           "new recording")
    if (st.st_size, st.st_mtime_ns) != (job.size, job.mtime_ns):
        raise changed
    if content and ctx.sources.unchanged(job.sha256, src) is False:
        raise changed
    copy = ctx.sources.copy_of(job.sha256, job.name, src)
    if copy is None:
        raise changed
    return copy


def transcribe(ctx: StepContext, job: JobRecord) -> dict[str, Any]:
    info = from_record(job.facts_json)  # a sidecar that cannot be used fails the job here
    src = check_source(ctx, job)
    report = ProgressReporter(ctx.log, every_s=30.0)
    also = ctx.progress

    def progress(stage: str, done_s: float, total_s: float) -> None:
        report(stage, done_s, total_s)
        if also is not None:
            also(stage, done_s, total_s)

    heard = ctx.processor.hear(src, progress=progress, info=info)
    ctx.processor.remember_voices(job.sha256, heard)
    return {"transcript_json": json.dumps(heard.transcript.to_json(), ensure_ascii=False)}


def write_minutes(ctx: StepContext, job: JobRecord) -> dict[str, Any]:
    copy = check_source(ctx, job)
    transcript = SpeakerTranscript.from_json(json.loads(job.transcript_json or "{}"))
    # Dated here, from the facts, the copy's tags, the recording's name or its mtime.
    minutes, facts = ctx.processor.understand(transcript, copy, info=from_record(job.facts_json),
                                              name=job.name)
    data = minutes.to_json()
    data["time"] = facts.time
    return {"minutes_json": json.dumps(data, ensure_ascii=False), "title": minutes.title,
            "meeting_date": minutes.date, "meeting_time": data["time"]}


def archive(ctx: StepContext, job: JobRecord) -> dict[str, Any]:
    check_source(ctx, job, content=True)  # never archive a recording from its old content
    mdata = json.loads(job.minutes_json or "{}")
    rec = ArchiveRecord(
        key=job.sha256, source_name=job.name, minutes=Minutes.from_json(mdata),
        transcript=SpeakerTranscript.from_json(json.loads(job.transcript_json or "{}")),
        date=mdata.get("date") or job.meeting_date or time.strftime("%Y-%m-%d"),
        time=mdata.get("time"))
    return {"archive_ref": ctx.archive.store(rec)}


def file_original(ctx: StepContext, job: JobRecord) -> dict[str, Any]:
    return ctx.filing.file_original(job, ctx.log)


@dataclass(frozen=True)
class Step:
    name: str
    verb: str  # for the log and `status`: "<file>: transcribing"
    run: Callable[[StepContext, JobRecord], dict[str, Any]] | None  # None: the first step
    queues_uploads: bool = False  # recording it queues one upload per mirror
    # The time limit of one attempt: budget_s + budget_per_audio_s per second of audio, times
    # daemon.step_budget_factor (0: no limit). None: no limit (quick file work).
    budget_s: float | None = None
    budget_per_audio_s: float = 0.0

    def budget(self, audio_s: float | None, factor: float) -> float | None:
        """Seconds one attempt may take for ``audio_s`` of audio (unknown: the fixed part)."""
        if not factor or self.budget_s is None:
            return None
        return factor * (self.budget_s + self.budget_per_audio_s * max(0.0, audio_s or 0.0))


# Budgets are generous on purpose: on 2 slow AVX2 cores Whisper base takes ~0.15 s per
# second of audio and the embedded LLM writes ~2 tokens/s (10+ minutes for the minutes of a
# 4-minute meeting); a step over its budget is stuck, not slow (Whisper looping on
# pitch-shifted speech spent 250 s on 59 s of audio).
STEPS: tuple[Step, ...] = (
    Step("received", "receiving", None),
    Step("transcribed", "transcribing", transcribe, budget_s=300.0, budget_per_audio_s=3.0),
    Step("minutes_written", "writing minutes", write_minutes, budget_s=1800.0,
         budget_per_audio_s=10.0),
    Step("archived", "archiving", archive, queues_uploads=True),
    Step("done", "filing the original", file_original),
)

BY_NAME = {s.name: s for s in STEPS}
STEP_NAMES = tuple(s.name for s in STEPS)
NEXT_STEP = dict(zip(STEP_NAMES[:-1], STEP_NAMES[1:], strict=True))
FIRST, LAST = STEP_NAMES[0], STEP_NAMES[-1]
# The steps a job is at once its meeting is in the local archive (what a mirror can upload).
ARCHIVED_STEPS = STEP_NAMES[next(i for i, s in enumerate(STEPS) if s.queues_uploads):]
