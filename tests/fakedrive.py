"""A fake Google Drive v3 (and Google sign-in) server for the tests: HTTPS on 127.0.0.1 with
a self-signed certificate made on the spot, spoken to by the real google-api-python-client.

What it implements is what minutesd uses, with Drive's semantics where they matter for
exactly-once:

* ``files.create``: metadata only (folders; a client-chosen ``id`` from ``generateIds``,
  409 when it exists), ``uploadType=multipart`` and ``uploadType=resumable`` (the file comes
  into being when the session's last byte arrives; the session URI answered again returns
  the same file). HTML sent with ``mimeType: application/vnd.google-apps.document`` is
  converted (recorded in ``conversions``; its text is indexed for ``fullText``).
* ``files.list`` with the query subset: ``'id' in parents``, ``name``, ``mimeType``,
  ``trashed``, ``appProperties has { key=... and value=... }``, ``fullText contains``,
  ``and``/``or``/``not``/parentheses, string escapes (a bad escape is a 400, as in Drive);
  ``fields`` partial responses (only what was asked for comes back), paging.
* ``files.get``, ``files.update`` (metadata PATCH, and media via multipart), ``generateIds``.
* OAuth: ``/o/oauth2/auth`` (consents at once: redirects with a code), ``/token``
  (authorization code, refresh token, service-account JWT); tokens can be revoked.
* Faults on demand: ``fault_rate`` with ``fault_kinds`` picked at random (seeded), or
  ``schedule(kind, n, match=...)``: 429, 403 userRateLimitExceeded, 500, 503, 401 (access
  token expired: forces a refresh), storageQuotaExceeded, dropped connections before or
  *after* the request took effect, and stalls past the client's timeout.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import email.parser
import email.policy
import html.parser
import itertools
import json
import random
import re
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

FOLDER = "application/vnd.google-apps.folder"
DOC = "application/vnd.google-apps.document"
CONVERTIBLE = {"text/html", "text/plain", "application/rtf"}
ERROR_FAULTS = {"429", "403rate", "500", "503", "401", "quota"}
FAULT_KINDS = ("429", "403rate", "500", "503", "401", "drop_before", "drop_after")


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake drive")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class QueryError(ValueError):
    pass


# ------------------------------------------------------------------ the query language

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|<=|>=|[=<>(){}])"
                    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*))")


def _unquote(lit: str) -> str:
    out, i, body = [], 0, lit[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in ("'", "\\"):
                raise QueryError(f"invalid escape \\{nxt} in {lit}")
            out.append(nxt)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def tokenize(q: str) -> list[tuple[str, str]]:
    toks, pos = [], 0
    q = q.rstrip()
    while pos < len(q):
        m = _TOKEN.match(q, pos)
        if not m or m.end() == pos:
            raise QueryError(f"cannot parse the query at {q[pos:pos + 20]!r}")
        pos = m.end()
        if m.group("str") is not None:
            toks.append(("str", _unquote(m.group("str"))))
        elif m.group("op") is not None:
            toks.append(("op", m.group("op")))
        else:
            toks.append(("word", m.group("word")))
    return toks


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class Query:
    """Parses a Drive query into a predicate over file dicts."""

    FIELDS = {"name", "mimeType", "trashed", "fullText", "modifiedTime", "createdTime",
              "starred"}

    def __init__(self, q: str):
        self.toks = tokenize(q)
        self.i = 0
        self.pred = self.expr() if self.toks else (lambda f: True)
        if self.i != len(self.toks):
            raise QueryError(f"unexpected {self.toks[self.i][1]!r}")

    def peek(self, kind: str | None = None, value: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        k, v = self.toks[self.i]
        return (kind is None or k == kind) and (value is None or v == value)

    def take(self, kind: str, value: str | None = None) -> str:
        if not self.peek(kind, value):
            got = self.toks[self.i][1] if self.i < len(self.toks) else "end of query"
            raise QueryError(f"expected {value or kind}, got {got!r}")
        self.i += 1
        return self.toks[self.i - 1][1]

    def expr(self):
        left = self.and_expr()
        while self.peek("word", "or"):
            self.i += 1
            right = self.and_expr()
            left = (lambda a, b: lambda f: a(f) or b(f))(left, right)
        return left

    def and_expr(self):
        left = self.not_expr()
        while self.peek("word", "and"):
            self.i += 1
            right = self.not_expr()
            left = (lambda a, b: lambda f: a(f) and b(f))(left, right)
        return left

    def not_expr(self):
        if self.peek("word", "not"):
            self.i += 1
            inner = self.not_expr()
            return lambda f: not inner(f)
        if self.peek("op", "("):
            self.i += 1
            e = self.expr()
            self.take("op", ")")
            return e
        return self.term()

    def term(self):
        if self.peek("str"):
            value = self.take("str")
            self.take("word", "in")
            coll = self.take("word")
            if coll != "parents":
                raise QueryError(f"'x' in {coll} is not supported by this fake")
            return lambda f: value in f.get("parents", [])
        field = self.take("word")
        if field in ("appProperties", "properties"):
            self.take("word", "has")
            self.take("op", "{")
            self.take("word", "key")
            self.take("op", "=")
            key = self.take("str")
            self.take("word", "and")
            self.take("word", "value")
            self.take("op", "=")
            value = self.take("str")
            self.take("op", "}")
            return lambda f: (f.get(field) or {}).get(key) == value
        if field not in self.FIELDS:
            raise QueryError(f"unknown field {field!r}")
        op = self.take("word", "contains") if self.peek("word", "contains") else self.take("op")
        if self.peek("word", "true") or self.peek("word", "false"):
            value: Any = self.take("word") == "true"
        else:
            value = self.take("str")
        if field == "fullText":
            if op != "contains":
                raise QueryError("fullText supports only contains")
            return self._fulltext(value)
        if field == "name" and op == "contains":
            return lambda f: value.lower() in f.get("name", "").lower()
        if op == "=":
            return lambda f: f.get(field) == value
        if op == "!=":
            return lambda f: f.get(field) != value
        if op in ("<", ">", "<=", ">="):
            import operator

            fn = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}[op]
            return lambda f: fn(f.get(field, ""), value)
        raise QueryError(f"operator {op!r} not supported for {field}")

    @staticmethod
    def _fulltext(value: str):
        v = value.strip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            phrase = _words(v[1:-1])

            def has_phrase(f: dict) -> bool:
                w = f.get("_words", [])
                n = len(phrase)
                return bool(n) and any(w[i:i + n] == phrase for i in range(len(w) - n + 1))

            return has_phrase
        need = set(_words(v))
        return lambda f: bool(need) and need <= set(f.get("_words", []))


# ------------------------------------------------------------------ partial responses


def parse_fields(spec: str) -> dict:
    """``nextPageToken,files(id,name)`` → {"nextPageToken": {}, "files": {"id": {}, ...}}."""
    out: dict = {}
    stack = [out]
    name = ""
    for c in spec + ",":
        if c in ",()":
            name = name.strip()
            if name:
                node = stack[-1]
                for part in name.split("/"):
                    node = node.setdefault(part, {})
                if c == "(":
                    stack.append(node)
            elif c == "(":
                raise QueryError("bad fields")
            if c == ")":
                stack.pop()
            name = ""
        else:
            name += c
    return out


def apply_fields(obj: Any, tree: dict) -> Any:
    if not tree or "*" in tree:
        return obj
    if isinstance(obj, list):
        return [apply_fields(x, tree) for x in obj]
    if isinstance(obj, dict):
        return {k: apply_fields(obj[k], sub) for k, sub in tree.items() if k in obj}
    return obj


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.links: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links += [v for k, v in attrs if k == "href" and v]


# ------------------------------------------------------------------ the server


class FakeDrive:
    def __init__(self, folder: Path, seed: int = 1):
        self.folder = Path(folder)
        self.cert, self.key = make_cert(self.folder / "tls")
        self.lock = threading.RLock()
        self.files: dict[str, dict] = {}
        self.sessions: dict[str, dict] = {}
        self.generated: set[str] = set()
        self.conversions: list[dict] = []
        self.access_tokens: set[str] = set()
        self.refresh_tokens: dict[str, bool] = {}  # token -> revoked
        self.codes: dict[str, dict] = {}
        self.jwt_claims: list[dict] = []
        self.auth_requests: list[dict] = []
        self.rng = random.Random(seed)  # whether a request fails
        self.kind_rng = random.Random(seed + 1)  # how
        self.fault_rate = 0.0
        self.fault_kinds: tuple[str, ...] = FAULT_KINDS
        self.scheduled: list[list] = []  # [kind, remaining, match]
        self.stall_s = 3.0
        self.stats: collections.Counter = collections.Counter()
        self.faults: collections.Counter = collections.Counter()
        self.log: list[tuple[str, str, int]] = []
        self._ids = itertools.count(1)
        self._clock = itertools.count(1)
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -------------------------------------------------------------- life cycle

    def start(self) -> FakeDrive:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.drive = self  # type: ignore[attr-defined]
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, name="fakedrive",
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def api_endpoint(self) -> str:
        return f"{self.base}/drive/v3/"

    # -------------------------------------------------------------- credentials for tests

    def issue_refresh_token(self) -> str:
        tok = "1//fake-refresh-" + secrets.token_hex(8)
        with self.lock:
            self.refresh_tokens[tok] = False
        return tok

    def issue_access_token(self) -> str:
        tok = "ya29.fake-" + secrets.token_hex(8)
        with self.lock:
            self.access_tokens.add(tok)
        return tok

    def client_config(self) -> dict:
        return {"installed": {"client_id": "fake-client.apps.googleusercontent.com",
                              "client_secret": "fake-secret", "auth_uri": f"{self.base}/o/oauth2/auth",
                              "token_uri": f"{self.base}/token",
                              "redirect_uris": ["http://localhost"]}}

    def write_client_secrets(self, path: Path) -> Path:
        path.write_text(json.dumps(self.client_config()))
        return path

    def write_token(self, path: Path, scope: str = "https://www.googleapis.com/auth/drive.file",
                    expired: bool = False) -> Path:
        """An authorised-user token file, as `minutesd auth google` leaves it."""
        c = self.client_config()["installed"]
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=-1 if expired else 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "token": self.issue_access_token(), "refresh_token": self.issue_refresh_token(),
            "token_uri": c["token_uri"], "client_id": c["client_id"],
            "client_secret": c["client_secret"], "scopes": [scope],
            "expiry": expiry.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}))
        path.chmod(0o600)
        return path

    def write_service_account(self, path: Path) -> Path:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "fake", "private_key_id": "k1",
            "private_key": pem, "client_email": "minutesd@fake.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": f"{self.base}/token"}))
        return path

    def revoke_all(self) -> None:
        """The user removed minutesd's access: every token stops working."""
        with self.lock:
            for t in self.refresh_tokens:
                self.refresh_tokens[t] = True
            self.access_tokens.clear()

    # -------------------------------------------------------------- faults

    def schedule(self, kind: str, n: int = 1, match: str = "") -> None:
        """The next ``n`` API requests whose "METHOD path?query" contains ``match`` fail."""
        with self.lock:
            self.scheduled.append([kind, n, match])

    def _pick_fault(self, method: str, url: str) -> str | None:
        with self.lock:
            for entry in self.scheduled:
                kind, n, match = entry
                if n > 0 and match in f"{method} {url}":
                    entry[1] -= 1
                    return kind
            if self.fault_rate and self.rng.random() < self.fault_rate:
                return self.kind_rng.choice(self.fault_kinds)
        return None

    # -------------------------------------------------------------- views for tests

    def live(self) -> list[dict]:
        with self.lock:
            return [f for f in self.files.values() if not f["trashed"]]

    def by_key(self) -> dict[str, dict[str, list[dict]]]:
        """sha256 → kind → files (trashed ones too: a duplicate is a duplicate)."""
        out: dict[str, dict[str, list[dict]]] = collections.defaultdict(
            lambda: collections.defaultdict(list))
        with self.lock:
            for f in self.files.values():
                p = f.get("appProperties") or {}
                if "minutesd_sha256" in p:
                    out[p["minutesd_sha256"]][p.get("minutesd_kind", "?")].append(f)
        return out

    def duplicates(self) -> int:
        dup = sum(len(fs) - 1 for kinds in self.by_key().values() for fs in kinds.values())
        folders = collections.Counter((f["name"], tuple(f["parents"])) for f in self.live()
                                      if f["mimeType"] == FOLDER)
        return dup + sum(n - 1 for n in folders.values())

    def path_of(self, f: dict) -> str:
        parts = []
        with self.lock:
            cur = f
            while cur.get("parents"):
                pid = cur["parents"][0]
                parent = self.files.get(pid)
                if parent is None:
                    parts.append(pid)
                    break
                parts.append(parent["name"])
                cur = parent
        return "/".join(reversed(parts))

    # -------------------------------------------------------------- files

    def _now(self) -> str:
        # strictly increasing, so "oldest" is well defined even within one millisecond
        base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=next(self._clock))
        return base.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def _new_id(self) -> str:
        return "f" + secrets.token_hex(6) + str(next(self._ids))

    def _link(self, f: dict) -> str:
        if f["mimeType"] == DOC:
            return f"https://docs.google.com/document/d/{f['id']}/edit?usp=drivesdk"
        if f["mimeType"] == FOLDER:
            return f"https://drive.google.com/drive/folders/{f['id']}"
        return f"https://drive.google.com/file/d/{f['id']}/view?usp=drivesdk"

    def _set_content(self, f: dict, media: bytes | None, media_type: str | None,
                     convert_to: str | None) -> None:
        if media is None:
            return
        if convert_to == DOC and (media_type or "").split(";")[0] in CONVERTIBLE:
            f["mimeType"] = DOC
            self.conversions.append({"id": f["id"], "from": media_type, "to": DOC})
        elif not convert_to or convert_to not in (DOC,):
            f["mimeType"] = convert_to or (media_type or "application/octet-stream")
        f["content"] = media
        text = media.decode("utf-8", errors="replace")
        if (media_type or "").startswith("text/html"):
            p = _Text()
            p.feed(text)
            f["links"] = p.links
            text = " ".join(p.parts)
        f["text"] = text if f["mimeType"] == DOC or (media_type or "").startswith("text/") else ""
        f["size"] = str(len(media))

    def _index(self, f: dict) -> None:
        f["_words"] = _words(f.get("name", "") + " " + f.get("text", ""))
        f["webViewLink"] = self._link(f)

    def create(self, meta: dict, media: bytes | None = None,
               media_type: str | None = None) -> tuple[int, dict]:
        with self.lock:
            fid = meta.get("id") or self._new_id()
            if fid in self.files:
                return 409, _error(409, "fileIdInUse", "A file already exists with the "
                                   "provided ID.")
            if meta.get("id") and fid not in self.generated:
                return 400, _error(400, "invalid", "The provided file ID is not usable.")
            for p in meta.get("parents") or []:
                if p != "root" and p not in self.files:
                    return 404, _error(404, "notFound", f"File not found: {p}.")
            now = self._now()
            f = {"kind": "drive#file", "id": fid, "name": meta.get("name", "Untitled"),
                 "mimeType": meta.get("mimeType") or media_type or "application/octet-stream",
                 "parents": list(meta.get("parents") or ["root"]),
                 "appProperties": dict(meta.get("appProperties") or {}),
                 "properties": dict(meta.get("properties") or {}),
                 "description": meta.get("description", ""),
                 "createdTime": now, "modifiedTime": now, "trashed": False, "text": ""}
            self._set_content(f, media, media_type, meta.get("mimeType"))
            self._index(f)
            self.files[fid] = f
            self.stats["files_created"] += 1
            return 200, f

    def update(self, fid: str, meta: dict, media: bytes | None = None,
               media_type: str | None = None, params: dict | None = None) -> tuple[int, dict]:
        with self.lock:
            f = self.files.get(fid)
            if f is None:
                return 404, _error(404, "notFound", f"File not found: {fid}.")
            for k in ("name", "description", "trashed"):
                if k in meta:
                    f[k] = meta[k]
            for k in ("appProperties", "properties"):
                if k in meta:
                    f[k].update({a: b for a, b in meta[k].items() if b is not None})
            params = params or {}
            if params.get("addParents"):
                f["parents"] += params["addParents"].split(",")
            if params.get("removeParents"):
                rm = set(params["removeParents"].split(","))
                f["parents"] = [p for p in f["parents"] if p not in rm]
            if media is not None:
                self._set_content(f, media, media_type, f["mimeType"] if f["mimeType"] == DOC
                                  else None)
            f["modifiedTime"] = self._now()
            self._index(f)
            self.stats["files_updated"] += 1
            return 200, f

    def list(self, params: dict) -> tuple[int, dict]:
        try:
            pred = Query(params.get("q", ""))
        except QueryError as exc:
            return 400, _error(400, "invalid", f"Invalid Value: {exc}", location="q")
        with self.lock:
            files = [f for f in self.files.values() if pred.pred(f)]
        order = params.get("orderBy", "")
        if order:
            for key in reversed([k.strip() for k in order.split(",")]):
                desc = key.endswith(" desc")
                key = key.replace(" desc", "")
                files.sort(key=lambda f, k=key: f.get(k, ""), reverse=desc)
        size = min(int(params.get("pageSize", 100)), 1000)
        start = int(params.get("pageToken") or 0)
        page = files[start:start + size]
        out: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False,
                               "files": page}
        if start + size < len(files):
            out["nextPageToken"] = str(start + size)
        return 200, out


