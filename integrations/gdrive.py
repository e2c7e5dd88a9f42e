"""The Google Drive archive: each meeting as two Google Docs (minutes, transcript) in
``<parent>/<folder>/<YYYY>/<MM>/``, exactly once, searchable with ``fullText contains``.

Exactly once, in three layers:

1. **The ledger** (``drive.sqlite3`` in the state directory): sha256 → file ids, written
   right after each file exists. A meeting the ledger calls done is never sent again.
2. **appProperties** (``minutesd_sha256``, ``minutesd_kind``) on every file, and a lookup by
   them before any create: a ``kill -9`` between a create and its ledger write finds the
   file on the next attempt instead of making a second one.
3. **Creates that cannot double**: Docs and audio go up as *resumable* uploads, so the file
   comes into being only when the upload session completes, and a request the transport
   re-sends after a dropped connection (httplib2 silently re-sends once) completes the same
   session again: same file. Folders get an id from ``files.generateIds`` first, so a
   re-sent create answers 409 for the id it already made. Folder find-or-create runs under
   one lock (one uploader thread per daemon besides).

The two Docs link to each other: the minutes Doc is created, then the transcript Doc with a
link to it, then the minutes Doc's content is replaced (``files.update``, multipart, which
is idempotent) with the link to the transcript (and the recording, when
``upload_audio``).

Faults: each request is retried by the client (``execute(num_retries=...)``, random
exponential waits) on 429, 403 rate limits, 5xx, timeouts and dropped connections; what is
still failing comes out as :class:`DriveTransient` (the daemon retries the upload later, at
a stored time), :class:`DrivePermanent` (storage quota, permissions, a missing folder:
reported, not retried forever) or :class:`~integrations.google_auth.AuthProblem` (revoked
or missing credentials: uploads wait for ``minutesd auth google``).

google-api-python-client is imported only here, and only when Drive is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mimetypes
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import sqlite
from daemon.archive.base import ArchiveRecord, SearchHit, safe_title
from daemon.errors import MinutesdError, PermanentError, TransientError
from daemon.faults import crash_point
from daemon.logs import get_logger
from daemon.render import minutes_html, transcript_html
from integrations.google_auth import AuthProblem, GoogleAuth, auth_error, make_http, reauth_fix

FOLDER_MIME = "application/vnd.google-apps.folder"
DOC_MIME = "application/vnd.google-apps.document"
KEY_PROP = "minutesd_sha256"
KIND_PROP = "minutesd_kind"
LEDGER_NAME = "drive.sqlite3"
FILE_FIELDS = "id,name,mimeType,webViewLink,parents,appProperties,createdTime"
RATE_LIMIT_REASONS = {"userRateLimitExceeded", "rateLimitExceeded"}
QUOTA_REASONS = {"storageQuotaExceeded", "quotaExceeded", "dailyLimitExceeded",
                 "teamDriveFileLimitExceeded", "numChildrenInNonRootLimitExceeded"}


class DriveError(MinutesdError):
    """An upload did not complete; ``str()`` says why and what to do."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class DriveTransient(DriveError, TransientError):
    """Worth trying again later (rate limits, 5xx, network)."""


class DrivePermanent(DriveError, PermanentError):
    """This upload cannot succeed as things are (quota, permissions, a wrong folder id): it
    is failed and reported with the fix; ``minutesd drive retry`` queues it again."""


def http_reason(exc) -> tuple[int, str | None, str]:
    """(status, first error reason, message) of a googleapiclient HttpError."""
    status = int(getattr(exc.resp, "status", 0) or 0)
    reason, message = None, ""
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError, IndexError):
        err = json.loads(exc.content.decode("utf-8"))["error"]
        message = err.get("message", "")
        errors = err.get("errors") or []
        if errors:
            reason = errors[0].get("reason")
    return status, reason, message or str(getattr(exc, "reason", "") or "")


