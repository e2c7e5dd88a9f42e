"""The daemon's status file: what ``minutesd status`` reads when the job queue cannot say.

The heartbeat row in the job queue cannot be written when the state disk is full, which is
exactly when the operator most needs to hear from the daemon. So the daemon also keeps
``state_dir/minutesd.status``: a file of fixed size (:data:`SIZE` bytes), written out in
full once at start (its blocks allocated then), and from then on overwritten *in place*
with ``pwrite`` at offset 0. Overwriting blocks a file already owns needs no new block, so
it works on a full disk (ext4, xfs, tmpfs; not on copy-on-write file systems such as btrfs
or zfs, where the write may fail: then only the queue's heartbeat is left, as before).

The content is one JSON object padded with spaces. A reader may catch a write half done;
:func:`read_status` retries a few times and gives None if it never reads a whole object.
Whether the daemon *runs* is not decided here but by the instance lock
(:func:`daemon.service.layout.lock_holder`); this file says what it is doing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

STATUS_NAME = "minutesd.status"
SIZE = 4096


class StatusFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None
        self.error: str | None = None  # why the last write failed, if it did

    def open(self) -> None:
        """Create (or reuse) the file with all its blocks written, so later writes need none."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o640)
        try:
            if os.fstat(fd).st_size != SIZE:
                os.ftruncate(fd, 0)
                os.pwrite(fd, b" " * SIZE, 0)  # real bytes, not a hole: the blocks exist now
                os.fsync(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def write(self, record: dict[str, Any]) -> bool:
        """Overwrite the file in place with ``record`` (plus ``updated_at``); never raises
        (the disk may be the problem). True if it was written."""
        if self._fd is None:
            return False
        data = json.dumps({**record, "updated_at": time.time()}, ensure_ascii=False,
                          default=str).encode()
        if len(data) > SIZE - 1:  # keep it whole: the essentials, long texts cut
            short = {k: record.get(k) for k in ("pid", "phase", "started_at")}
            short["health"] = (record.get("health") or "")[:1000] or None
            short["blocked"] = record.get("blocked")
            data = json.dumps({**short, "updated_at": time.time()}, ensure_ascii=False,
                              default=str).encode()
        try:
            os.pwrite(self._fd, data + b"\n" + b" " * (SIZE - 1 - len(data)), 0)
        except OSError as exc:
            self.error = str(exc)
            return False
        self.error = None
        return True

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def read_status(path: Path, tries: int = 5) -> dict[str, Any] | None:
    """The last record written, or None (no file, or never a whole record after ``tries``)."""
    for _ in range(tries):
        try:
            raw = Path(path).read_bytes()
        except OSError:
            return None
        try:
            out = json.loads(raw.decode("utf-8", errors="replace").strip() or "null")
        except ValueError:
            time.sleep(0.01)  # caught a write half done
            continue
        return out if isinstance(out, dict) else None
    return None
