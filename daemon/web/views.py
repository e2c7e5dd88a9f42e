"""What each page of the review page shows, as plain data (no web framework here).

The queue is opened read-only (the daemon owns it); the archive through
:class:`~daemon.archive.local.LocalArchive`, with the same index ``minutesd search`` uses;
a name set on the Speakers page goes through :func:`daemon.corrections.apply`, exactly what
``minutesd speakers MEETING --set`` does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from daemon import facts, registry
from daemon.archive.local import LocalArchive, load_record
from daemon.audio import probe_duration
from daemon.corrections import CorrectionError, apply, display, rows
from daemon.render import DATE_FROM, hms, weak_note
from daemon.service.queue import DB_NAME, JobStore
from daemon.service.steps import BY_NAME
from daemon.settings import Settings
from daemon.web.guard import owned_file

UPLOAD_EXTS = {".mp3", ".m4a", ".wav", ".flac", ".ogg", ".opus", ".mp4", ".mkv", ".webm",
               ".aac", ".wma", ".mov"}


class BadUpload(ValueError):
    """An upload the page does not keep (too large, not a recording, a bad name)."""


@dataclass
class Site:
    """The daemon's folders and stores, as the page uses them."""

    settings: Settings

    @property
    def state_dir(self) -> Path:
        return self.settings.daemon.resolved_state_dir()

    @property
    def inbox(self) -> Path:
        return self.settings.daemon.resolved("inbox")

    def roots(self) -> list[Path]:
        d = self.settings.daemon
        return [d.resolved("processed"), d.resolved("inbox"), d.resolved("failed"),
                self.settings.archive.resolved_path(d), self.clips_dir]

    @property
    def clips_dir(self) -> Path:
        return self.state_dir / "web-clips"

    def archive(self) -> LocalArchive:
        return LocalArchive.from_settings(self.settings)

    @contextlib.contextmanager
    def store(self):
        db = self.state_dir / DB_NAME
        if not db.exists():
            yield None
            return
        s = JobStore(db, readonly=True)
        try:
            yield s
        finally:
            s.close()

    # ------------------------------------------------------------------ queue

    def queue(self) -> dict[str, Any]:
        out: dict[str, Any] = {"inbox": [], "active": [], "failed": [], "done": []}
        with contextlib.suppress(OSError):
            for p in sorted(self.inbox.iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    out["inbox"].append({"name": p.name, "size": p.stat().st_size})
        with self.store() as s:
            if s is None:
                return out
            try:
                active = s.jobs("state IN ('queued','running')")
                failed = s.jobs("state='failed'", order="updated_at DESC", limit=20)
                done = s.jobs("state='done'", order="finished_at DESC", limit=10)
            except sqlite3.Error:
                return out
        for j in active:
            nxt = BY_NAME.get(j.next_step or "")
            out["active"].append({"key": j.sha256, "name": j.name, "state": j.state,
                                  "step": j.step, "doing": nxt.verb if nxt else j.step,
                                  "attempts": j.attempts, "error": j.last_error})
        for j in failed:
            out["failed"].append({"key": j.sha256, "name": j.name, "step": j.current_step or j.step,
                                  "error": j.last_error, "retry": self._failed_copy(j) is not None})
        for j in done:
            out["done"].append({"key": j.sha256, "name": j.name, "title": j.title})
        return out

    def _failed_copy(self, job) -> Path | None:
        return owned_file(job.dest_path, [self.settings.daemon.resolved("failed")])

    def retry(self, key: str) -> str:
        """A failed recording back into the inbox (what a person does by moving it): the
        daemon takes it again. Found by its job key, never by a path from the request."""
        with self.store() as s:
            job = s.get(key) if s else None
        if job is None or job.state != "failed":
            raise BadUpload("no failed job with that key")
        src = self._failed_copy(job)
        if src is None:
            raise BadUpload(f"{job.name} is no longer in failed/")
        dest = _free_name(self.inbox, src.name)
        # Its sidecar (filed beside it, named after it) goes back first, named after the
        # recording's new name: the daemon reads the same facts again.
        failed_dir = self.settings.daemon.resolved("failed")
        for side in facts.candidates(src):
            side = owned_file(side, [failed_dir])
            if side is None:
                continue
            suffix = next(x for x in facts.SUFFIXES if side.name.lower().endswith(x))
            target = dest.with_name(dest.stem + suffix)
            if not os.path.lexists(target):
                _move(side, target)
        _move(src, dest)
        with contextlib.suppress(OSError):
            err = src.with_name(src.name + ".error.json")
            if err.exists():
                err.unlink()
        return dest.name

    # ------------------------------------------------------------------ upload

    def upload_path(self, name: str) -> tuple[Path, Path]:
        """(temporary, final) paths in the inbox for an upload called ``name``."""
        base = PurePosixPath(name.replace("\\", "/")).name.strip()
        if not base or base.startswith(".") or any(c in base for c in "\0\n\r"):
            raise BadUpload(f"not a usable file name: {name!r}")
        if Path(base).suffix.lower() not in UPLOAD_EXTS:
            raise BadUpload(f"{base}: not a recording (expected one of "
                            f"{', '.join(sorted(UPLOAD_EXTS))})")
        self.inbox.mkdir(parents=True, exist_ok=True)
        tmp = self.inbox / f".upload-{os.getpid()}-{time.monotonic_ns()}{Path(base).suffix}"
        return tmp, _free_name(self.inbox, base)

    def finish_upload(self, tmp: Path, final: Path) -> str:
        """Check the written file is a recording, then rename it into the inbox (atomic: the
        daemon never sees half a file; a dot name is never taken)."""
        try:
            if tmp.stat().st_size == 0:
                raise BadUpload(f"{final.name}: empty file")
            if probe_duration(tmp) is None:
                raise BadUpload(f"{final.name}: not an audio or video file FFmpeg can read")
            final = _free_name(self.inbox, final.name)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return final.name

    # ------------------------------------------------------------------ meetings

    def meetings(self, q: str | None, page: int) -> dict[str, Any]:
        size = self.settings.web.page_size
        a = self.archive()
        try:
            if not a.index_path.exists():
                return {"rows": [], "page": 1, "pages": 1, "q": q, "total": 0}
            if q:
                try:
                    hits = a.search(q, limit=size)
                except (ValueError, sqlite3.OperationalError) as exc:
                    return {"rows": [], "page": 1, "pages": 1, "q": q, "total": 0,
                            "error": str(exc)}
                items = [{"key": h.key, "date": h.date, "time": h.time, "title": h.title,
                          "snippet": h.snippet} for h in hits]
                return {"rows": items, "page": 1, "pages": 1, "q": q, "total": len(items)}
            total = a.count()
            pages = max(1, math.ceil(total / size))
            page = min(max(1, page), pages)
            items = a.listing(size, (page - 1) * size)
            return {"rows": items, "page": page, "pages": pages, "q": q, "total": total}
        finally:
            a.close()

    def folder_of(self, key: str) -> Path | None:
        a = self.archive()
        try:
            if not a.index_path.exists():
                return None
            ref = a.lookup(key)
        finally:
            a.close()
        return Path(ref) if ref else None

    def meeting(self, key: str) -> dict[str, Any] | None:
        folder = self.folder_of(key)
        if folder is None:
            return None
        rec = load_record(folder)
        names = {s.id: display(rec, s.id) for s in rec.transcript.speakers}
        segs = [{"t": round(s.start, 2), "at": hms(s.start), "who": names.get(s.speaker, s.speaker),
                 "label": s.speaker, "text": s.text} for s in rec.transcript.segments]
        m = rec.minutes
        return {"key": key, "rec": rec, "m": m, "segments": segs,
                "actions": [{"a": a, "at": _at(a.evidence), "check": weak_note(a) if a.weak
                             else None} for a in m.action_items],
                "decisions": [{"text": d, "at": _at(m.decision_evidence[i]
                                                    if i < len(m.decision_evidence) else [])}
                              for i, d in enumerate(m.decisions)],
                "flags": [{"kind": f.kind, "message": f.message,
                           "at": None if f.start is None else _time(f.start)}
                          for f in m.flags],
                "date_from": DATE_FROM.get(rec.minutes.date_source),
                "recording": self.recording(key) is not None,
                "minutes_md": _read(folder / "minutes.md")}

    def recording(self, key: str) -> Path | None:
        """The recording of the meeting ``key``: where the daemon filed it (processed/, or the
        inbox with keep_originals), from the queue; only inside the daemon's folders."""
        with self.store() as s:
            job = s.get(key) if s else None
        if job is None:
            return None
        for p in (job.dest_path, job.path):
            f = owned_file(p, self.roots()[:2])
            if f is not None:
                return f
        return None

    def speakers(self, key: str) -> dict[str, Any] | None:
        folder = self.folder_of(key)
        if folder is None:
            return None
        rec = load_record(folder)
        out = []
        for r in rows(rec):
            out.append({"label": r.label, "name": r.name, "shown": display(rec, r.label),
                        "talk": hms(r.talk_time_s), "confidence": r.confidence,
                        "evidence": [_evidence(e) for e in r.evidence]})
        return {"key": key, "rec": rec, "speakers": out,
                "recording": self.recording(key) is not None}

    def set_name(self, key: str, label: str, name: str, confirm: bool = False) -> list[str]:
        """``minutesd speakers KEY --set LABEL=NAME`` (or ``--confirm LABEL``)."""
        folder = self.folder_of(key)
        if folder is None:
            raise CorrectionError("no archived meeting with that key")
        name = " ".join(name.split())
        if not confirm and not name:
            raise CorrectionError("type a name to set")
        a = self.archive()
        try:
            rec = load_record(folder)
            changes, queued, learned = apply(
                self.settings, a, rec, folder, [] if confirm else [(label, name)],
                confirm=[label] if confirm else None,
                learner=registry.build_voice_learner(self.settings))
        finally:
            a.close()
        said = [f"{c.kind}: {c.label} {c.old or '—'} → {c.new or '—'}" for c in changes]
        if queued:
            said.append(f"{queued} mirror update(s) queued")
        return said + learned


def _time(start: float) -> dict[str, Any]:
    """A time link's data: seconds for the player, and as shown."""
    return {"t": round(start, 2), "shown": hms(start)}


def _at(quotes) -> dict[str, Any] | None:
    """Where an item's evidence starts (its first quote), for a link that plays it."""
    return _time(quotes[0].start) if quotes else None


def _evidence(e) -> str:
    if e.kind == "voice" and e.similarity is not None:
        return f"voice: similarity {e.similarity:.2f} to the profile of {e.profile or e.name}"
    return f"{e.kind}: {e.detail or e.name}"


def _read(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except OSError:
        return ""


def _move(src: Path, dest: Path) -> None:
    os.replace(src, dest) if src.stat().st_dev == dest.parent.stat().st_dev \
        else shutil.move(str(src), dest)


def _free_name(folder: Path, name: str) -> Path:
    p = folder / name
    n = 2
    while p.exists():
        p = folder / f"{Path(name).stem} ({n}){Path(name).suffix}"
        n += 1
    return p


def dumps(x: Any) -> str:
    return json.dumps(x, ensure_ascii=False)
