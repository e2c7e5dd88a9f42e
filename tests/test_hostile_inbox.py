"""The real daemon (fast stand-in models) against bad input dropped into its inbox.

Whoever can write to the inbox must not make the daemon read, archive or move anything outside
it, and no sequence of writes may lose a recording or produce a wrong meeting. Each kind of
input below is dropped into one running daemon (the dynamic ones -- races, growing and
rewritten files -- get a daemon each); the table printed at the end says, per kind, what
happened, where the file went, and counts what was read from outside the inbox, what was lost
and whether the daemon hung. All three must be 0.

Files outside the inbox hold ``OUTSIDE-<kind>`` markers; after the run, every file the daemon
wrote (archive, queue, spool, processed/failed/duplicates) is searched for them.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import sqlite3
import stat
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from conftest import REPORTS

from daemon.confined import Confined
from daemon.service.lifecycle import Service
from daemon.service.queue import JobStore
from daemon.service.spool import Spool
from daemon.service.uploads import Uploader
from daemon.settings import DaemonSettings, Settings
from daemon.testing import FakeProcessor

FOLDERS = ("inbox", "processed", "failed", "duplicates", "archive", "state")


def settings_for(root: Path, **over) -> Settings:
    s = Settings()
    base = dict(root=root, state_dir=Path("state"), stable_seconds=0.3, retry_backoff_s=0.05,
                retry_backoff_max_s=0.2, rescan_interval_s=1.0, min_free_mb=0, max_attempts=2,
                facts_wait_s=0)
    base.update(over)
    s.daemon = DaemonSettings(**base)
    return s


def wait_for(cond: Callable[[], object], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


class Daemon:
    """Service.run() in a thread with the stand-in processor."""

    def __init__(self, root: Path, hear_s: float = 0.0, **over):
        self.root = root
        self.settings = settings_for(root, **over)
        self.proc = FakeProcessor(self.settings)
        self.proc.hear_s = hear_s
        self.svc = Service(self.settings, processor_factory=lambda s, log: self.proc)
        self.thread = threading.Thread(target=self.svc.run, daemon=True)

    def __enter__(self) -> Daemon:
        self.thread.start()
        assert wait_for(lambda: self.svc.workers, 30), "daemon did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.svc.stop()
        self.thread.join(30)

    def idle(self) -> bool:
        c = self.svc.store.counts()
        return c["queued"] == 0 and c["running"] == 0 and not self.svc.intake.tracker.pending

    def responsive(self, timeout: float = 30.0) -> bool:
        """A canary recording dropped now is archived in time: the daemon did not hang."""
        name = f"canary-{random.randrange(1 << 30)}.mp3"
        write(self.root / "inbox" / name, f"CANARY {name}\n")
        return wait_for(lambda: any(name in t for t in archived_texts(self.root)), timeout)


def write(p: Path, text: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{os.getpid()}.tmp"
    (tmp.write_bytes if isinstance(text, bytes) else tmp.write_text)(text)
    os.rename(tmp, p)
    return p


def archived_texts(root: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in (root / "archive").rglob("transcript.md")]


def regular_files(folder: Path):
    """Every regular file under ``folder``, links not followed (bytes paths: any name)."""
    for dirpath, _dirs, files in os.walk(os.fsencode(folder)):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                if stat.S_ISREG(os.lstat(p).st_mode):
                    yield p
            except OSError:
                continue


def contents(root: Path) -> list[tuple[str, bytes]]:
    """(folder, bytes) of every file the daemon's folders hold, the queue's text included."""
    out = []
    for folder in FOLDERS:
        for p in regular_files(root / folder):
            try:
                with open(p, "rb") as f:
                    out.append((folder, f.read()))
            except OSError:
                continue
    db = root / "state" / "jobs.sqlite3"
    if db.exists():
        con = sqlite3.connect(db)
        for row in con.execute("SELECT coalesce(transcript_json,''), coalesce(minutes_json,'')"
                               " FROM jobs"):
            out.append(("state", ("".join(row)).encode()))
        con.close()
    return out


@dataclass
class Case:
    kind: str
    setup: Callable[[Path, Path], None]  # (inbox, outside)
    expect: str  # where the legit content (if any) must end: processed, failed, duplicates, inbox
    marker: str | None = None  # legit content marker (what must not be lost)
    notes: str = ""
    left: str | None = None  # a name that must still be in the inbox, untouched (a link...)
    filed: str | None = None  # a name that must be in failed/


def _name_case(i: int, name: str, expect: str = "processed") -> Case:
    m = f"LEGIT-{i}"
    return Case(f"name {name!r}"[:60], lambda inbox, out: write(inbox / name, f"{m} said.\n"),
                expect, m)


def static_cases() -> list[Case]:
    cases: list[Case] = []

    def add(kind, expect, marker=None, notes="", left=None, filed=None):
        def deco(fn):
            cases.append(Case(kind, fn, expect, marker, notes, left, filed))
            return fn
        return deco

    @add("symlink to a file outside", "inbox", left="link.mp3")
    def _(inbox, out):
        os.symlink(out / "secret.mp3", inbox / "link.mp3")

    @add("symlink to a folder outside", "inbox", left="linked-folder")
    def _(inbox, out):
        os.symlink(out, inbox / "linked-folder")

    @add("folder replaced by a symlink (mkdir, rmdir, ln -s)", "inbox", left="d")
    def _(inbox, out):
        (inbox / "d").mkdir()
        (inbox / "d").rmdir()
        os.symlink(out, inbox / "d")

    @add("symlink inside a sub-folder, to a parent folder", "inbox", left="up/escape")
    def _(inbox, out):
        (inbox / "up").mkdir()
        os.symlink("../..", inbox / "up" / "escape")

    @add("symlink loop", "inbox", left="loop.mp3")
    def _(inbox, out):
        os.symlink("loop.mp3", inbox / "loop.mp3")

    @add("dangling symlink", "inbox", left="dangling.mp3")
    def _(inbox, out):
        os.symlink(out / "nothing-here.mp3", inbox / "dangling.mp3")

    @add("symlink to /dev/zero", "inbox", left="zero.mp3")
    def _(inbox, out):
        os.symlink("/dev/zero", inbox / "zero.mp3")

    @add("symlink to another file in the inbox", "processed", "LEGIT-target")
    def _(inbox, out):
        write(inbox / "target.mp3", "LEGIT-target said.\n")
        os.symlink("target.mp3", inbox / "alias.mp3")

    @add("FIFO with no writer", "inbox", left="pipe.mp3")
    def _(inbox, out):
        os.mkfifo(inbox / "pipe.mp3")

    @add("unix socket", "inbox", left="sock.mp3")
    def _(inbox, out):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(inbox / "sock.mp3"))
        s.close()

    @add("character device node", "inbox", left="dev.mp3", notes="needs root (mknod); else a FIFO stands in")
    def _(inbox, out):
        try:
            os.mknod(inbox / "dev.mp3", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
        except PermissionError:
            os.mkfifo(inbox / "dev.mp3")

    @add("hard link to a file of the dropper's elsewhere", "processed", "LEGIT-hard",
         notes="same inode, readable by the dropper anyway")
    def _(inbox, out):
        write(out / "mine.mp3", "LEGIT-hard said.\n")
        os.link(out / "mine.mp3", inbox / "hard.mp3")

    @add("empty file", "failed", filed="empty.mp3")
    def _(inbox, out):
        (inbox / "empty.mp3").write_bytes(b"")

    @add("not audio (decoder refuses)", "failed", "CORRUPT LEGIT-corrupt")
    def _(inbox, out):
        write(inbox / "corrupt.mp3", "CORRUPT LEGIT-corrupt\n")

    @add("larger than daemon.max_file_mb (sparse)", "failed", filed="huge.wav")
    def _(inbox, out):
        with open(inbox / "huge.wav", "wb") as f:
            f.truncate(3_000_000)

    @add("name that is not UTF-8", "failed", "LEGIT-bytes")
    def _(inbox, out):
        p = os.path.join(os.fsencode(inbox), b"caf\xe9-\xff.mp3")
        with open(p, "wb") as f:
            f.write(b"LEGIT-bytes said.\n")

    for i, name in enumerate([
        "line\nbreak.mp3", "esc \x1b[31mred\x1b[0m.mp3", "bell\x07 \u202eevil.mp3",
        "-rf --help.mp3", "quote ' \" $(touch pwned) `id`.mp3", "a" * 240 + ".mp3",
        "no extension", "ünïcödé 会議.mp3",
    ]):
        cases.append(_name_case(i, name))
    nfc = unicodedata.normalize("NFC", "café.mp3")
    nfd = unicodedata.normalize("NFD", "café.mp3")
    cases.append(Case("two names, NFC and NFD of one word", lambda inbox, out: (
        write(inbox / nfc, "LEGIT-nfc said.\n"), write(inbox / nfd, "LEGIT-nfd said.\n")),
        "processed", "LEGIT-nfd"))

    @add("dotfile (ignored)", "inbox", "LEGIT-dot")
    def _(inbox, out):
        write(inbox / ".hidden.mp3", "LEGIT-dot said.\n")

    @add("partial download .part (ignored)", "inbox", "LEGIT-part")
    def _(inbox, out):
        (inbox / "upload.mp3.part").write_text("LEGIT-part said.\n")

    @add("folder 20 levels deep", "processed", "LEGIT-deep")
    def _(inbox, out):
        write(inbox.joinpath(*[f"l{i}" for i in range(20)]) / "deep.mp3", "LEGIT-deep said.\n")

    @add("folder named like a recording", "processed", "LEGIT-dirname")
    def _(inbox, out):
        write(inbox / "folder.mp3" / "inner.mp3", "LEGIT-dirname said.\n")

    @add("same content under two names", "duplicates", "LEGIT-dup")
    def _(inbox, out):
        write(inbox / "dup-a.mp3", "LEGIT-dup said.\n")
        time.sleep(0.05)
        write(inbox / "dup-b.mp3", "LEGIT-dup said.\n")

    @add("same name in two folders", "processed", "LEGIT-twin2")
    def _(inbox, out):
        write(inbox / "room1" / "standup.mp3", "LEGIT-twin1 said.\n")
        write(inbox / "room2" / "standup.mp3", "LEGIT-twin2 said.\n")

    @add("unreadable mode 000", "processed", "LEGIT-000",
         notes="read as root here; as the service user it waits in the inbox")
    def _(inbox, out):
        p = write(inbox / "locked.mp3", "LEGIT-000 said.\n")
        os.chmod(p, 0)

    @add("300 files at once", "processed", "LEGIT-burst-299")
    def _(inbox, out):
        for i in range(300):
            (inbox / "burst").mkdir(exist_ok=True)
            write(inbox / "burst" / f"m{i:03d}.mp3", f"LEGIT-burst-{i} said.\n")

    return cases


def locate(root: Path, marker: str) -> set[str]:
    return {folder for folder, data in contents(root) if marker.encode() in data
            and folder in ("inbox", "processed", "failed", "duplicates")}


def outside_reads(root: Path) -> int:
    return sum(1 for _folder, data in contents(root) if b"OUTSIDE-" in data)


def make_outside(root: Path) -> Path:
    out = root / "outside"
    out.mkdir()
    write(out / "secret.mp3", "OUTSIDE-secret: private words.\n")
    write(out / "nested" / "secret2.mp3", "OUTSIDE-nested: private words.\n")
    return out


TABLE: list[dict] = []


def row(kind: str, outcome: str, went: str, outside: int, lost: int, hang: int) -> dict:
    r = {"kind": kind, "outcome": outcome, "went": went, "outside": outside, "lost": lost,
         "hang": hang}
    TABLE.append(r)
    return r


def test_static_bad_inputs(tmp_path):
    outside = make_outside(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cases = static_cases()
    with Daemon(tmp_path, max_file_mb=1) as d:
        for c in cases:
            c.setup(inbox, outside)
        before = {p: Path(os.fsdecode(p)).read_bytes() for p in regular_files(outside)}
        settled = wait_for(d.idle, 120) and wait_for(
            lambda: d.svc.store.counts()["done"] >= 300, 120)
        time.sleep(1.5)  # a rescan more
        hang = 0 if settled and d.responsive() else 1
    after = {p: Path(os.fsdecode(p)).read_bytes() for p in regular_files(outside)}
    bad = []
    for c in cases:
        went = ",".join(sorted(locate(tmp_path, c.marker))) if c.marker else "-"
        if c.expect == "inbox":
            ok = (not c.marker) or went == "inbox"
            outcome = "left alone" if ok else "TAKEN"
        else:
            ok = c.expect in went.split(",") if c.marker else True
            outcome = {"processed": "archived", "failed": "to failed/",
                       "duplicates": "to duplicates/"}[c.expect] if ok else f"NOT {c.expect}"
        if c.left is not None:  # must be where it was, as it was (never followed nor moved)
            ok = ok and os.path.lexists(inbox / c.left) and not stat.S_ISREG(
                os.lstat(inbox / c.left).st_mode)
            went = "inbox (untouched)" if ok else "MOVED"
        if c.filed is not None:
            ok = (tmp_path / "failed" / c.filed).exists() and (
                tmp_path / "failed" / f"{c.filed}.error.json").exists()
            went = "failed/ + error.json" if ok else "NOT in failed/"
        lost = 1 if c.marker and not locate(tmp_path, c.marker) else 0
        row(c.kind, outcome + (f" ({c.notes})" if c.notes else ""), went, 0, lost, hang)
        if not ok or lost:
            bad.append(c.kind)
    n_out = outside_reads(tmp_path)
    TABLE[-len(cases)]["outside"] = n_out  # counted once for the whole run
    assert after == before, "a file outside the inbox was changed, moved or removed"
    assert n_out == 0
    assert hang == 0
    assert not bad, bad
    # what must be in failed/ has its reason beside it
    reasons = [p for p in regular_files(tmp_path / "failed") if p.endswith(b".error.json")]
    assert len(reasons) >= 4


def test_folder_symlink_swap_race(tmp_path):
    """The issue's attack, in a loop against the running daemon: a real folder with a
    recording in it is renamed away and replaced by a link to a folder outside holding a
    recording of the same name, at random moments around the stable time."""
    outside = make_outside(tmp_path)
    write(outside / "talk.mp3", "OUTSIDE-race: private words.\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rng = random.Random(7)
    with Daemon(tmp_path, stable_seconds=0.05, rescan_interval_s=0.2) as d:
        for i in range(150):
            d_ = inbox / "d"
            d_.mkdir()
            write(d_ / "talk.mp3", f"LEGIT-race-{i} said.\n")
            time.sleep(rng.uniform(0, 0.12))
            os.rename(d_, inbox / f".old-{i}")  # ignored: kept, never lost
            os.symlink(outside, d_)
            time.sleep(rng.uniform(0, 0.12))
            os.unlink(d_)
        settled = wait_for(d.idle, 60)
        hang = 0 if settled and d.responsive() else 1
    n_out = outside_reads(tmp_path)
    lost = sum(1 for i in range(150) if not locate(tmp_path, f"LEGIT-race-{i} "))
    row("folder swapped for a symlink, 150 times, racing", "nothing outside taken",
        "inbox/.old-*, processed", n_out, lost, hang)
    assert (outside / "talk.mp3").exists()
    assert n_out == 0 and lost == 0 and hang == 0


def test_file_swapped_for_a_symlink_mid_job(tmp_path):
    outside = make_outside(tmp_path)
    inbox = tmp_path / "inbox"
    with Daemon(tmp_path, hear_s=1.0) as d:
        p = write(inbox / "swap.mp3", "LEGIT-swap said.\n")
        assert wait_for(lambda: d.svc.store.counts()["running"] == 1, 20)
        os.rename(p, inbox / ".kept.mp3")
        os.symlink(outside / "secret.mp3", p)
        settled = wait_for(d.idle, 30)
        hang = 0 if settled and d.responsive() else 1
        cancelled = d.svc.store.counts()["cancelled"]
    n_out = outside_reads(tmp_path)
    lost = 0 if locate(tmp_path, "LEGIT-swap") else 1
    row("file swapped for a symlink during its job", "job cancelled, link left alone",
        "inbox", n_out, lost, hang)
    assert cancelled == 1 and n_out == 0 and lost == 0 and hang == 0
    assert (outside / "secret.mp3").exists()


def test_writer_that_reopens_and_appends_is_one_meeting(tmp_path):
    """A recorder that reopens the file and appends every 1.2 s (longer than the stable
    time): taken too early once at most, never archived from the early content; in the end
    one meeting holding everything that was written."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    p = inbox / "growing.mp3"
    with Daemon(tmp_path, hear_s=1.5, stable_seconds=0.5) as d:
        for i in range(5):
            with open(p, "a") as f:
                f.write(f"LEGIT-grow part {i} said.\n")
            time.sleep(1.2)
        settled = wait_for(d.idle, 60) and wait_for(
            lambda: d.svc.store.counts()["done"] == 1, 30)
        hang = 0 if settled and d.responsive() else 1
        meetings = [t for t in archived_texts(tmp_path) if "LEGIT-grow" in t]
    row("writer reopening and appending every 1.2 s", f"{len(meetings)} meeting(s)",
        "processed", 0, 0 if locate(tmp_path, "LEGIT-grow part 4") else 1, hang)
    assert len(meetings) == 1
    assert all(f"part {i} said" in meetings[0] for i in range(5))
    assert (tmp_path / "processed" / "growing.mp3").read_text().count("LEGIT-grow") == 5
    assert hang == 0