def classify(exc: BaseException, settings, what: str) -> Exception:
    """Any failure of a Drive call as DriveTransient, DrivePermanent or AuthProblem."""
    import ssl

    import httplib2
    from google.auth import exceptions as gexc
    from googleapiclient.errors import HttpError

    if isinstance(exc, AuthProblem | DriveError):
        return exc
    if isinstance(exc, gexc.RefreshError):
        return auth_error(exc, settings) or DriveTransient(f"{what}: Google sign-in "
                                                           f"unavailable: {exc}")
    if isinstance(exc, HttpError):
        status, reason, message = http_reason(exc)
        detail = f"{what}: HTTP {status}" + (f" {reason}" if reason else "") + \
            (f": {message}" if message else "")
        if status == 401:
            return AuthProblem(f"Google refused the credentials ({detail})",
                               reauth_fix(settings))
        if status == 429 or status >= 500 or (status == 403 and reason in RATE_LIMIT_REASONS):
            return DriveTransient(detail, status, reason)
        if status == 403 and reason in QUOTA_REASONS:
            return DrivePermanent(f"Google Drive quota: {detail}. Fix: free space in Drive (or "
                                  "raise the quota), then `minutesd drive retry`", status, reason)
        if status in (403, 404):
            return DrivePermanent(
                f"no access: {detail}. Fix: check archive.drive.parent_id (and "
                "shared_drive_id), give the account or service account edit access to that "
                "folder, then `minutesd drive retry`", status, reason)
        return DrivePermanent(f"{detail}. Fix: see the log; `minutesd drive retry` when fixed",
                              status, reason)
    if isinstance(exc, TimeoutError | ConnectionError | ssl.SSLError | OSError
                  | httplib2.HttpLib2Error | gexc.TransportError):
        return DriveTransient(f"{what}: network: {type(exc).__name__}: {exc}")
    import http.client

    if isinstance(exc, http.client.HTTPException):
        return DriveTransient(f"{what}: connection: {type(exc).__name__}: {exc}")
    return exc if isinstance(exc, Exception) else DriveTransient(str(exc))


