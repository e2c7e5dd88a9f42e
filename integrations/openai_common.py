"""What the OpenAI-backed stages share (``integrations.openai_asr``, ``integrations.openai_llm``).

* The error classes. Every failure a backend raises is an :class:`OpenAIBackendError`
  subclass whose message says the cause in words a user can act on.
* How the API key is read: from the environment variable the settings name, never from the
  settings file. A local OpenAI-compatible server that checks no key still needs a value.
* The ``openai`` client, with the settings' ``base_url``, ``max_retries`` and timeout. Retries on
  408/409/429/5xx and connection errors are the client's own (exponential backoff, honouring
  ``retry-after-ms``/``retry-after``); what still fails after them goes through
  :func:`translate_error`.

"The OpenAI API" in messages means api.openai.com; any other ``base_url`` is named as "the
server at URL", since a 401 from a local vLLM asks for a different fix than one from OpenAI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import openai

from daemon.errors import (
    CredentialsError,
    Handling,
    MinutesdError,
    PermanentError,
    TransientError,
)

# --------------------------------------------------------------------------- errors


class OpenAIBackendError(MinutesdError):
    """An OpenAI-backed stage failed; the message names the cause."""


class ConfigurationError(OpenAIBackendError, CredentialsError):
    """The backend is not usable as configured (e.g. no API key in the named variable)."""


class OpenAIAuthError(OpenAIBackendError, CredentialsError):
    """The API refused the key (401) or the key may not use this model or endpoint (403)."""


class OpenAIUnavailableError(OpenAIBackendError, TransientError):
    """No answer after the client's retries: connection failure, timeout, 5xx or rate limit."""


class OpenAIQuotaError(OpenAIUnavailableError):
    """The account is out of quota (429 insufficient_quota): billing needs a person."""

    handling = Handling.OPERATOR


class OpenAIRequestError(OpenAIBackendError, PermanentError):
    """The API rejected the request itself (400, 413, 422, ...); a 404 (no such model or
    endpoint) is the set-up's fault and waits for the operator instead."""


# --------------------------------------------------------------------------- key and client


def is_openai_api(base_url: object) -> bool:
    """True for OpenAI's own API (the default ``base_url`` or another ``*.openai.com`` host)."""
    host = (urlsplit(str(base_url)).hostname or "").lower()
    return host == "openai.com" or host.endswith(".openai.com")


class ApiKey:
    """The API key: from ``file`` when one is set (read again whenever the file changes, so a
    new key takes effect without a restart), else from ``$env``."""

    def __init__(self, env: str, file: Path | None, *, backend: str, setting: str):
        self.env, self.backend, self.setting = env, backend, setting
        self.file = Path(file).expanduser() if file else None
        self._seen: tuple[float, int] | None = None
        self._key: str | None = None

    @property
    def where(self) -> str:
        return str(self.file) if self.file else f"${self.env}"

    def current(self) -> str:
        if self.file is None:
            return read_api_key(self.env, backend=self.backend, setting=self.setting)
        try:
            st = self.file.stat()
            if self._key is None or (st.st_mtime, st.st_size) != self._seen:
                self._key = self.file.read_text(encoding="utf-8").strip().splitlines()[0].strip()
                self._seen = (st.st_mtime, st.st_size)
        except (OSError, IndexError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"the {self.backend} backend reads its API key from {self.file}, which cannot "
                f"be read ({exc})", fix=f"write the key into {self.file} (mode 0600, readable "
                f"by the service user), or unset {self.setting.replace('_env', '_file')}"
            ) from None
        if not self._key:
            raise ConfigurationError(f"the API key file {self.file} is empty",
                                     fix=f"write the key into {self.file}")
        return self._key


def read_api_key(env: str, *, backend: str, setting: str) -> str:
    """The key from ``$env``; a :class:`ConfigurationError` naming the variable if unset."""
    key = os.environ.get(env, "").strip()
    if not key:
        raise ConfigurationError(
            f"the {backend} backend needs an API key, but the environment variable {env} "
            f"is not set (or empty). Export {env}=sk-... or point {setting} at the variable "
            f"that holds the key. A local OpenAI-compatible server (vLLM, llama.cpp server, "
            f"Ollama) that checks no key still needs a value there: any dummy will do, e.g. "
            f"{env}=sk-local."
        )
    return key