def test_rewritten_in_place_with_same_size_and_mtime(tmp_path):
    """The content changes during its job while size and mtime are put back: the old content
    is never archived nor filed as if processed; the new content is the one meeting."""
    inbox = tmp_path / "inbox"
    with Daemon(tmp_path, hear_s=1.0) as d:
        p = write(inbox / "same.mp3", "LEGIT-v1 AAAA said.\n")
        st = os.stat(p)
        assert wait_for(lambda: d.svc.store.counts()["running"] == 1, 20)
        with open(p, "r+") as f:
            f.write("LEGIT-v2 BBBB said.\n")
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        settled = wait_for(lambda: d.svc.store.counts()["done"] == 1 and d.idle(), 40)
        hang = 0 if settled and d.responsive() else 1
        texts = [t for t in archived_texts(tmp_path) if "LEGIT-v" in t]
    row("rewritten in place, same size and mtime, mid-job", "new content archived once",
        "processed", 0, 0 if locate(tmp_path, "LEGIT-v2") else 1, hang)
    assert len(texts) == 1 and "LEGIT-v2" in texts[0]
    assert (tmp_path / "processed" / "same.mp3").read_text().startswith("LEGIT-v2")
    assert hang == 0


def test_removed_mid_job(tmp_path):
    inbox = tmp_path / "inbox"
    with Daemon(tmp_path, hear_s=1.0) as d:
        p = write(inbox / "gone.mp3", "LEGIT-gone said.\n")
        assert wait_for(lambda: d.svc.store.counts()["running"] == 1, 20)
        p.unlink()
        settled = wait_for(d.idle, 30)
        hang = 0 if settled and d.responsive() else 1
        c = d.svc.store.counts()
    row("removed by its owner mid-job", "job cancelled, nothing archived", "-", 0, 0, hang)
    assert c["cancelled"] == 1 and not [t for t in archived_texts(tmp_path) if "LEGIT-gone" in t]
    assert not [p for p in (tmp_path / "state" / "spool").rglob("*")
                if p.is_file() and b"LEGIT-gone" in p.read_bytes()]  # its copy is removed
    assert hang == 0