def q_string(value: str) -> str:
    """A value as a Drive query string literal: quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fulltext_terms(text: str) -> list[str]:
    """The user's words as Drive ``fullText contains`` terms: every word must appear;
    "quoted phrases" (and arguments with spaces) match as phrases."""
    terms: list[str] = []
    for m in re.finditer(r'"([^"]*)"|(\S+)', text):
        phrase, word = m.group(1), m.group(2)
        if phrase is not None:
            phrase = " ".join(phrase.split())
            if phrase:
                terms.append("fullText contains " + q_string(f'"{phrase}"'))
        elif word and re.search(r"\w", word):
            terms.append("fullText contains " + q_string(word))
    if not terms:
        raise ValueError(f"nothing to search for in {text!r}")
    return terms


def doc_title(rec: ArchiveRecord) -> str:
    """``YYYY-MM-DD HH:MM — <title>``."""
    return f"{rec.date} {rec.time or '00:00'} — {safe_title(rec.minutes.title, 120)}"


def content_digest(rec: ArchiveRecord) -> str:
    """What a meeting's Docs say, as one hash: a corrected meeting has another."""
    body = json.dumps([rec.minutes.to_json(), rec.transcript.to_json(), rec.time],
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def doc_link(file_id: str) -> str:
    return f"https://docs.google.com/document/d/{file_id}/edit"


@dataclass
class DriveFile:
    id: str
    link: str


LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    sha256     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    file_id    TEXT NOT NULL,
    link       TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (sha256, kind)
);
CREATE TABLE IF NOT EXISTS meetings (
    sha256  TEXT PRIMARY KEY,
    linked  INTEGER NOT NULL DEFAULT 0,
    link    TEXT,
    done_at REAL
);
CREATE TABLE IF NOT EXISTS folders (
    path      TEXT PRIMARY KEY,
    folder_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contents (
    sha256  TEXT PRIMARY KEY,
    digest  TEXT NOT NULL
);
"""


class Ledger:
    """What was uploaded: sha256 → file ids (SQLite, WAL, synchronous=FULL)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.db = sqlite.connect(self.path, LEDGER_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, sqlite.immediate(self.db) as db:
            yield db

    def file(self, sha: str, kind: str) -> DriveFile | None:
        with self._lock:
            r = self.db.execute("SELECT file_id, link FROM files WHERE sha256=? AND kind=?",
                                (sha, kind)).fetchone()
        return DriveFile(r[0], r[1]) if r else None

    def put_file(self, sha: str, kind: str, f: DriveFile) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?)",
                       (sha, kind, f.id, f.link, time.time()))
            db.execute("INSERT OR IGNORE INTO meetings (sha256) VALUES (?)", (sha,))

    def meeting(self, sha: str) -> tuple[bool, str | None, float | None] | None:
        with self._lock:
            r = self.db.execute("SELECT linked, link, done_at FROM meetings WHERE sha256=?",
                                (sha,)).fetchone()
        return (bool(r[0]), r[1], r[2]) if r else None

    def set_linked(self, sha: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE meetings SET linked=1 WHERE sha256=?", (sha,))

    def finish(self, sha: str, link: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE meetings SET link=?, done_at=? WHERE sha256=?",
                       (link, time.time(), sha))

    def digest(self, sha: str) -> str | None:
        """The digest of the content last written to this meeting's Docs (None: unknown,
        uploaded before digests were kept)."""
        with self._lock:
            r = self.db.execute("SELECT digest FROM contents WHERE sha256=?", (sha,)).fetchone()
        return r[0] if r else None

    def set_digest(self, sha: str, digest: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO contents VALUES (?,?)", (sha, digest))

    def folder(self, path: str) -> str | None:
        with self._lock:
            r = self.db.execute("SELECT folder_id FROM folders WHERE path=?", (path,)).fetchone()
        return r[0] if r else None

    def put_folder(self, path: str, folder_id: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO folders VALUES (?,?)", (path, folder_id))

    def forget_folders(self) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM folders")

    def counts(self) -> dict[str, int]:
        with self._lock:
            done = self.db.execute("SELECT COUNT(*) FROM meetings WHERE done_at IS NOT NULL"
                                   ).fetchone()[0]
            files = self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        return {"meetings": done, "files": files}


def _bytes_upload(fd, mimetype: str, chunk_size: int):
    """A resumable upload that hands each chunk to the transport as bytes, not as a stream:
    httplib2 silently re-sends a request once after a dropped connection, and a stream it
    already read would go out empty (the request then hangs until the timeout)."""
    from googleapiclient.http import MediaIoBaseUpload

    class BytesUpload(MediaIoBaseUpload):
        def has_stream(self) -> bool:
            return False

    return BytesUpload(fd, mimetype=mimetype, chunksize=chunk_size, resumable=True)


class DriveArchive:
    """The :class:`daemon.archive.base.Archive` protocol on Google Drive (see the module doc)."""

    name = "gdrive"
    credentials_of = "google"  # whose credentials uploads wait for, in words

    def __init__(self, settings, ledger_path: Path | None = None, auth: GoogleAuth | None = None,
                 log=None, chunk_size: int = 8 * 1024 * 1024):
        self.settings = settings
        self.cfg = settings.archive.drive
        self.auth = auth or GoogleAuth(settings)
        self.ledger = Ledger(ledger_path or settings.daemon.resolved_state_dir() / LEDGER_NAME)
        self.log = log or get_logger("minutesd.drive")
        self.chunk_size = chunk_size
        self.stats: dict[str, int] = {"requests": 0, "http_retries": 0, "created": 0,
                                      "found_existing": 0}
        self._service: Any = None
        self._service_creds: Any = None
        self._store_lock = threading.Lock()
        self._folder_lock = threading.Lock()

    def close(self) -> None:
        self.ledger.close()

    # -------------------------------------------------------------- the client

    def service(self):
        """The Drive v3 client (static discovery document), rebuilt when the credentials
        change (a new `minutesd auth google`)."""
        creds = self.auth.credentials()
        if self._service is None or creds is not self._service_creds:
            from googleapiclient.discovery import build

            opts = {"api_endpoint": self.cfg.api_endpoint} if self.cfg.api_endpoint else None
            self._service = build("drive", "v3", http=make_http(self.settings, creds),
                                  static_discovery=True, cache_discovery=False,
                                  client_options=opts)
            self._service_creds = creds
        return self._service

    def _sleep(self, seconds: float) -> None:
        self.stats["http_retries"] += 1
        self.log.warning("drive request retry", wait_s=round(seconds, 2),
                         retries=self.stats["http_retries"])
        time.sleep(seconds)

    def _call(self, req, what: str, retries: int | None = None) -> Any:
        """``req.execute(num_retries=...)`` with our wait scale; errors classified.

        A resumable upload whose chunk request broke off (the client retries status codes,
        not exceptions, there) is resumed on the same session: the next ``execute`` asks the
        session how far it got, and a completed session answers with its file."""
        # The client's own retry loop waits rand() * 2**n seconds; retry_delay_s scales it.
        req._sleep = self._sleep
        req._rand = lambda: random.random() * self.cfg.retry_delay_s
        n = self.cfg.num_retries if retries is None else retries
        self.stats["requests"] += 1
        for attempt in range(n + 1):
            try:
                return req.execute(num_retries=n)
            except Exception as exc:
                err = classify(exc, self.settings, what)
                resumable = getattr(req, "resumable_uri", None) is not None
                if not (resumable and isinstance(err, DriveTransient)) or attempt == n:
                    raise err from exc
                self._sleep(random.random() * self.cfg.retry_delay_s * 2 ** (attempt + 1))
        raise AssertionError("unreachable")

    def _list(self, q: str, fields: str, what: str, order_by: str | None = None,
              page_size: int = 100, limit: int | None = None) -> list[dict]:
        files = self.service().files()
        kw: dict[str, Any] = {"q": q, "fields": f"nextPageToken,files({fields})",
                              "pageSize": page_size, "supportsAllDrives": True,
                              "includeItemsFromAllDrives": True}
        if self.cfg.shared_drive_id:
            kw.update(corpora="drive", driveId=self.cfg.shared_drive_id)
        else:
            kw.update(spaces="drive")
        if order_by:
            kw["orderBy"] = order_by
        out: list[dict] = []
        token = None
        while True:
            page = self._call(files.list(pageToken=token, **kw), what)
            out += page.get("files", [])
            token = page.get("nextPageToken")
            if not token or (limit is not None and len(out) >= limit):
                return out

    # -------------------------------------------------------------- folders

    def _find_folder(self, parent: str, name: str) -> str | None:
        q = (f"name = {q_string(name)} and {q_string(parent)} in parents and "
             f"mimeType = '{FOLDER_MIME}' and trashed = false")
        found = self._list(q, "id,createdTime", f"find folder {name!r}")
        found.sort(key=lambda f: (f.get("createdTime", ""), f["id"]))
        return found[0]["id"] if found else None

    def _create_folder(self, parent: str, name: str, path: str) -> str:
        files = self.service().files()
        fid = self._call(files.generateIds(count=1, space="drive"), "generate an id")["ids"][0]
        body = {"id": fid, "name": name, "mimeType": FOLDER_MIME, "parents": [parent],
                "appProperties": {"minutesd_folder": path[-100:]}}
        try:
            self._call(files.create(body=body, fields="id", supportsAllDrives=True),
                       f"create folder {name!r}")
        except DriveError as exc:
            # 409: the id exists, i.e. a re-sent create already made it. Anything else: it may
            # still have been made before the failure. Either way, ask for it by id.
            try:
                self._call(files.get(fileId=fid, fields="id", supportsAllDrives=True),
                           "check a folder")
            except DriveError:
                raise exc from None
        self.stats["created"] += 1
        self.log.info("drive folder created", folder=path, id=fid)
        return fid

    def folder_for(self, parts: list[str]) -> str:
        """Find-or-create ``parent_id/parts...`` (serialised; ids cached in the ledger)."""
        with self._folder_lock:
            parent, path = self.cfg.parent_id, ""
            for name in parts:
                path = f"{path}/{name}"
                fid = self.ledger.folder(path)
                if fid is None:
                    fid = self._find_folder(parent, name) or self._create_folder(parent, name,
                                                                                  path)
                    self.ledger.put_folder(path, fid)
                parent = fid
            return parent

    # -------------------------------------------------------------- files

    def find_file(self, sha: str, kind: str) -> DriveFile | None:
        """A file this key and kind already has in Drive (not trashed), the oldest."""
        q = (f"appProperties has {{ key='{KEY_PROP}' and value={q_string(sha)} }} and "
             f"appProperties has {{ key='{KIND_PROP}' and value={q_string(kind)} }} and "
             "trashed = false")
        found = self._list(q, "id,webViewLink,createdTime", f"look up {kind}")
        if not found:
            return None
        found.sort(key=lambda f: (f.get("createdTime", ""), f["id"]))
        if len(found) > 1:
            self.log.warning("drive holds this meeting's file more than once; using the oldest",
                             kind=kind, ids=[f["id"] for f in found])
        f = found[0]
        return DriveFile(f["id"], f.get("webViewLink") or doc_link(f["id"]))

    def _props(self, rec: ArchiveRecord, kind: str) -> dict[str, str]:
        return {KEY_PROP: rec.key, KIND_PROP: kind, "minutesd_date": rec.date,
                "minutesd_time": rec.time or ""}

    def _ensure(self, rec: ArchiveRecord, kind: str, make) -> DriveFile:
        """The ledger's file, else the one Drive has (appProperties), else a new one."""
        f = self.ledger.file(rec.key, kind)
        if f is not None:
            return f
        f = self.find_file(rec.key, kind)
        if f is not None:
            self.stats["found_existing"] += 1
            self.log.info("drive file found by appProperties (uploaded before a crash)",
                          kind=kind, id=f.id)
        else:
            f = make()
            self.stats["created"] += 1
            crash_point("drive:created")  # in Drive, not yet in the ledger
        self.ledger.put_file(rec.key, kind, f)
        return f

    def _upload(self, body: dict, media, what: str) -> DriveFile:
        req = self.service().files().create(body=body, media_body=media,
                                            fields="id,webViewLink", supportsAllDrives=True)
        f = self._call(req, what)
        return DriveFile(f["id"], f.get("webViewLink") or doc_link(f["id"]))

    def _new_doc(self, name: str, html: str, folder: str, props: dict, what: str) -> DriveFile:
        media = _bytes_upload(io.BytesIO(html.encode("utf-8")), "text/html", self.chunk_size)
        body = {"name": name, "mimeType": DOC_MIME, "parents": [folder], "appProperties": props}
        return self._upload(body, media, what)

    def _new_audio(self, rec: ArchiveRecord, path: Path, folder: str) -> DriveFile:
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        body = {"name": f"{doc_title(rec)}{path.suffix}", "parents": [folder],
                "appProperties": self._props(rec, "audio")}
        with open(path, "rb") as fh:
            f = self._upload(body, _bytes_upload(fh, mime, self.chunk_size),
                             "upload the recording")
        return DriveFile(f.id, f"https://drive.google.com/file/d/{f.id}/view")

    # -------------------------------------------------------------- Archive

    def lookup(self, key: str) -> str | None:
        m = self.ledger.meeting(key)
        return m[1] if m and m[2] else None

    def store(self, rec: ArchiveRecord) -> str:
        with self._store_lock:
            try:
                return self._store(rec)
            except DrivePermanent as exc:
                if exc.status != 404:
                    raise
                # A cached folder was deleted in Drive: find or make the folders again, once.
                self.log.warning("a drive folder is gone; finding the folders again",
                                 error=str(exc))
                self.ledger.forget_folders()
                return self._store(rec)
            finally:
                with contextlib.suppress(Exception):
                    self.auth.persist()

    def _store(self, rec: ArchiveRecord) -> str:
        m = self.ledger.meeting(rec.key)
        digest = content_digest(rec)
        if m and m[2]:
            if self.ledger.digest(rec.key) != digest:
                self._refresh(rec, digest)  # corrected since: the same Docs, updated
            return m[1] or ""  # stored before: exactly once
        folder = self.folder_for([self.cfg.folder, rec.date[:4], rec.date[5:7]])
        title = doc_title(rec)
        mins = self._ensure(rec, "minutes", lambda: self._new_doc(
            title, minutes_html(rec.minutes, rec.time), folder, self._props(rec, "minutes"),
            "upload the minutes"))
        tr = self._ensure(rec, "transcript", lambda: self._new_doc(
            f"{title} (transcript)",
            transcript_html(rec.transcript, f"Transcript: {title}", [("Minutes", mins.link)]),
            folder, self._props(rec, "transcript"), "upload the transcript"))
        links = [("Transcript", tr.link)]
        audio = Path(rec.audio_path) if rec.audio_path else None
        if self.cfg.upload_audio:
            if audio is not None and audio.is_file():
                a = self._ensure(rec, "audio", lambda: self._new_audio(rec, audio, folder))
                links.append(("Recording", a.link))
            else:
                self.log.warning("the recording is gone; uploading the minutes without it",
                                 path=str(audio))
        if not (m := self.ledger.meeting(rec.key)) or not m[0]:
            self._put_html(mins.id, minutes_html(rec.minutes, rec.time, links),
                           "link the minutes to the transcript")
            self.ledger.set_linked(rec.key)
        self.ledger.set_digest(rec.key, digest)
        self.ledger.finish(rec.key, mins.link)
        return mins.link

    def _put_html(self, file_id: str, html: str, what: str) -> None:
        from googleapiclient.http import MediaIoBaseUpload

        media = MediaIoBaseUpload(io.BytesIO(html.encode("utf-8")), mimetype="text/html",
                                  resumable=False)
        self._call(self.service().files().update(
            fileId=file_id, media_body=media, fields="id", supportsAllDrives=True), what)

    def _refresh(self, rec: ArchiveRecord, digest: str) -> None:
        """Rewrite a stored meeting's two Docs in place (update, never create): safe to
        repeat after any fault, since it writes the same content into the same files."""
        mins = self.ledger.file(rec.key, "minutes") or self.find_file(rec.key, "minutes")
        tr = self.ledger.file(rec.key, "transcript") or self.find_file(rec.key, "transcript")
        if mins is None or tr is None:
            raise DrivePermanent("this meeting's Docs are gone from Drive; delete its row "
                                 "from the ledger and run `minutesd drive backfill`")
        title = doc_title(rec)
        self._put_html(tr.id, transcript_html(rec.transcript, f"Transcript: {title}",
                                              [("Minutes", mins.link)]),
                       "update the transcript")
        links = [("Transcript", tr.link)]
        audio = self.ledger.file(rec.key, "audio")
        if audio is not None:
            links.append(("Recording", audio.link))
        self._put_html(mins.id, minutes_html(rec.minutes, rec.time, links), "update the minutes")
        self.stats["updated"] = self.stats.get("updated", 0) + 1
        self.ledger.set_digest(rec.key, digest)
        self.log.info("drive docs updated in place", minutes=mins.id, transcript=tr.id)

    # -------------------------------------------------------------- search

    def minutes_folders(self) -> list[str]:
        """The minutes folder and every folder below it (years, months)."""
        top = self.ledger.folder(f"/{self.cfg.folder}") or self._find_folder(
            self.cfg.parent_id, self.cfg.folder)
        if top is None:
            return []
        level, out = [top], [top]
        for _ in range(2):  # years, then months
            nxt: list[str] = []
            for i in range(0, len(level), 40):
                parents = " or ".join(f"{q_string(f)} in parents" for f in level[i:i + 40])
                nxt += [f["id"] for f in self._list(
                    f"({parents}) and mimeType = '{FOLDER_MIME}' and trashed = false", "id",
                    "list the minutes folders")]
            out += nxt
            level = nxt
        return out

    def search(self, query: str, limit: int = 10, raw: bool = False) -> list[SearchHit]:
        """Docs under the minutes folder whose text has every word (Drive's full-text
        index); one hit per meeting, linking its minutes Doc."""
        terms = [query] if raw else fulltext_terms(query)
        folders = self.minutes_folders()
        found: list[dict] = []
        for i in range(0, len(folders), 40):
            parents = " or ".join(f"{q_string(f)} in parents" for f in folders[i:i + 40])
            q = f"({parents}) and mimeType = '{DOC_MIME}' and trashed = false and " + \
                " and ".join(terms)
            found += self._list(q, "id,name,webViewLink,appProperties,modifiedTime",
                                "search", limit=limit * 2)
        hits: dict[str, SearchHit] = {}
        for f in found:
            props = f.get("appProperties") or {}
            key = props.get(KEY_PROP) or f["id"]
            kind = props.get(KIND_PROP, "document")
            name = f.get("name", "")
            m = re.match(r"(\d{4}-\d\d-\d\d) (\d\d:\d\d) — (.*?)( \(transcript\))?$", name)
            title = m.group(3) if m else name
            link = f.get("webViewLink") or doc_link(f["id"])
            h = hits.get(key)
            if h is None:
                hits[key] = SearchHit(key=key, date=props.get("minutesd_date") or
                                      (m.group(1) if m else ""),
                                      time=props.get("minutesd_time") or (m.group(2) if m else None),
                                      title=title, snippet=f"matched in the {kind}", ref=link,
                                      source=kind, score=float(len(hits)))
            else:
                h.snippet = f"matched in the {h.source} and the {kind}"
                if kind == "minutes":
                    h.ref, h.source = link, "minutes"
        out = list(hits.values())[:limit]
        for h in out:  # link the meeting's minutes Doc even when only its transcript matched
            if h.source != "minutes" and re.fullmatch(r"[0-9a-f]{64}", h.key):
                m = self.ledger.file(h.key, "minutes") or self.find_file(h.key, "minutes")
                if m is not None:
                    h.ref = m.link
        return out

    def pending_info(self) -> dict[str, Any]:
        return self.ledger.counts()
