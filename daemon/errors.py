"""One error hierarchy, sorted by what must happen to the recording.

Every error minutesd raises on purpose is a :class:`MinutesdError`, and each one says, by its
class, how the daemon must handle it (:class:`Handling`):

* **permanent** (:class:`PermanentError`) -- the recording itself cannot be processed: an
  undecodable file, no valid minutes after every repair, a request the API rejects as such.
  Trying again gives the same answer, so the file goes to ``failed/`` at once.
* **transient** (:class:`TransientError`) -- the world may be better in a minute: a 5xx, a
  timeout, a dropped connection, a rate limit. Retried with backoff; a job gives up after
  ``daemon.max_attempts``, an upload never does.
* **needs the operator** (:class:`OperatorError`) -- the machine or the set-up is at fault,
  not the recording: revoked or missing credentials (OpenAI, Google), a full disk, missing
  permissions, a missing model. The job (or upload) *waits*: no attempt is counted, ``status``
  and the log say the fix, and it resumes by itself once the fix is in.

Anything else (a bug, an exception from a library nobody classified) is treated as transient,
so it is retried a few times and then reported, never retried forever.

The three places that act on errors branch on :func:`handling_of` once each: the step runner
(:mod:`daemon.service.runner`), the uploader (:mod:`daemon.service.uploads`) and the CLI's
exit status (:func:`exit_code`). OS and SQLite errors that mean "disk full", "permission
denied" and the like are recognised wherever they come from (:func:`environment_problem`),
also inside wrapped exceptions.

This module imports nothing of minutesd.
"""

from __future__ import annotations

import errno
import sqlite3
from enum import StrEnum
from typing import ClassVar


class Handling(StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    OPERATOR = "operator"


# Exit statuses of the CLI (sysexits.h where one fits).
EXIT_OK = 0
EXIT_ERROR = 1  # needs you (the message says the fix), or something unexpected
EXIT_NO_MATCH = 1  # a search (or a meeting reference) found nothing
EXIT_USAGE = 2  # invalid settings or arguments, folders that cannot work together
EXIT_BAD_INPUT = 65  # EX_DATAERR: this recording cannot be processed as it is
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: a service did not answer; the same command may work later

_EXIT_BY_HANDLING = {Handling.PERMANENT: EXIT_BAD_INPUT, Handling.TRANSIENT: EXIT_TEMPFAIL,
                     Handling.OPERATOR: EXIT_ERROR}


class MinutesdError(Exception):
    """The root. ``fix`` says what a person can do about it, when anything."""

    handling: ClassVar[Handling] = Handling.TRANSIENT
    exit_code: ClassVar[int | None] = None  # None: by handling (see exit_code())

    def __init__(self, message: str = "", *, fix: str | None = None,
                 handling: Handling | None = None):
        super().__init__(message)
        self.fix = fix
        if handling is not None:
            self.handling = handling  # type: ignore[misc]  # one instance sorted otherwise

    def __str__(self) -> str:
        msg = super().__str__()
        if self.fix and "Fix:" not in msg:
            return f"{msg.rstrip('. ')}. Fix: {self.fix}"
        return msg


class PermanentError(MinutesdError):
    """The recording cannot be processed; trying again gives the same answer."""

    handling = Handling.PERMANENT


class TransientError(MinutesdError):
    """Worth trying again later (the network, a busy service)."""

    handling = Handling.TRANSIENT


class OperatorError(MinutesdError):
    """The machine or the set-up needs a person; the recording waits, nothing is lost."""

    handling = Handling.OPERATOR


class CredentialsError(OperatorError):
    """Credentials are missing, wrong, expired or revoked (an API key, a Google token)."""


class ConfigError(OperatorError, ValueError):
    """A setting names something that cannot work (a model with the wrong backend...)."""


class ModelNotAvailable(OperatorError):
    """A configured model cannot be found; the message says how to get it."""


# --------------------------------------------------------------------------- the environment

ENV_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
}

