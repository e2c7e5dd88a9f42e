"""Google credentials for a headless daemon: an OAuth token authorised once over an SSH
port-forward (``minutesd auth google``), or a service account.

* OAuth (installed app): ``InstalledAppFlow.run_local_server(open_browser=False)`` prints the
  consent URL; Google redirects the browser to ``http://localhost:<port>/``, which an
  ``ssh -L <port>:localhost:<port>`` forward carries to this machine. The token (with its
  refresh token) is written with mode 0600 into the state directory and written again
  whenever it is refreshed.
* Service account: a key file; either uploads into a shared drive (or a folder shared with
  the service account), or acts as a user through domain-wide delegation (``subject``).

Scope ``drive.file`` by default: minutesd sees only files it created. Nothing here touches
the network until credentials are used or refreshed. google-auth is imported lazily so the
CLI starts fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

from daemon.errors import CredentialsError

SCOPES = {"drive.file": "https://www.googleapis.com/auth/drive.file",
          "drive": "https://www.googleapis.com/auth/drive"}


class AuthProblem(CredentialsError):
    """No usable Google credentials: uploads wait until the user fixes it (``fix``)."""

    def __init__(self, message: str, fix: str):
        super().__init__(message, fix=fix)

    def __str__(self) -> str:
        return f"{self.args[0]}. Fix: {self.fix}"


def scopes(cfg) -> list[str]:
    return [SCOPES[cfg.scope]]


def token_path(settings) -> Path:
    return settings.archive.drive.resolved_token_file(settings.daemon)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reauth_fix(settings) -> str:
    cfg = settings.archive.drive
    if cfg.auth == "service_account":
        return (f"check the service account key {cfg.service_account_file} (and, with a "
                "subject, its domain-wide delegation in the Admin console)")
    return "run `minutesd auth google` (README: Google Drive archive) and the uploads resume"


class GoogleAuth:
    """Loads, refreshes and persists the configured credentials (thread-safe)."""

    def __init__(self, settings):
        self.settings = settings
        self.cfg = settings.archive.drive
        self.path = token_path(settings)
        self._lock = threading.Lock()
        self._creds: Any = None
        self._saved_token: str | None = None
        self._loaded_mtime: float | None = None

    # -------------------------------------------------------------- loading

    def token_mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def changed_on_disk(self) -> bool:
        """The token file was rewritten (by `minutesd auth google`) since it was loaded."""
        return self.cfg.auth == "oauth" and self.token_mtime() != self._loaded_mtime

    def credentials(self):
        with self._lock:
            if self._creds is None or self.changed_on_disk():
                self._creds = self._load()
            return self._creds

    def _load(self):
        if self.cfg.auth == "service_account":
            from google.oauth2 import service_account

            key = self.cfg.resolved("service_account_file", self.settings.daemon)
            if key is None or not key.is_file():
                raise AuthProblem(f"the service account key file {key} is missing",
                                  "set archive.drive.service_account_file to its JSON key")
            try:
                creds = service_account.Credentials.from_service_account_file(
                    str(key), scopes=scopes(self.cfg))
            except (ValueError, KeyError) as exc:
                raise AuthProblem(f"the service account key {key} is not valid: {exc}",
                                  "download a new JSON key for the service account") from None
            if self.cfg.subject:
                creds = creds.with_subject(self.cfg.subject)
            return creds
        from google.oauth2.credentials import Credentials

        self._loaded_mtime = self.token_mtime()
        if self._loaded_mtime is None:
            raise AuthProblem(f"Google Drive is not authorised yet (no token at {self.path})",
                              reauth_fix(self.settings))
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if self.cfg.token_uri:
                # google-auth always refreshes at Google's endpoint from a token file (the file
                # cannot redirect a refresh token); a configured endpoint is honoured here.
                data = dict(data, token_uri=self.cfg.token_uri)
                creds = Credentials(
                    token=data.get("token"), refresh_token=data.get("refresh_token"),
                    token_uri=self.cfg.token_uri, client_id=data.get("client_id"),
                    client_secret=data.get("client_secret"), scopes=scopes(self.cfg),
                    expiry=Credentials.from_authorized_user_info(data).expiry)
            else:
                creds = Credentials.from_authorized_user_info(data, scopes(self.cfg))
        except (OSError, ValueError) as exc:
            raise AuthProblem(f"the Google token {self.path} cannot be used: {exc}",
                              reauth_fix(self.settings)) from None
        self._saved_token = creds.token
        return creds

    # -------------------------------------------------------------- persisting

    def persist(self) -> None:
        """Write a refreshed OAuth token back (0600), so a restart need not refresh again."""
        if self.cfg.auth != "oauth":
            return
        with self._lock:
            creds = self._creds
            if creds is None or not creds.token or creds.token == self._saved_token:
                return
            if self.changed_on_disk():
                return  # a new authorisation landed meanwhile: never overwrite it
            write_private(self.path, creds.to_json())
            self._saved_token = creds.token
            self._loaded_mtime = self.token_mtime()


def auth_error(exc: BaseException, settings) -> AuthProblem | None:
    """A google-auth refresh failure that needs the user (revoked, expired, deleted client);
    None for transient ones (the token server down), which are retried."""
    from google.auth import exceptions as gexc

    if not isinstance(exc, gexc.RefreshError):
        return None
    if getattr(exc, "retryable", False):
        return None
    text = str(exc)
    if "invalid_grant" in text:
        why = "Google refused the saved authorisation (revoked, expired or password changed)"
    elif "invalid_client" in text or "unauthorized_client" in text:
        why = "Google refused the OAuth client (deleted, or not allowed for this account)"
    else:
        why = f"Google sign-in failed: {text[:200]}"
    return AuthProblem(why, reauth_fix(settings))


def token_report(settings) -> dict[str, Any]:
    """What is on disk, without any network call (for ``status`` and ``doctor``)."""
    cfg = settings.archive.drive
    out: dict[str, Any] = {"auth": cfg.auth, "scope": cfg.scope}
    if cfg.auth == "service_account":
        key = cfg.resolved("service_account_file", settings.daemon)
        out.update({"key_file": str(key) if key else None,
                    "present": bool(key and key.is_file()), "subject": cfg.subject})
        return out
    p = token_path(settings)
    out["token_file"] = str(p)
    try:
        st = p.stat()
    except OSError:
        out["present"] = False
        return out
    out["present"] = True
    out["mode"] = oct(stat.S_IMODE(st.st_mode))
    out["private"] = stat.S_IMODE(st.st_mode) & 0o077 == 0
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(p.read_text(encoding="utf-8"))
        out["refresh_token"] = bool(data.get("refresh_token"))
        out["expiry"] = data.get("expiry")
        out["scopes"] = data.get("scopes")
    return out


def authorize(settings, port: int | None = None, print_fn=print) -> Path:
    """``minutesd auth google``: the installed-app flow, without opening a browser here."""
    from google_auth_oauthlib.flow import InstalledAppFlow

    cfg = settings.archive.drive
    secrets = cfg.resolved("client_secrets", settings.daemon)
    if secrets is None or not secrets.is_file():
        raise AuthProblem(f"no OAuth client secrets file ({secrets})",
                          "create an OAuth client of type Desktop app in the Google Cloud "
                          "console, download its JSON and set archive.drive.client_secrets")
    ca = cfg.resolved("ca_certs", settings.daemon)

    class Flow(InstalledAppFlow):
        def fetch_token(self, **kwargs):
            if ca is not None:  # the code exchange trusts the configured CA bundle too
                kwargs.setdefault("verify", str(ca))
            return super().fetch_token(**kwargs)

    flow = Flow.from_client_secrets_file(str(secrets), scopes=scopes(cfg))
    port = cfg.oauth_port if port is None else port
    prompt = ("Open this URL in a browser on your own computer and allow access:\n\n    {url}\n\n"
              f"If minutesd runs on another machine, first forward the redirect port from your "
              f"computer:\n    ssh -L {port}:localhost:{port} <this server>\n"
              "(the URL's redirect_uri names the port). Waiting for Google's redirect ...")
    creds = flow.run_local_server(host="localhost", port=port, open_browser=False,
                                  authorization_prompt_message=prompt,
                                  success_message="minutesd is authorised. You can close this tab.",
                                  access_type="offline", prompt="consent")
    path = token_path(settings)
    write_private(path, creds.to_json())
    print_fn(f"authorised; token saved to {path} (mode 0600)")
    return path


def make_http(settings, credentials):
    """An authorised httplib2 transport with the configured timeout and CA bundle."""
    import google_auth_httplib2
    import httplib2

    cfg = settings.archive.drive
    ca = cfg.resolved("ca_certs", settings.daemon)
    http = httplib2.Http(timeout=cfg.timeout_s, ca_certs=str(ca) if ca else None)
    # 308 is "resume incomplete" for resumable uploads, not a redirect (as the client's own
    # googleapiclient.http.build_http does).
    http.redirect_codes = set(http.redirect_codes) - {308}
    return google_auth_httplib2.AuthorizedHttp(credentials, http=http)
