"""What the review page lets through.

* **Who**: a page listening on a loopback address serves this machine only; listening on
  any other address needs ``web.token``, and then every request from a non-loopback client
  must carry it (the ``minutesd_token`` cookie the login form sets, or ``Authorization:
  Bearer``). :func:`check_bind` refuses to start otherwise.
* **Forgery**: every state-changing request (POST) carries a CSRF token bound to the
  browser's session cookie (HMAC with a secret made at start), and its ``Origin`` (or
  ``Referer``) must be this page's own.
* **Files**: nothing is served by a path from the request. A recording is found by its job
  key in the queue, a clip is made by the page under the state folder; :func:`owned_file`
  then checks that the path, with every link resolved, is a regular file inside one of the
  daemon's folders and that no part of it is a symlink.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit

from daemon.errors import EXIT_USAGE, OperatorError

SESSION_COOKIE = "minutesd_session"
TOKEN_COOKIE = "minutesd_token"


class WebRefused(OperatorError):
    """The page will not start as configured (a non-local address without a token); the
    daemon does not start either: it would be open to the network."""

    exit_code = EXIT_USAGE


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise WebRefused(f"web.host is {host!r}, beyond this machine, and web.token is not set: "
                         "set a token of 16+ characters ($MINUTESD__WEB__TOKEN) or listen on "
                         "127.0.0.1")


class Guard:
    def __init__(self, token: str | None, secret: bytes | None = None):
        self.token = token
        self.secret = secret or secrets.token_bytes(32)

    # ------------------------------------------------------------------ who

    def allowed(self, client_host: str | None, cookie_token: str | None,
                authorization: str | None) -> bool:
        if is_loopback(client_host):
            return True
        if not self.token:
            return False  # never reached when check_bind passed: then we only listen locally
        given = cookie_token or ""
        if authorization and authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    def token_ok(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    # ------------------------------------------------------------------ forgery

    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(24)

    def csrf_for(self, session: str) -> str:
        return hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: str | None, given: str | None) -> bool:
        if not session or not given:
            return False
        return hmac.compare_digest(self.csrf_for(session), given)

    @staticmethod
    def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
        """The request came from this page: its Origin (else Referer) names our Host. A
        request with neither is refused (browsers send Origin with every POST)."""
        src = origin if origin and origin != "null" else referer
        if not src or not host:
            return False
        return urlsplit(src).netloc.lower() == host.lower()


def owned_file(path: str | os.PathLike[str] | None, roots: list[Path]) -> Path | None:
    """``path`` when it is a regular file inside one of ``roots`` reached without a link
    (no component of it under the root is a symlink); else None."""
    if not path:
        return None
    p = Path(os.path.abspath(path))
    for root in roots:
        r = Path(os.path.abspath(root))
        try:
            rel = p.relative_to(r)
        except ValueError:
            continue
        if ".." in rel.parts:
            return None
        cur = r
        for part in rel.parts:
            cur = cur / part
            try:
                st = os.lstat(cur)
            except OSError:
                return None
            if stat.S_ISLNK(st.st_mode):
                return None
        if not stat.S_ISREG(st.st_mode) if rel.parts else True:
            return None
        if os.path.realpath(p) != str(p):
            return None
        return p
    return None
