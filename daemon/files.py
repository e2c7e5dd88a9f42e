"""File moves that survive crashes, hashing, and telling environment problems from bad input.

Disk-full and permission errors are not the recording's fault: retrying the same file later
works once the admin frees space or fixes ownership. :func:`environment_problem` recognises
them (also inside SQLite errors and wrapped exceptions) so the daemon can report them in
words and wait, instead of counting them against the file and moving it to ``failed/``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

ENV_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
}

FIX = {
    "disk full": "free some space there (or lower daemon.min_free_mb)",
    "disk quota exceeded": "raise the quota of the service user or free some space",
    "permission denied": "give the service user (e.g. minutesd) read/write access to that "
                         "folder, and make sure the unit's ReadWritePaths= covers it",
    "operation not permitted": "check ownership and the unit's ReadWritePaths=",
    "read-only file system": "the folder is read-only: remount it read-write or add it to the "
                             "unit's ReadWritePaths=",
    "input/output error": "check the disk or the network share",
}


class EnvironmentProblem(Exception):
    """The machine, not the recording, is at fault (disk full, permissions). Nothing is lost:
    the job waits and is retried; it does not count as a failed attempt."""

    def __init__(self, kind: str, path: str | None, detail: str):
        self.kind, self.path, self.detail = kind, path, detail
        where = f" at {path}" if path else ""
        super().__init__(f"{kind}{where}: {detail}. Fix: {FIX.get(kind, 'check the folder')}. "
                         "Nothing is lost; minutesd retries by itself.")


def environment_problem(exc: BaseException) -> EnvironmentProblem | None:
    """The environment problem behind ``exc`` (walking causes), or None for anything else."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
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
        e = e.__cause__ or e.__context__
    return None


def sha256_file(path: Path, on_block: Callable[[], None] | None = None) -> str:
    """sha256 of a file, read in 1 MiB blocks; ``on_block`` runs every 64 MiB (watchdog)."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            n += 1
            if on_block and n % 64 == 0:
                on_block()
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unique_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem (2).ext`` and so on if that exists."""
    p = folder / name
    if not p.exists() and not p.is_symlink():
        return p
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension (or a dotfile)
        stem, dot, ext = name, "", ""
    for i in range(2, 100_000):
        p = folder / f"{stem} ({i}){dot}{ext}"
        if not p.exists() and not p.is_symlink():
            return p
    raise FileExistsError(folder / name)


def move_file(src: Path, dest: Path) -> Path:
    """Move ``src`` to ``dest`` durably. Same file system: one rename. Across file systems:
    copy to a temp name beside ``dest``, fsync, rename, then remove ``src`` -- a crash in
    between leaves both copies (never none); the caller's recorded destination resolves it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dest.parent / f".{dest.name}.minutesd-copy"
        try:
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                shutil.copyfileobj(fi, fo, 1 << 22)
                fo.flush()
                os.fsync(fo.fileno())
            shutil.copystat(src, tmp)
            os.rename(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(dest.parent)
        os.unlink(src)
        fsync_dir(src.parent)
        return dest
    fsync_dir(dest.parent)
    fsync_dir(src.parent)
    return dest


def free_mb(path: Path) -> float:
    """Free space (MB, for unprivileged users) on the file system holding ``path``."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize / 1e6


def is_within(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False
