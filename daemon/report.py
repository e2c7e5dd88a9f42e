"""``minutesd search`` and ``minutesd status``: read-only views for people (and ``--json``).

File names, titles, errors and paths come from outside; the views for people show them
through :func:`daemon.text.printable` (controls and ANSI escapes escaped); ``--json`` is
exact (json escapes them)."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from daemon.archive.base import HIT_END, HIT_START, SearchableArchive
from daemon.errors import EXIT_NO_MATCH, EXIT_OK, EXIT_USAGE
from daemon.files import is_within
from daemon.registry import build_archive
from daemon.service.layout import HEARTBEAT_S
from daemon.service.locks import LOCK_NAME, lock_holder
from daemon.service.queue import DB_NAME, JobStore
from daemon.service.statusfile import STATUS_NAME, read_status
from daemon.settings import Settings
from daemon.text import printable as p
from integrations.gdrive import DriveArchive, DriveError
from integrations.google_auth import AuthProblem, token_report


def _snippet(snippet: str, b0: str, b1: str) -> str:
    """The snippet printable, its match markers (themselves control characters) as b0/b1."""
    return b1.join(b0.join(p(x) for x in part.split(HIT_START))
                   for part in snippet.split(HIT_END))


def _bold(use_ansi: bool) -> tuple[str, str]:
    return ("\x1b[1;33m", "\x1b[0m") if use_ansi else ("**", "**")


def search(settings: Settings, query: str, limit: int = 10, as_json: bool = False,
           raw: bool = False, drive: bool = False) -> int:
    if drive:
        return search_drive(settings, query, limit, as_json, raw)
    archive = build_archive(settings)
    if not isinstance(archive, SearchableArchive):
        print(f"minutesd: the {archive.name} archive cannot be searched here", file=sys.stderr)
        return EXIT_USAGE
    index = getattr(archive, "index_path", None)
    if index is not None and not Path(index).exists():
        print(f"minutesd: no archive yet at {p(Path(index).parent)} (nothing archived so far)",
              file=sys.stderr)
        return EXIT_NO_MATCH
    try:
        hits = archive.search(query, limit=limit, raw=raw)
    except ValueError as exc:
        print(f"minutesd: {p(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.OperationalError as exc:
        print(f"minutesd: bad search query {p(repr(query))}: {p(exc)}", file=sys.stderr)
        return EXIT_USAGE
    if as_json:
        print(json.dumps({"query": query, "hits": [h.as_json() for h in hits]}, indent=2,
                         ensure_ascii=False))
        return EXIT_OK if hits else EXIT_NO_MATCH
    if not hits:
        print(f"no matches for {p(repr(query))}", file=sys.stderr)
        return EXIT_NO_MATCH
    b0, b1 = _bold(sys.stdout.isatty())
    for h in hits:
        when = h.date + (f" {h.time}" if h.time else "")
        print(f"{p(when)}  {p(h.title)}")
        print(f"    {_snippet(h.snippet, b0, b1)}")
        print(f"    {p(h.ref)}")
    return EXIT_OK


def search_drive(settings: Settings, query: str, limit: int = 10, as_json: bool = False,
                 raw: bool = False) -> int:
    """``minutesd search --drive``: Drive's full-text index, restricted to the minutes
    folder; title, date and link of each meeting found."""
    if not settings.archive.drive.enabled:
        print("minutesd: the Drive archive is off (archive.drive.enabled: false)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        archive = DriveArchive(settings)
    except sqlite3.Error as exc:
        print(f"minutesd: cannot open the Drive ledger: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        hits = archive.search(query, limit=limit, raw=raw)
    except ValueError as exc:
        print(f"minutesd: {p(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (AuthProblem, DriveError) as exc:
        print(f"minutesd: Drive search failed: {p(exc)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        archive.close()
    if as_json:
        print(json.dumps({"query": query, "drive": True, "hits": [
            {"key": h.key, "date": h.date, "time": h.time, "title": h.title, "link": h.ref,
             "matched": h.snippet} for h in hits]}, indent=2, ensure_ascii=False))
        return EXIT_OK if hits else EXIT_NO_MATCH
    if not hits:
        print(f"no matches in Drive for {p(repr(query))}", file=sys.stderr)
        return EXIT_NO_MATCH
    for h in hits:
        print(p(f"{h.date}{' ' + h.time if h.time else ''}  {h.title}"))
        print(f"    {p(h.ref)}  ({p(h.snippet)})")
    return EXIT_OK


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    s = max(0, int(time.time() - ts))
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def blocked_label(blocked: dict[str, Any] | None, state_dir: Path) -> str | None:
    """"state disk full (/var/lib/minutesd)", "read-only file system (/srv/minutes/archive)":
    what holds every job up, in words."""
    if not blocked or not blocked.get("kind"):
        return None
    kind, path = blocked["kind"], blocked.get("path")
    if path and is_within(Path(path), state_dir):
        where = "state disk full" if kind == "disk full" else f"state folder: {kind}"
        return f"{where} ({path})"
    return f"{kind} ({path})" if path else kind


def collect_status(settings: Settings) -> dict[str, Any]:
    """Whether the daemon runs comes from its instance lock (a live process holds it), what it
    does from its status file (written in place, so also on a full state disk), the rest
    from the queue."""
    state_dir = settings.daemon.resolved_state_dir()
    db = state_dir / DB_NAME
    out: dict[str, Any] = {"state_db": str(db), "settings": settings.source}
    holder = lock_holder(state_dir)
    sf = read_status(state_dir / STATUS_NAME) or {}
    if holder is not None and sf.get("pid") not in (holder, None) and holder:
        sf = {}  # a record of an earlier daemon
    live: dict[str, Any] = {"running": holder is not None, "pid": holder or sf.get("pid")}
    if holder is not None and sf:
        live.update({"phase": sf.get("phase"), "started_at": sf.get("started_at"),
                     "status_at": sf.get("updated_at"), "health": sf.get("health"),
                     "blocked": sf.get("blocked"),
                     "blocked_by": blocked_label(sf.get("blocked"), state_dir)})
    if not db.exists():
        out["daemon"] = {**live, "note": "no job queue yet (has minutesd run started "
                                         "with these settings?)"}
        return out
    try:
        store = JobStore(db, readonly=True)
        store.counts()
    except sqlite3.Error as exc:
        out["daemon"] = {**live, "note": f"the job queue cannot be read: {exc}"}
        return out
    try:
        d = store.daemon_info() or {}
        if holder is None and not (state_dir / LOCK_NAME).exists():
            # a daemon from before the lock told status anything: its heartbeat decides
            holder = d.get("pid") if (
                d.get("phase") not in (None, "stopped") and _pid_alive(d.get("pid"))
                and time.time() - (d.get("heartbeat_at") or 0) < 6 * HEARTBEAT_S
                + (600 if d.get("phase") == "starting" else 0)) else None
            live["running"] = holder is not None
        out["daemon"] = {"running": live["running"], "pid": live.get("pid") or d.get("pid"),
                         "phase": live.get("phase") or d.get("phase"),
                         "started_at": live.get("started_at") or d.get("started_at"),
                         "heartbeat_at": d.get("heartbeat_at"),
                         "status_at": live.get("status_at"),
                         "health": live.get("health", d.get("health")),
                         "blocked": live.get("blocked"), "blocked_by": live.get("blocked_by"),
                         "backends": d.get("info") or {}}
        out["counts"] = store.counts()
        out["duplicates"] = store.event_count("duplicate")
        out["failed_files"] = store.event_count("failed")
        out["queue"] = [_job(j) for j in store.jobs("state IN ('queued','running')")]
        out["recent"] = [_job(j) for j in store.jobs("state='done'", order="finished_at DESC",
                                                     limit=10)]
        out["failures"] = [
            {"time": e["at"], "file": e["name"], "sha256": e["sha256"], "step": e["step"],
             **(json.loads(e["detail"]) if e["detail"] else {})}
            for e in store.events("failed", limit=10)]
        out["recent_duplicates"] = [
            {"time": e["at"], "file": e["name"], **(json.loads(e["detail"]) if e["detail"] else {})}
            for e in store.events("duplicate", limit=5)]
        out["drive"] = drive_status(settings, store)
    finally:
        store.close()
    return out


def drive_status(settings: Settings, store) -> dict[str, Any] | None:
    """The Drive archive: on or off, credentials on disk, uploads by state, why they wait."""
    cfg = settings.archive.drive
    try:
        counts = store.upload_counts("gdrive")
        rows = store.uploads("u.target='gdrive' AND u.state IN ('pending','running','failed')")
        recent = store.uploads("u.target='gdrive' AND u.state='done'", limit=1000)[-5:]
    except sqlite3.OperationalError:  # a queue from before uploads existed
        counts, rows, recent = {}, [], []
    if not cfg.enabled and not any(counts.values()):
        return None
    waiting = next((r["last_error"] for r in rows if r["waiting"] == "auth"), None)
    return {"enabled": cfg.enabled, "credentials": token_report(settings), "counts": counts,
            "waiting_for_auth": waiting,
            "pending": [_upload(r) for r in rows if r["state"] != "failed"],
            "failed": [_upload(r) for r in rows if r["state"] == "failed"],
            "recent": [_upload(r) for r in reversed(recent)]}


def _upload(r: dict) -> dict[str, Any]:
    return {"sha256": r["sha256"], "file": r["name"], "title": r["title"], "state": r["state"],
            "attempts": r["attempts"], "waiting": r["waiting"],
            "next_attempt_at": r["next_attempt_at"] or None, "last_error": r["last_error"],
            "link": r["ref"], "done_at": r["done_at"]}


def _job(j) -> dict[str, Any]:
    return {"sha256": j.sha256, "file": j.name, "state": j.state, "step": j.step,
            "next_step": j.next_step, "attempts": j.attempts,
            "next_attempt_at": j.next_attempt_at or None, "last_error": j.last_error,
            "title": j.title, "archive": j.archive_ref, "path": j.path,
            "received_at": j.created_at, "finished_at": j.finished_at}


def status(settings: Settings, as_json: bool = False) -> int:
    st = collect_status(settings)
    if as_json:
        print(json.dumps(st, indent=2, ensure_ascii=False))
        return EXIT_OK
    d = st["daemon"]
    print(f"settings: {p(st['settings'])}")
    print(f"queue db: {p(st['state_db'])}")
    if d["running"]:
        up = int(time.time() - (d.get("started_at") or time.time()))
        seen = d.get("status_at") or d.get("heartbeat_at")
        print(f"daemon:   running, pid {d.get('pid') or '?'}, {d.get('phase') or '?'}, "
              f"up {up // 3600} h {up % 3600 // 60} min, last report {_ago(seen)}")
    elif "counts" not in st:
        print(f"daemon:   not running ({p(d.get('note'))})")
        return EXIT_OK
    else:
        print(f"daemon:   not running (last seen {_ago(d.get('heartbeat_at'))})")
    if d.get("running") and d.get("blocked_by"):
        print(f"health:   BLOCKED: {p(d['blocked_by'])}; jobs wait, nothing is lost")
        print(f"fix:      {p(d['blocked']['fix'])}")
        print(f"          ({p(d.get('health'))})")
    else:
        print(f"health:   {p(d.get('health') or 'ok')}")
    if "counts" not in st:
        print(f"queue:    {p(d.get('note'))}")
        return EXIT_OK
    b = d.get("backends") or {}
    if b:
        print("backends: " + p(", ".join(f"{k}={v}" for k, v in b.items() if k != "inbox")))
        if b.get("inbox"):
            print(f"inbox:    {p(b['inbox'])}")
    c = st["counts"]
    print(f"jobs:     {c['queued']} queued, {c['running']} running, {c['done']} done, "
          f"{c['failed']} failed, {c['cancelled']} cancelled")
    print(f"files:    {st['failed_files']} moved to failed/, {st['duplicates']} duplicates "
          "moved aside (in all)")
    if st["queue"]:
        print("queue:")
        for j in st["queue"]:
            extra = ""
            if j["next_attempt_at"] and j["next_attempt_at"] > time.time():
                extra = f", retry in {int(j['next_attempt_at'] - time.time())} s"
            err = f"\n        last error: {p(j['last_error'])}" if j["last_error"] else ""
            print(f"  {j['sha256'][:12]}  {p(j['file'])}  {j['state']}, next: {j['next_step']}, "
                  f"attempts {j['attempts']}{extra}{err}")
    if st["recent"]:
        print("recent:")
        for j in st["recent"]:
            print(f"  {_when(j['finished_at'])}  {j['sha256'][:12]}  {p(j['file'])}  "
                  f"-> {p(j['archive'])}")
    if st["failures"]:
        print("failures:")
        for f in st["failures"]:
            print(f"  {_when(f['time'])}  {(f['sha256'] or '')[:12]}  {p(f['file'])}  "
                  f"[{f.get('step')}] {p(f.get('error'))}")
    if st["recent_duplicates"]:
        print("duplicates:")
        for f in st["recent_duplicates"]:
            print(f"  {_when(f['time'])}  {p(f['file'])}  same as {p(f.get('original'))}  "
                  f"-> {p(f.get('moved_to'))}")
    dv = st.get("drive")
    if dv:
        c = dv["counts"]
        cred = dv["credentials"]
        how = (f"oauth, token {'present' if cred.get('present') else 'MISSING'}"
               if cred["auth"] == "oauth" else f"service account{' as ' + cred['subject'] if cred.get('subject') else ''}")
        print(f"drive:    {'on' if dv['enabled'] else 'OFF'} ({how}, scope {cred['scope']}); "
              f"{c.get('done', 0)} uploaded, {c.get('pending', 0) + c.get('running', 0)} "
              f"upload pending, {c.get('failed', 0)} failed")
        if dv["waiting_for_auth"]:
            print(f"          uploads WAIT for Google credentials: {p(dv['waiting_for_auth'])}")
            print("          (the local archive has every meeting; nothing is lost)")
        for u in dv["pending"]:
            extra = ""
            why = " (waiting for credentials)" if u["waiting"] == "auth" else ""
            if u["next_attempt_at"] and u["next_attempt_at"] > time.time() and not why:
                extra = f", retry in {int(u['next_attempt_at'] - time.time())} s"
            err = f"\n        last error: {p(u['last_error'])}" if u["last_error"] and not why \
                else ""
            print(f"  {u['sha256'][:12]}  {p(u['file'])}  upload pending{why}, attempts "
                  f"{u['attempts']}{extra}{err}")
        for u in dv["failed"]:
            print(f"  {u['sha256'][:12]}  {p(u['file'])}  upload FAILED: {p(u['last_error'])}")
        for u in dv["recent"]:
            print(f"  {_when(u['done_at'])}  {u['sha256'][:12]}  {p(u['file'])}  -> {p(u['link'])}")
    return EXIT_OK