@pytest.fixture(scope="module", autouse=True)
def _print_table(request):
    yield
    if not TABLE:
        return
    w = max(len(r["kind"]) for r in TABLE)
    o = max(len(r["outcome"]) for r in TABLE)
    g = max(len(r["went"]) for r in TABLE)
    lines = [f"{'kind':<{w}}  {'outcome':<{o}}  {'went to':<{g}}  outside  lost  hang"]
    for r in TABLE:
        lines.append(f"{r['kind']!s:<{w}}  {r['outcome']:<{o}}  {r['went']:<{g}}  "
                     f"{r['outside']:>7}  {r['lost']:>4}  {r['hang']:>4}")
    lines.append(f"{len(TABLE)} kinds; read outside the inbox: "
                 f"{sum(r['outside'] for r in TABLE)}, lost: {sum(r['lost'] for r in TABLE)}, "
                 f"hangs: {sum(r['hang'] for r in TABLE)}")
    REPORTS.append(("hostile inbox", lines))



def test_the_recording_uploaded_to_a_mirror_never_comes_through_a_link(tmp_path):
    """With ``keep_originals`` the original stays in the inbox, where a link can replace it
    after its job is done: the mirror uploads a checked copy, or nothing -- never the link."""
    outside = make_outside(tmp_path)
    inbox = tmp_path / "inbox"
    p = write(inbox / "kept.mp3", "LEGIT-kept said.\n")
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    st = p.stat()
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.add(sha, "kept.mp3", str(p), st.st_size, st.st_mtime_ns, "2026-12-02", None)
    spool = Spool(tmp_path / "spool", Confined(inbox))
    up = Uploader(type("M", (), {"name": "mirror"})(), store, threading.Event(),
                  structlog.get_logger(), spool=spool)
    copy = up.recording(store.get(sha))
    assert copy is not None and Path(copy).read_text() == "LEGIT-kept said.\n"
    assert Path(copy).is_relative_to(tmp_path / "spool")
    spool.remove(sha)
    p.unlink()
    os.symlink(outside / "secret.mp3", p)  # the attacker's link where the original was
    assert up.recording(store.get(sha)) is None
    store.close()
    row("link put in place of a kept original, before its upload", "nothing uploaded",
        "-", 0, 0, 0)