FIX = {  # {where}: the folder concerned ("that folder" when unknown)
    "disk full": "free space on the disk holding {where} (or lower daemon.min_free_mb)",
    "disk quota exceeded": "raise the quota of the service user on {where} or free some "
                           "space there",
    "permission denied": "give the service user (e.g. minutesd) read/write access to "
                         "{where}, and make sure the unit's ReadWritePaths= covers it",
    "operation not permitted": "check the ownership of {where} and the unit's ReadWritePaths=",
    "read-only file system": "{where} is read-only: remount it read-write or add it to the "
                             "unit's ReadWritePaths=",
    "input/output error": "check the disk or the network share holding {where}",
}


def fix_for(kind: str, path: str | None) -> str:
    """What to do about an environment problem, naming the folder where it is known."""
    return FIX.get(kind, "check {where}").format(where=path or "that folder")


class EnvironmentProblem(OperatorError):
    """The machine, not the recording, is at fault (disk full, permissions). Nothing is lost:
    the job waits and is retried; it does not count as a failed attempt. ``kind`` is the
    problem in words ("disk full"), ``path`` where, when known (the fix names it)."""

    def __init__(self, kind: str, path: str | None, detail: str):
        self.kind, self.path, self.detail = kind, path, detail
        where = f" at {path}" if path else ""
        fix = fix_for(kind, path)
        super().__init__(f"{kind}{where}: {detail}. Fix: {fix}. "
                         "Nothing is lost; minutesd retries by itself.", fix=fix)

    def at(self, path: str) -> EnvironmentProblem:
        """The same problem, placed (an SQLite error does not say which file it was)."""
        return self if self.path else EnvironmentProblem(self.kind, path, self.detail)


def _causes(exc: BaseException):
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _as_environment(e: BaseException) -> EnvironmentProblem | None:
    if isinstance(e, EnvironmentProblem):
        return e
    if isinstance(e, OSError) and e.errno in ENV_ERRNOS:
        path = e.filename if isinstance(e.filename, str) else None
        return EnvironmentProblem(ENV_ERRNOS[e.errno], path, e.strerror or str(e))
    if isinstance(e, sqlite3.OperationalError):
        msg = str(e).lower()
        if "disk is full" in msg or "database or disk is full" in msg:
            return EnvironmentProblem("disk full", None, f"SQLite: {e}")
        if "readonly" in msg or "read-only" in msg:
            return EnvironmentProblem("read-only file system", None, f"SQLite: {e}")
        if "unable to open" in msg:
            return EnvironmentProblem("permission denied", None, f"SQLite: {e}")
        if "disk i/o error" in msg:
            return EnvironmentProblem("input/output error", None, f"SQLite: {e}")
    return None


def environment_problem(exc: BaseException) -> EnvironmentProblem | None:
    """The environment problem behind ``exc`` (walking causes), or None for anything else."""
    for e in _causes(exc):
        if (env := _as_environment(e)) is not None:
            return env
    return None


# --------------------------------------------------------------------------- sorting


def operator_problem(exc: BaseException) -> MinutesdError | None:
    """What needs the operator behind ``exc`` (walking causes): an error classed so, or an
    OS/SQLite error that means a full disk, missing permissions and the like."""
    for e in _causes(exc):
        if isinstance(e, MinutesdError) and e.handling is Handling.OPERATOR:
            return e
        if (env := _as_environment(e)) is not None:
            return env
    return None


def handling_of(exc: BaseException) -> Handling:
    """How the daemon must treat ``exc``: the first classified error among it and its
    causes decides; an environment problem anywhere makes it the operator's; anything
    unclassified is transient."""
    if operator_problem(exc) is not None:
        return Handling.OPERATOR
    for e in _causes(exc):
        if isinstance(e, MinutesdError):
            return e.handling
    return Handling.TRANSIENT


def describe(exc: BaseException) -> str:
    """The message to show: the operator's problem in words where there is one."""
    op = operator_problem(exc)
    if op is not None:
        return str(op)
    if isinstance(exc, MinutesdError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def exit_code(exc: BaseException) -> int:
    """The CLI's exit status for a command that ended with ``exc``."""
    for e in _causes(exc):
        if isinstance(e, MinutesdError) and e.exit_code is not None:
            return e.exit_code
    if not any(isinstance(e, MinutesdError) for e in _causes(exc)) \
            and environment_problem(exc) is None:
        return EXIT_ERROR  # unexpected
    return _EXIT_BY_HANDLING[handling_of(exc)]
