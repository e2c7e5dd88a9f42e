"""The daemon's own copy of each recording it works on: ``<state_dir>/spool/<sha256>/<name>``.

A recording is read from the inbox exactly once, through a descriptor opened without
following links (:mod:`daemon.confined`), and copied here while it is hashed. Every later
step reads this copy, so what is transcribed is byte for byte what was hashed, whatever
happens in the inbox meanwhile (a folder swapped for a link, the file rewritten in place).
Before the meeting is archived and before the original is filed, :meth:`Spool.unchanged`
hashes the inbox file again: a recording that changed after it was read is never archived
or filed from its old content (the new content is taken as a new recording).

A copy lives while its job is active and is removed when the job is done, failed or
cancelled; at start, copies no active job needs are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.confined import Confined
from daemon.errors import EnvironmentProblem
from daemon.files import free_mb, fsync_dir

BLOCK = 1 << 20
SPOOL_NAME = "spool"  # under daemon.state_dir


@dataclass(frozen=True)
class Taken:
    sha256: str
    size: int
    mtime_ns: int
    copy: Path  # the spool copy


class Spool:
    def __init__(self, folder: Path, inbox: Confined, min_free_mb: int = 0,
                 disk: Path | None = None):
        self.folder = Path(folder)
        self.inbox = inbox
        self.min_free_mb = min_free_mb
        self.disk = Path(disk) if disk is not None else self.folder  # named when it is full

    def path(self, sha: str, name: str) -> Path:
        """The copy's path: the recording's own name (it was a valid name in the inbox, and
        the pipeline shows it as the source), in a folder per content."""
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            name = "recording"
        return self.folder / sha / name

    # ------------------------------------------------------------------ taking a copy

    def take(self, path: Path, on_block: Callable[[], None] | None = None) -> Taken | None:
        """Copy the inbox file at ``path`` here while hashing it. None if it changed while
        being read (not complete yet). Raises :class:`~daemon.confined.NotConfined` for a
        link or special file, ``EnvironmentProblem`` if the state disk lacks the room."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.inbox.open(path) as (fd, st):
            need_mb = st.st_size / 1e6 + self.min_free_mb
            free = free_mb(self.folder)
            if free < need_mb:
                raise EnvironmentProblem(
                    "disk full", str(self.disk),
                    f"{free:.0f} MB free, {need_mb:.0f} MB needed to take {Path(path).name}")
            tmp = self.folder / f".take-{os.getpid()}-{st.st_ino}"
            h = hashlib.sha256()
            n = 0
            try:
                with open(tmp, "wb") as out:
                    while block := os.read(fd, BLOCK):
                        h.update(block)
                        out.write(block)
                        n += 1
                        if on_block and n % 64 == 0:
                            on_block()
                    out.flush()
                    os.fsync(out.fileno())
                after = os.fstat(fd)
                if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                    tmp.unlink(missing_ok=True)
                    return None
                os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
                sha = h.hexdigest()
                dest = self.path(sha, Path(path).name)
                if dest.exists():
                    tmp.unlink()
                else:
                    shutil.rmtree(dest.parent, ignore_errors=True)  # a copy under another name
                    dest.parent.mkdir(mode=0o700)
                    os.rename(tmp, dest)
                    fsync_dir(dest.parent)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return Taken(sha, st.st_size, st.st_mtime_ns, dest)

    # ------------------------------------------------------------------ using it

    def copy_of(self, sha: str, name: str, inbox_path: Path) -> Path | None:
        """The spool copy of a job's recording; taken again from the inbox if it is missing
        (a crash between steps, a cleaned state folder) and the inbox still holds the same
        content. None if that content is gone."""
        p = self.path(sha, name)
        if p.is_file():
            return p
        try:
            taken = self.take(inbox_path)
        except OSError:
            return None
        if taken is None or taken.sha256 != sha:
            if taken is not None:
                self.remove(taken.sha256)
            return None
        return taken.copy

    def unchanged(self, sha: str, inbox_path: Path) -> bool | None:
        """Does the inbox file still hold this content? None if it is no longer there (or is
        no longer a regular file reachable without a link)."""
        try:
            with self.inbox.open(inbox_path) as (fd, _st):
                h = hashlib.sha256()
                while block := os.read(fd, BLOCK):
                    h.update(block)
        except OSError:
            return None
        return h.hexdigest() == sha

    def remove(self, sha: str) -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(self.folder / sha)

    def clean(self, keep: set[str]) -> int:
        """Remove copies (and half-written takes) no active job needs; how many."""
        n = 0
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        for e in entries:
            if e.name in keep:
                continue
            with contextlib.suppress(OSError):
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path)
                else:
                    os.unlink(e.path)
                n += 1
        return n
