"""The watched inbox: which files are candidates, and when a candidate is complete.

Events come from ``watchdog`` (inotify by default; ``PollingObserver`` for NFS/SMB, where
inotify never sees other machines' writes) and from full rescans (at start and every
``rescan_interval_s``), which catch anything the watcher missed. A file is *taken* only when

* its name (and every folder above it, under the inbox) matches none of the ignore patterns
  (``.part``, ``.crdownload``, ``~``, dotfiles, ``@eaDir``...): a download is taken once it
  is renamed to its final name;
* it is not held open by a writer as far as inotify can tell (opens and closes are counted;
  a file moved in or found by a scan counts as closed) -- polling cannot tell, so there only
  the next rule applies;
* its size and mtime have not changed for ``stable_seconds`` -- or, for a file whose writer
  was seen to pause and append again (closing and reopening it), for twice the longest pause
  seen, so a recorder that reopens every few seconds is not taken between two appends;
* when it is taken it is opened once more (a fresh open revalidates what NFS/SMB clients
  cache) and its size and mtime must still be those that were stable.

Paths are only ever looked at through :class:`daemon.confined.Confined`: a link is never
followed, not even to read its target's size.
"""

from __future__ import annotations

import fnmatch
import os
import queue
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.confined import Confined

# A file inotify saw being written but never saw closed (a missed event) is taken anyway
# once it has not changed for this long.
OPEN_WRITER_GRACE_S = 3600.0
# A writer that pauses and then appends again (recorders, sync clients that reopen the file
# every few seconds) teaches the tracker its pause: that file must then stay unchanged for
# twice the longest pause seen (at most this long) before it is taken.
PAUSE_FACTOR = 2.0
MAX_LEARNED_WAIT_S = 900.0
MIN_PAUSE_S = 0.5  # changes closer together than this are one write, not a pause
_REMEMBERED = 4096  # files whose pauses are remembered (oldest forgotten first)


def ignored(rel: Path, patterns: list[str]) -> bool:
    """True if any part of ``rel`` (a path relative to the inbox) matches a pattern."""
    return any(fnmatch.fnmatchcase(part, pat) for part in rel.parts for pat in patterns)


def scan(inbox: Confined | Path, patterns: list[str]) -> Iterator[Path]:
    """Regular files under the inbox that are not ignored (ignored folders are not entered;
    links -- to files or folders -- are neither files nor folders here, see
    :mod:`daemon.confined`)."""
    if not isinstance(inbox, Confined):
        inbox = Confined(inbox)
    for rel_dir, dirnames, filenames, _fd in inbox.walk():
        dirnames[:] = sorted(n for n in dirnames if not ignored(Path(rel_dir, n), patterns))
        for name in sorted(filenames):
            if not ignored(Path(rel_dir, name), patterns):
                yield inbox.root / rel_dir / name


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    since: float  # monotonic time of the last change seen
    opens: int = 0  # open file handles inotify saw (opened minus closed)

    @property
    def writing(self) -> bool:
        return self.opens > 0


