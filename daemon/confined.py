"""Files under one folder, reached without ever following a link.

The inbox is group-writable by design (people drop recordings over SMB/SFTP), so a name in it
may at any instant be a symlink, a FIFO, a device, or a folder swapped for a link to somewhere
else. :class:`Confined` gives the daemon the only ways it touches the inbox:

* every path is walked component by component from a descriptor of the inbox itself, each
  folder opened with ``O_NOFOLLOW | O_DIRECTORY`` and the file with ``O_NOFOLLOW``, so a link
  anywhere on the way is refused by the kernel at the moment of opening -- there is no
  window between a check and the open for a swap to use;
* what is read is read from that descriptor (after ``fstat`` says it is a regular file), and
  the descriptor is what callers hash and copy;
* a file leaves the inbox by ``renameat`` from the descriptor of its (checked) folder, so a
  folder swapped for a link after the check still cannot make the daemon move anything from
  outside;
* scans use ``os.fwalk(follow_symlinks=False)``, which holds a descriptor per folder.

The inbox folder itself is the operator's setting and is trusted; everything under it is not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from daemon.files import fsync_dir

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _of_kind(names: list[str], dfd: int, is_kind) -> list[str]:
    """The names in the folder ``dfd`` whose own type (links not followed) ``is_kind``."""
    out = []
    for name in names:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            continue
        if is_kind(st.st_mode):
            out.append(name)
    return out


class NotConfined(OSError):
    """The name is not a regular file reachable under the folder without a link."""


class Confined:
    def __init__(self, root: Path):
        self.root = Path(root).absolute()

    # ------------------------------------------------------------------ names

    def rel(self, path: Path | str) -> PurePosixPath:
        """``path`` (absolute, under the root, or already relative) as a relative path with no
        ``..``; raises :class:`NotConfined` for anything else (purely lexical)."""
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(self.root)
            except ValueError:
                raise NotConfined(errno.EXDEV, "not under the inbox", str(path)) from None
        parts = PurePosixPath(p).parts
        if not parts or any(part in ("", ".", "..") for part in parts) or parts[0] == "/":
            raise NotConfined(errno.EINVAL, "not a file name under the inbox", str(path))
        return PurePosixPath(*parts)

    # ------------------------------------------------------------------ opening

    def _open_root(self) -> int:
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    @contextlib.contextmanager
    def folder(self, rel_dir: PurePosixPath | tuple[str, ...]) -> Iterator[int]:
        """A descriptor of the folder ``rel_dir`` under the root, every component opened
        without following links (``ELOOP``/``ENOTDIR`` if one is a link or not a folder)."""
        parts = rel_dir.parts if isinstance(rel_dir, PurePosixPath) else tuple(rel_dir)
        fd = self._open_root()
        try:
            for part in parts:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def open(self, path: Path | str) -> Iterator[tuple[int, os.stat_result]]:
        """``(fd, fstat)`` of the regular file at ``path``, opened without following a link,
        never blocking on a FIFO and never taking a terminal. Raises :class:`NotConfined` if
        it is not a regular file, ``FileNotFoundError`` if it is gone."""
        rel = self.rel(path)
        with self.folder(rel.parent if rel.parent != PurePosixPath(".") else ()) as dfd:
            try:
                fd = os.open(rel.name, _FILE_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EWOULDBLOCK):
                    raise NotConfined(exc.errno, "a link or a special file, not a recording",
                                      str(path)) from None
                raise
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise NotConfined(errno.EINVAL, "not a regular file", str(path))
                os.set_blocking(fd, True)
                yield fd, st
            finally:
                os.close(fd)

    def lstat(self, path: Path | str) -> os.stat_result | None:
        """The file's own status (not a link's target), or None if it is not a regular
        file reachable without a link (or is gone)."""
        try:
            rel = self.rel(path)
            with self.folder(rel.parent if rel.parent != PurePosixPath(".") else ()) as dfd:
                st = os.stat(rel.name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def exists(self, path: Path | str) -> bool:
        return self.lstat(path) is not None

    # ------------------------------------------------------------------ scanning

    def walk(self) -> Iterator[tuple[PurePosixPath, list[str], list[str], int]]:
        """``(rel_dir, folders, regular files, dir_fd)`` for each folder under the root,
        links never followed (a link is neither a folder nor a file here). Prune by editing
        ``folders`` in place, as with ``os.walk``."""
        for dirpath, dirnames, filenames, dfd in os.fwalk(self.root, follow_symlinks=False):
            rel = PurePosixPath(os.path.relpath(dirpath, self.root))
            files = _of_kind(filenames, dfd, stat.S_ISREG)
            # fwalk lists a link to a folder among the folders but does not enter it; drop
            # it here so callers never see it as one.
            dirnames[:] = _of_kind(dirnames, dfd, stat.S_ISDIR)
            yield (PurePosixPath() if str(rel) == "." else rel), dirnames, files, dfd

    # ------------------------------------------------------------------ leaving the inbox

    def move_out(self, path: Path | str, dest: Path,
                 expect: os.stat_result | None = None) -> Path:
        """Move the regular file at ``path`` to ``dest`` (outside the root, a folder the
        daemon owns), durably: one ``renameat`` from its checked folder, or across file
        systems a copy from its descriptor (fsynced, renamed into place) and then the unlink.
        ``expect``: the file must still be that inode (else :class:`NotConfined`)."""
        rel = self.rel(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        parent = rel.parent if rel.parent != PurePosixPath(".") else ()
        with self.folder(parent) as dfd:
            st = os.stat(rel.name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise NotConfined(errno.EINVAL, "not a regular file", str(path))
            if expect is not None and (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
                raise NotConfined(errno.ESTALE, "replaced by another file", str(path))
            dest_fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                try:
                    os.rename(rel.name, dest.name, src_dir_fd=dfd, dst_dir_fd=dest_fd)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    self._copy_across(rel, dfd, dest)
                    os.unlink(rel.name, dir_fd=dfd)
                with contextlib.suppress(OSError):
                    os.fsync(dfd)
            finally:
                os.close(dest_fd)
        fsync_dir(dest.parent)
        return dest

    def unlink(self, path: Path | str, expect: os.stat_result | None = None) -> None:
        """Remove the regular file at ``path`` (that inode, if ``expect`` is given)."""
        rel = self.rel(path)
        with self.folder(rel.parent if rel.parent != PurePosixPath(".") else ()) as dfd:
            st = os.stat(rel.name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or (expect is not None and (
                    st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino)):
                raise NotConfined(errno.ESTALE, "not the file expected", str(path))
            os.unlink(rel.name, dir_fd=dfd)

    def _copy_across(self, rel: PurePosixPath, dfd: int, dest: Path) -> None:
        tmp = dest.parent / f".{os.getpid()}.minutesd-copy"
        fd = os.open(rel.name, _FILE_FLAGS, dir_fd=dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotConfined(errno.EINVAL, "not a regular file", rel.name)
            os.set_blocking(fd, True)
            with os.fdopen(os.dup(fd), "rb") as fi, open(tmp, "wb") as fo:
                shutil.copyfileobj(fi, fo, 1 << 22)
                fo.flush()
                os.fsync(fo.fileno())
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.rename(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