def _error(code: int, reason: str, message: str, location: str | None = None) -> dict:
    err: dict[str, Any] = {"domain": "usageLimits" if "Limit" in reason else "global",
                           "reason": reason, "message": message}
    if location:
        err.update(location=location, locationType="parameter")
    return {"error": {"code": code, "message": message, "errors": [err]}}


FAULT_RESPONSES = {
    "429": (429, _error(429, "rateLimitExceeded", "Rate limit exceeded")),
    "403rate": (403, _error(403, "userRateLimitExceeded", "User rate limit exceeded.")),
    "500": (500, _error(500, "backendError", "Internal Error")),
    "503": (503, _error(503, "backendError", "Service Unavailable")),
    "401": (401, _error(401, "authError", "Invalid Credentials")),
    "quota": (403, _error(403, "storageQuotaExceeded",
                          "The user's Drive storage quota has been exceeded.")),
}

DEFAULT_FIELDS = {"id": {}, "name": {}, "mimeType": {}, "kind": {}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeDrive/1"

    def log_message(self, *args) -> None:  # quiet
        pass

    @property
    def drive(self) -> FakeDrive:
        return self.server.drive  # type: ignore[attr-defined]

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, obj: Any = None, headers: dict | None = None,
              raw: bytes | None = None) -> None:
        data = raw if raw is not None else (json.dumps(obj).encode() if obj is not None else b"")
        self.send_response(status)
        if raw is None and obj is not None:
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _drop(self) -> None:
        self.close_connection = True  # nothing written: the client sees the connection close

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    # -------------------------------------------------------------- dispatch

    def _handle(self, method: str) -> None:
        d = self.drive
        url = urlparse(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self._body()
        if url.path == "/token":
            return self._token(body)
        if url.path == "/o/oauth2/auth":
            return self._consent(params)
        with d.lock:
            d.stats["requests"] += 1
            d.stats[f"{method} {re.sub(r'/files/[^/]+$', '/files/ID', url.path)}"] += 1
        fault = d._pick_fault(method, self.path)
        if fault == "quota" and not (method == "POST" or "upload" in url.path):
            fault = None  # storage quota only refuses new content
        if fault:
            with d.lock:
                d.faults[fault] += 1
                d.log.append((method, self.path, -1))
        if fault == "drop_before":
            return self._drop()
        if fault == "stall":
            time.sleep(d.stall_s)
            return self._drop()
        if fault in ERROR_FAULTS:
            status, err = FAULT_RESPONSES[fault]
            if fault == "401":
                tok = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                with d.lock:
                    d.access_tokens.discard(tok)  # as if it had just expired
            return self._send(status, err)
        tok = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if tok not in d.access_tokens:
            return self._send(401, FAULT_RESPONSES["401"][1])
        status, obj, headers = self._route(method, url.path, params, body)
        with d.lock:
            d.log.append((method, self.path, status))
        if fault == "drop_after":
            return self._drop()  # it took effect; the answer is lost
        fields = params.get("fields")
        if "upload_id" in params:  # a session answers with the fields its start asked for
            with d.lock:
                fields = (d.sessions.get(params["upload_id"]) or {}).get("fields")
        if isinstance(obj, dict) and obj.get("kind") == "drive#file":
            obj = _public(obj)
        elif isinstance(obj, dict) and obj.get("kind") == "drive#fileList":
            obj = dict(obj, files=[_public(f) for f in obj["files"]])
        if status < 300 and isinstance(obj, dict) and obj.get("kind") != "drive#fileList" \
                and "ids" not in obj:
            obj = apply_fields(obj, parse_fields(fields) if fields else DEFAULT_FIELDS)
        elif status < 300 and isinstance(obj, dict) and obj.get("kind") == "drive#fileList":
            tree = parse_fields(fields) if fields else {
                "kind": {}, "nextPageToken": {}, "incompleteSearch": {}, "files": DEFAULT_FIELDS}
            obj = apply_fields(obj, tree)
        self._send(status, obj, headers)

    def _route(self, method: str, path: str, params: dict, body: bytes
               ) -> tuple[int, Any, dict | None]:
        d = self.drive
        ctype = self.headers.get("Content-Type", "")
        if path == "/drive/v3/files/generateIds" and method == "GET":
            n = int(params.get("count", 10))
            ids = [d._new_id() for _ in range(n)]
            with d.lock:
                d.generated.update(ids)
            return 200, {"kind": "drive#generatedIds", "space": params.get("space", "drive"),
                         "ids": ids}, None
        if path == "/drive/v3/files":
            if method == "GET":
                return (*d.list(params), None)
            if method == "POST":
                return (*d.create(json.loads(body or b"{}")), None)
        m = re.fullmatch(r"/drive/v3/files/([^/]+)", path)
        if m:
            fid = m.group(1)
            if method == "GET":
                f = d.files.get(fid)
                if f is None:
                    return 404, _error(404, "notFound", f"File not found: {fid}."), None
                if params.get("alt") == "media":
                    return 200, {"content": f.get("content", b"").decode("utf-8", "replace")}, None
                return 200, f, None
            if method == "PATCH":
                return (*d.update(fid, json.loads(body or b"{}"), params=params), None)
        if path == "/upload/drive/v3/files" or path.startswith("/upload/drive/v3/files/"):
            fid = path[len("/upload/drive/v3/files/"):] or None
            kind = params.get("uploadType")
            if kind == "multipart" and method in ("POST", "PATCH"):
                meta, media, mtype = _multipart(ctype, body)
                if fid:
                    return (*d.update(fid, meta, media, mtype, params), None)
                return (*d.create(meta, media, mtype), None)
            if kind == "media" and method in ("POST", "PATCH"):
                if fid:
                    return (*d.update(fid, {}, body, ctype, params), None)
                return (*d.create({}, body, ctype), None)
            if kind == "resumable":
                return self._resumable(method, fid, params, body)
        return 404, _error(404, "notFound", f"no route {method} {path}"), None

    def _resumable(self, method: str, fid: str | None, params: dict, body: bytes):
        d = self.drive
        sid = params.get("upload_id")
        if sid is None:  # start a session
            if method not in ("POST", "PATCH"):
                return 400, _error(400, "badRequest", "no upload_id"), None
            sid = secrets.token_hex(8)
            size = self.headers.get("X-Upload-Content-Length")
            with d.lock:
                d.sessions[sid] = {"meta": json.loads(body or b"{}"), "file_id": fid,
                                   "type": self.headers.get("X-Upload-Content-Type"),
                                   "size": int(size) if size else None, "data": b"",
                                   "done": None, "fields": params.get("fields")}
                d.stats["sessions"] += 1
            q = urlencode({"uploadType": "resumable", "upload_id": sid})
            loc = f"{d.base}/upload/drive/v3/files{'/' + fid if fid else ''}?{q}"
            return 200, None, {"Location": loc}
        with d.lock:
            s = d.sessions.get(sid)
            if s is None:
                return 404, _error(404, "notFound", "upload session not found"), None
            if s["done"] is not None:  # completed already: the same file again
                d.stats["session_replays"] += 1
                return 200, d.files[s["done"]], None
            rng = self.headers.get("Content-Range", "")
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", rng)
            q = re.fullmatch(r"bytes \*/(\d+|\*)", rng)
            if q:  # status query
                total = q.group(1)
            elif m:
                start, total = int(m.group(1)), m.group(3)
                if start != len(s["data"]):
                    return 400, _error(400, "badContentRange", "unexpected offset"), None
                s["data"] += body
            else:
                s["data"] += body
                total = str(len(s["data"]))
            if total != "*":
                s["size"] = int(total)
            if s["size"] is None or len(s["data"]) < s["size"]:
                h = {"Range": f"bytes=0-{len(s['data']) - 1}"} if s["data"] else {}
                return 308, None, h
            meta = s["meta"]
            if s["file_id"]:
                status, f = d.update(s["file_id"], meta, s["data"], s["type"])
            else:
                status, f = d.create(meta, s["data"], s["type"])
            if status < 300:
                s["done"] = f["id"]
            return status, f, None

    # -------------------------------------------------------------- sign-in

    def _token(self, body: bytes) -> None:
        d = self.drive
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        grant = form.get("grant_type")
        with d.lock:
            d.stats["token_requests"] += 1
        if grant == "refresh_token":
            with d.lock:
                revoked = d.refresh_tokens.get(form.get("refresh_token", ""), True)
            if revoked:
                return self._send(400, {"error": "invalid_grant",
                                        "error_description": "Token has been expired or revoked."})
            return self._send(200, {"access_token": d.issue_access_token(), "expires_in": 3599,
                                    "token_type": "Bearer"})
        if grant == "authorization_code":
            with d.lock:
                ok = d.codes.pop(form.get("code", ""), None)
            if ok is None:
                return self._send(400, {"error": "invalid_grant"})
            return self._send(200, {"access_token": d.issue_access_token(), "expires_in": 3599,
                                    "refresh_token": d.issue_refresh_token(),
                                    "token_type": "Bearer", "scope": ok.get("scope", "")})
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            payload = form.get("assertion", "..").split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            with d.lock:
                d.jwt_claims.append(claims)
            return self._send(200, {"access_token": d.issue_access_token(), "expires_in": 3599,
                                    "token_type": "Bearer"})
        return self._send(400, {"error": "unsupported_grant_type"})

    def _consent(self, params: dict) -> None:
        """The user clicks "Allow": back to the redirect URI with a code."""
        d = self.drive
        code = "4/fake-" + secrets.token_hex(6)
        with d.lock:
            d.codes[code] = params
            d.auth_requests.append(params)
        q = urlencode({"state": params.get("state", ""), "code": code,
                       "scope": params.get("scope", "")})
        self._send(302, None, {"Location": f"{params['redirect_uri']}?{q}"}, raw=b"")


def _public(f: dict) -> dict:
    return {k: v for k, v in f.items() if k not in ("content", "text", "_words", "links")}


def _multipart(ctype: str, body: bytes) -> tuple[dict, bytes, str]:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
    parts = list(msg.iter_parts())
    meta = json.loads(parts[0].get_payload(decode=True) or b"{}")
    media = parts[1].get_payload(decode=True) if len(parts) > 1 else None
    return meta, media or b"", parts[1].get_content_type() if len(parts) > 1 else ""
