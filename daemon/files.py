"""File moves that survive crashes, hashing, free space, and folder containment.

(Disk-full and permission errors are recognised in :mod:`daemon.errors`.)
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from daemon.text import cut_utf8

NAME_MAX = 255  # bytes in one path component (ext4, xfs, btrfs, tmpfs; SMB and NFS alike)
# Room every name minutesd derives from a recording's name keeps for what it adds: the
# " (99999)" of unique_path, then ".error.json" and atomic_write's ".<name>.XXXXXXXX" temp
# (21 bytes), or move_file's ".<name>.minutesd-copy" (15).
NAME_RESERVE = 32
MAX_EXT = 16  # longer "extensions" are part of the name (a.b.c.d), cut with it


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


def fit_name(name: str, reserve: int = NAME_RESERVE, limit: int = NAME_MAX) -> str:
    """``name`` short enough that ``reserve`` more bytes still fit in one path component:
    the stem cut at a UTF-8 character boundary, the extension kept. Every name minutesd
    makes from a recording's name goes through this (a 250-byte name is legal, its
    ``.error.json`` beside it is not)."""
    room = limit - reserve
    if len(os.fsencode(name)) <= room:
        return name
    stem, dot, ext = name.rpartition(".")
    if not stem or len(os.fsencode(ext)) > MAX_EXT:
        stem, dot, ext = name, "", ""
    tail = dot + ext
    return cut_utf8(stem, room - len(os.fsencode(tail))).rstrip(" .") + tail


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
