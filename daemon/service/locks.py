"""One daemon per state folder and one per inbox: the two ``flock`` locks, and who holds them.

* The **instance lock**, ``state_dir/minutesd.lock`` (holding the pid): one daemon per job
  queue. ``minutesd status`` decides whether the daemon runs from this lock, not from the
  queue's heartbeat row, which cannot be written when the state disk is full.
* The **inbox lock**: an ``flock`` on the inbox directory itself (an open descriptor of the
  folder, nothing written into it). Two daemons with different state folders but one inbox
  would both process every file; the lock lives on the inbox's own inode, so it holds for any
  state folder, any user, and needs no write access (the inbox is group-writable by design;
  a lock *file* in it could be replaced by anyone who can write there). Where the file system
  does not support ``flock`` on a folder (some network shares), the daemon says so and runs
  without it.

Locks go with the process (``kill -9`` included): there is never a stale lock to clean up.
The pid of a holder comes from ``/proc/locks`` (Linux), else from the lock file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

from daemon.errors import EXIT_USAGE, OperatorError

LOCK_NAME = "minutesd.lock"
PROC_LOCKS = "/proc/locks"


class AlreadyRunning(OperatorError):
    exit_code = EXIT_USAGE


def flock_holders(path: Path) -> list[int] | None:
    """Pids holding an ``flock`` on ``path`` (per ``/proc/locks``); None if it cannot be read."""
    try:
        st = os.stat(path)
        lines = Path(PROC_LOCKS).read_text().splitlines()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids = []
    for line in lines:
        f = line.split()
        if len(f) < 6 or "->" in f or f[1] != "FLOCK":
            continue
        try:
            maj, mino, ino = f[5].split(":")
            if (int(maj, 16), int(mino, 16), int(ino)) == want:
                pids.append(int(f[4]))
        except ValueError:
            continue
    return pids


def _try_flock(fd: int, op: int, wait_s: float = 0.0) -> bool:
    """True if taken. Retries for ``wait_s`` (a ``status`` probing the lock holds it for a
    moment)."""
    end = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= end:
                return False
            time.sleep(0.05)


def lock_holder(state_dir: Path) -> int | None:
    """The pid of the daemon holding the instance lock of ``state_dir`` (0 if it holds it
    but its pid is unknown), or None if no daemon runs there. Read-only."""
    path = Path(state_dir) / LOCK_NAME
    holders = flock_holders(path) if path.exists() else []
    if holders is None:  # no /proc/locks: probe the lock itself, for a moment
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            if _try_flock(fd, fcntl.LOCK_SH):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            holders = []
            with contextlib.suppress(ValueError, OSError):
                holders = [int(os.pread(fd, 32, 0).decode().strip())]
            return holders[0] if holders else 0
        finally:
            os.close(fd)
    return holders[0] if holders else None


class Locks:
    """The daemon's two locks, held from :meth:`take_instance` / :meth:`take_inbox` to exit."""

    def __init__(self, state_dir: Path, inbox: Path, log):
        self.state_dir = Path(state_dir)
        self.inbox = Path(inbox)
        self.log = log
        self.instance_fd: int | None = None
        self.inbox_fd: int | None = None

    def take_instance(self) -> None:
        path = self.state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        if not _try_flock(fd, fcntl.LOCK_EX, wait_s=1.0):
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(f"another minutesd run (pid {other or '?'}) holds {path}")
        self.instance_fd = fd
        with contextlib.suppress(OSError):  # the pid is a courtesy: a full disk must not stop us
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def take_inbox(self) -> None:
        fd = os.open(self.inbox, os.O_RDONLY | os.O_DIRECTORY)
        try:
            taken = _try_flock(fd, fcntl.LOCK_EX, wait_s=1.0)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                self.log.warning("the inbox cannot be locked on this file system; make sure "
                                 "only one minutesd watches it", inbox=str(self.inbox),
                                 error=str(exc))
                return
            raise
        if not taken:
            others = [p for p in flock_holders(self.inbox) or [] if p != os.getpid()]
            os.close(fd)
            who = f"pid {others[0]}" if others else "another process"
            raise AlreadyRunning(
                f"another minutesd run ({who}) already watches the inbox {self.inbox} (with "
                "another state folder?): two daemons would process every file twice. "
                "Stop the other one, or give this one its own inbox (daemon.root / "
                "daemon.inbox)")
        self.inbox_fd = fd

    def release(self) -> None:
        for fd in (self.inbox_fd, self.instance_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.inbox_fd = self.instance_fd = None