def make_client(key: str, base_url: str | None, max_retries: int, timeout_s: float) -> openai.OpenAI:
    try:
        return openai.OpenAI(
            api_key=key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=openai.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        )
    except openai.OpenAIError as exc:
        raise ConfigurationError(f"cannot set up the OpenAI client: {exc}") from exc


# --------------------------------------------------------------------------- errors in words


@dataclass(frozen=True)
class CallContext:
    """What a message about a failed call needs to say."""

    task: str  # "transcription", "chat completion"
    model: str
    endpoint: str  # full URL of the endpoint called
    key_env: str
    max_retries: int
    timeout_s: float
    base_url_setting: str  # e.g. "asr.openai.base_url"
    key_file: str | None = None  # where the key is read from, when a file

    @property
    def key_where(self) -> str:
        return self.key_file or f"${self.key_env}"

    @property
    def official(self) -> bool:
        return is_openai_api(self.endpoint)

    @property
    def api(self) -> str:
        if self.official:
            return "the OpenAI API"
        parts = urlsplit(self.endpoint)
        return f"the server at {parts.scheme}://{parts.netloc}"


def server_said(exc: openai.APIError) -> str:
    """The server's own words: the error body's ``message`` (or FastAPI's ``detail``)."""
    body = exc.body
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
            if value:
                return str(value)
    if isinstance(body, str) and body.strip():
        return body.strip()
    return exc.message


def translate_error(exc: openai.OpenAIError, ctx: CallContext) -> OpenAIBackendError:
    """A client exception (after its retries) as an :class:`OpenAIBackendError` in words."""
    n = ctx.max_retries
    if isinstance(exc, openai.AuthenticationError):
        fix = (f"create a new key and put it in {ctx.key_where}" if ctx.official else
               f"put the key the server expects in {ctx.key_where}")
        return OpenAIAuthError(
            f"{ctx.api} rejected the API key from {ctx.key_where} (HTTP 401): the key is "
            f"wrong, revoked or expired. Server said: {server_said(exc)}",
            fix=fix + "; waiting jobs resume by themselves once it works",
        )
    if isinstance(exc, openai.PermissionDeniedError):
        return OpenAIAuthError(
            f"the API key from {ctx.key_where} may not use model {ctx.model!r} at "
            f"{ctx.endpoint} (HTTP 403): the key's project or organisation lacks access, "
            f"or the key was revoked. Server said: {server_said(exc)}",
            fix="give the key's project access to the model, or use a key that has it",
        )
    if isinstance(exc, openai.RateLimitError):
        quota = exc.code == "insufficient_quota"
        cause = "the account is out of quota (check billing)" if quota else "still rate-limited"
        return (OpenAIQuotaError if quota else OpenAIUnavailableError)(
            f"OpenAI {ctx.task} failed: {cause} after {n} retries (HTTP 429). "
            f"Server said: {server_said(exc)}"
        )
    if isinstance(exc, openai.APITimeoutError):
        return OpenAIUnavailableError(
            f"OpenAI {ctx.task} timed out ({ctx.timeout_s:g} s a request, {n} retries) "
            f"at {ctx.endpoint}"
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        where = "the OpenAI API" if ctx.official else "the server"
        check = ("Check the network, proxy settings and" if ctx.official else
                 "Is the server running and listening there? Check")
        return OpenAIUnavailableError(
            f"cannot reach {where} at {ctx.endpoint} after {n} retries: "
            f"{type(cause).__name__}: {cause}. {check} {ctx.base_url_setting}."
        )
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return OpenAIUnavailableError(
                f"{ctx.api} kept failing (HTTP {exc.status_code}) after {n} retries. "
                f"Server said: {server_said(exc)}"
            )
        hint = ""
        if exc.status_code == 404:
            hint = (f" Check that model {ctx.model!r} exists there and that "
                    f"{ctx.base_url_setting} ends in /v1 where the server expects it.")
        return OpenAIRequestError(
            f"{ctx.api} rejected the {ctx.task} request for model {ctx.model!r} "
            f"(HTTP {exc.status_code}): {server_said(exc)}{hint}",
            handling=Handling.OPERATOR if exc.status_code == 404 else None,
        )
    if isinstance(exc, openai.APIError):  # an error event inside a stream: no status code
        return OpenAIUnavailableError(
            f"{ctx.api} reported an error during the {ctx.task}: {server_said(exc)}"
        )
    return OpenAIBackendError(f"OpenAI {ctx.task} failed: {type(exc).__name__}: {exc}")