class StabilityTracker:
    """Candidates waiting to settle. Not thread-safe: the daemon's main loop owns it.

    Events (inotify): ``opened`` / ``closed`` / ``closed_no_write`` keep a count of open
    handles, so a file still held open by its writer (a paused upload, a recorder) is not
    taken however long it stays unchanged; our own reads open and close it, which nets out.
    ``modified`` without a seen open means it was opened before we looked. ``created``,
    ``moved`` and ``scan`` (and everything when polling) only start the stability clock.

    ``stat`` looks a path up without following links (``Confined.lstat``); None means "not a
    regular file in the inbox", which drops the candidate.
    """

    def __init__(self, stable_s: float, clock: Callable[[], float] = time.monotonic,
                 stat: Callable[[Path], os.stat_result | None] | None = None):
        self.stable_s = stable_s
        self.clock = clock
        self.stat = stat or _lstat_regular
        self.pending: dict[Path, _Pending] = {}
        self.pauses: dict[Path, float] = {}  # longest pause seen between two writes
        # taken files: when each last changed before it was taken, and its size and mtime then
        self._taken: dict[Path, tuple[float, int, int]] = {}

    def wait_s(self, path: Path) -> float:
        """How long ``path`` must stay unchanged before it is taken."""
        pause = self.pauses.get(path, 0.0)
        return max(self.stable_s, min(PAUSE_FACTOR * pause, MAX_LEARNED_WAIT_S))

    def _pause(self, path: Path, seconds: float) -> None:
        # Only pauses as long as the stable time matter: shorter ones cannot fool the rule.
        if seconds < max(MIN_PAUSE_S, self.stable_s) or seconds <= self.pauses.get(path, 0.0):
            return
        self.pauses.pop(path, None)
        self.pauses[path] = seconds
        while len(self.pauses) > _REMEMBERED:
            self.pauses.pop(next(iter(self.pauses)))

    def changed_after_taken(self, path: Path) -> None:
        """A file that was taken turned out to be still growing (its job saw it change): its
        pause is learned, and it waits again."""
        taken = self._taken.pop(path, None)
        if taken is not None:
            self._pause(path, self.clock() - taken[0])
        self.touch(path)

    def touch(self, path: Path, event: str = "scan") -> None:
        st = self.stat(path)
        if st is None:
            self.pending.pop(path, None)
            return
        now = self.clock()
        p = self.pending.get(path)
        if p is None:
            p = self.pending[path] = _Pending(st.st_size, st.st_mtime_ns, now)
            taken = self._taken.get(path)
            if taken is not None and (st.st_size, st.st_mtime_ns) != taken[1:]:
                del self._taken[path]
                self._pause(path, now - taken[0])  # taken, then written again: a pause
        elif (st.st_size, st.st_mtime_ns) != (p.size, p.mtime_ns):
            taken = self._taken.pop(path, None)
            self._pause(path, now - (taken[0] if taken else p.since))
            p.size, p.mtime_ns, p.since = st.st_size, st.st_mtime_ns, now
        if event == "opened":
            p.opens += 1
        elif event == "modified" and p.opens == 0:
            p.opens = 1
        elif event in ("closed", "closed_no_write"):
            p.opens = max(0, p.opens - 1)
            if event == "closed":
                p.since = now  # the stable period starts at the close
        elif event == "moved":
            p.opens = 0  # renamed into place: whoever wrote it is done with that name

    def forget(self, path: Path) -> None:
        self.pending.pop(path, None)

    def ready(self) -> list[Path]:
        """Candidates that are complete now (removed from pending)."""
        now = self.clock()
        out: list[Path] = []
        for path, p in list(self.pending.items()):
            st = self.stat(path)
            if st is None:
                del self.pending[path]
                continue
            if (st.st_size, st.st_mtime_ns) != (p.size, p.mtime_ns):
                self._pause(path, now - p.since)
                p.size, p.mtime_ns, p.since = st.st_size, st.st_mtime_ns, now
                continue
            quiet = now - p.since
            wait = self.wait_s(path)
            if (not p.writing and quiet >= wait) or quiet >= max(OPEN_WRITER_GRACE_S, wait):
                del self.pending[path]
                self._taken.pop(path, None)
                self._taken[path] = (p.since, p.size, p.mtime_ns)
                while len(self._taken) > _REMEMBERED:
                    self._taken.pop(next(iter(self._taken)))
                out.append(path)
        return out


def _lstat_regular(path: Path) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


class InboxWatcher:
    """watchdog observer feeding (kind, path) pairs into a queue the main loop drains."""

    def __init__(self, inbox: Path, patterns: list[str], polling: bool, poll_interval_s: float,
                 log=None):
        self.inbox = inbox
        self.patterns = patterns
        self.polling = polling
        self.poll_interval_s = poll_interval_s
        self.log = log
        self.events: queue.Queue[tuple[str, Path]] = queue.Queue()
        self.observer = None
        self.mode = "polling" if polling else "inotify"

    def _accept(self, path: str | bytes) -> Path | None:
        p = Path(os.fsdecode(path))
        try:
            rel = p.relative_to(self.inbox)
        except ValueError:
            return None  # moved out of the inbox (our own moves to processed/ and failed/)
        return None if ignored(rel, self.patterns) else p

    def _handler(self):
        from watchdog.events import FileSystemEventHandler

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.is_directory:
                    if event.event_type in ("created", "moved"):
                        # A folder moved in: its files produce no events of their own.
                        dest = getattr(event, "dest_path", "") or event.src_path
                        p = watcher._accept(dest)
                        if p is not None:
                            watcher.events.put(("scan", p))
                    return
                kind = event.event_type
                if kind == "moved":
                    src = watcher._accept(event.src_path)
                    if src is not None:
                        watcher.events.put(("deleted", src))
                    dest = watcher._accept(event.dest_path)
                    if dest is not None:
                        watcher.events.put(("moved", dest))
                elif kind in ("created", "modified", "opened", "closed", "closed_no_write",
                              "attrib", "deleted"):
                    p = watcher._accept(event.src_path)
                    if p is not None:
                        watcher.events.put((kind, p))

        return Handler()

    def start(self) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        self.inbox.mkdir(parents=True, exist_ok=True)
        handler = self._handler()
        if not self.polling:
            try:
                obs = Observer()
                obs.schedule(handler, str(self.inbox), recursive=True)
                obs.start()
                self.observer, self.mode = obs, "inotify"
                return
            except OSError as exc:  # inotify watch/instance limit reached
                if self.log:
                    self.log.warning("inotify unavailable, polling the inbox instead",
                                     error=str(exc), fix="raise fs.inotify.max_user_watches "
                                     "/ max_user_instances, or set daemon.polling: true")
        obs = PollingObserver(timeout=self.poll_interval_s)
        obs.schedule(handler, str(self.inbox), recursive=True)
        obs.start()
        self.observer, self.mode = obs, "polling"

    def alive(self) -> bool:
        return self.observer is not None and self.observer.is_alive()

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None

    def drain(self) -> list[tuple[str, Path]]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out
