"""The minutes LLM through Chat Completions (``llm.backend: openai``): the OpenAI API, or any
OpenAI-compatible server (vLLM, llama.cpp server, Ollama, ``transformers serve``) named by
``llm.openai.base_url``. The transcript leaves the machine when the server is remote.

Settings used: ``llm.openai.model`` (not ``llm.model``, which names the local model),
``base_url``, ``api_key_env``, ``max_retries``, ``timeout_s`` (a request; while streaming, the
longest wait between two pieces), ``json_mode``; ``llm.temperature``, ``llm.context_tokens``.

Request. ``temperature`` from settings; at 0 (deterministic) a fixed ``seed`` goes with it,
which OpenAI and most local servers use for best-effort reproducible sampling (above 0 no
seed, so a retry can give a different answer). ``response_format={"type": "json_object"}``
when the caller asks for JSON and ``json_mode`` is on. With ``on_token`` the answer is
streamed (``stream=True``, ``stream_options.include_usage``) and each text piece is passed
on as it arrives.

The answer length limit. OpenAI's newer models reject ``max_tokens`` and want
``max_completion_tokens``; many local servers know only ``max_tokens`` and silently ignore
``max_completion_tokens`` (Ollama, llama-cpp-python, llamafile and older llama.cpp do), which
would leave generation unbounded. So api.openai.com is sent ``max_completion_tokens`` only,
and every other server both fields with the same value (vLLM, llama.cpp, Ollama and
``transformers serve`` accept that and use one of them).

Fallbacks. A server that rejects an optional field with a 400/422 that names it ("Unsupported
parameter: 'max_tokens' ...", "'response_format' of type 'json_object' is not supported",
"Extra inputs are not permitted") is asked again without that field; the field stays off
for the rest of this object's life, so the 400 costs one round trip once. Optional fields:
``max_completion_tokens``/``max_tokens`` (one of the two is always kept: rejecting the last
one swaps it for the other), ``response_format`` (then the caller's prompt alone asks for
JSON; the minutes writer validates and retries anyway), ``stream_options``, ``seed`` and
``temperature`` (reasoning models accept only their default). Each fallback is logged.
Errors about length (prompt plus answer over the context window) are never "fixed" by
dropping a field: they raise, saying which setting to lower.

Token counting. A remote model's tokenizer is not available here, so :meth:`count_tokens`
estimates from character classes, leaning high: an ASCII letter is 1/3 of a token; an ASCII
digit or punctuation mark is a whole one (many tokenizers split digits one by one, and
timestamps like ``[00:14:40]`` start every transcript line); whitespace is free (it joins
the next word's token) except before a digit, where tokenizers keep it apart; each UTF-8
byte of any other character is 3/4 of a token. Checked against the least efficient
tokenizers at hand (SmolLM2's 49k BPE and Whisper's GPT-2 BPEs): on English meeting text,
JSON, numbers, and Russian, Chinese, Japanese and Greek lines the estimate is at or above
their count (English: 10-25 % above; modern 100k+ vocabularies such as OpenAI's or Llama 3's
need fewer tokens still); on code, rare names, and German or French with an English-only
tokenizer it can be up to 10 % below. A plain chars/3 would be 2-5 times too low on numbers
and CJK text. Over-counting only means a transcript is split into a few more parts than
needed; the minutes writer keeps 200 tokens of slack besides.

Errors are :mod:`integrations.openai_common` classes, with messages a user can act on.
``last_stats`` holds the latest call's numbers: ``prompt_tokens``/``completion_tokens``
(``new_tokens`` is the same) from the server's ``usage`` where it gives one, else estimated
(``usage_estimated``: True); ``seconds``, ``tokens_per_s``, ``first_token_s`` (streaming),
``finish_reason``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import openai

from daemon.logs import get_logger
from daemon.settings import LLMSettings
from daemon.types import ChatMessage, TokenSink
from integrations.openai_common import (
    ApiKey,
    CallContext,
    OpenAIBackendError,
    OpenAIRequestError,
    is_openai_api,
    make_client,
    server_said,
    translate_error,
)

SEED = 42  # sent with temperature 0; non-zero because some servers read 0 as "unset"
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators a chat template adds around each message

TOKEN_PARAMS = ("max_completion_tokens", "max_tokens")
OPTIONAL_PARAMS = frozenset({*TOKEN_PARAMS, "response_format", "stream_options", "seed",
                             "temperature"})

# A 400/422 that says a field is not accepted (as opposed to a bad value in an accepted one).
_REJECTS_FIELD = re.compile(
    r"unsupported|not supported|does not support|unknown (field|param|arg)|unrecogni[sz]ed"
    r"|unexpected|not permitted|not allowed|extra (fields|inputs|arguments)|extra_forbidden"
    r"|must contain the word",
    re.IGNORECASE,
)
# A 400 about length: prompt plus answer over the context window, or a limit too large.
_TOO_LONG = re.compile(
    r"context[ _-]?(length|size|window)|maximum context|context_length_exceeded|too many tokens"
    r"|prompt is too long|exceeds? the (available )?context|too large",
    re.IGNORECASE,
)

log = get_logger("minutesd.openai_llm")


def _keep_only(keep: bytes) -> bytes:
    return bytes(b for b in range(256) if b not in keep)


_NOT_LETTERS = _keep_only(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NOT_SPACE = _keep_only(b" \t\n\r\x0b\x0c")
_SPACE_BEFORE_DIGIT = re.compile(rb"\s[0-9]")


def estimate_tokens(text: str) -> int:
    """Token count of ``text`` without a tokenizer, leaning high (see the module docstring)."""
    if not text:
        return 0
    ascii_part = text.encode("ascii", "ignore")
    other_bytes = len(text.encode("utf-8", "replace")) - len(ascii_part)
    letters = len(ascii_part.translate(None, _NOT_LETTERS))
    spaces = len(ascii_part.translate(None, _NOT_SPACE))
    digits_and_marks = len(ascii_part) - letters - spaces
    spaced_numbers = len(_SPACE_BEFORE_DIGIT.findall(ascii_part))  # " 2024": the space is a token
    # letters/3 + digits_and_marks + spaced numbers + 0.75 * other_bytes, rounded up
    return -(-(4 * letters + 12 * (digits_and_marks + spaced_numbers) + 9 * other_bytes) // 12)


class OpenAIChat:
    """``ChatModel`` over Chat Completions at the OpenAI API or an OpenAI-compatible server."""

    name = "openai"

    def __init__(self, cfg: LLMSettings, cache_dir: Path | None = None):
        self.cfg = cfg
        oc = cfg.openai
        self.model = oc.model
        self.context_tokens = cfg.context_tokens
        self.temperature = float(cfg.temperature)
        self.json_mode = oc.json_mode
        self.key = ApiKey(oc.api_key_env, oc.api_key_file, backend="openai LLM",
                          setting="llm.openai.api_key_env")
        self.client = make_client(self.key.current(), oc.base_url, oc.max_retries, oc.timeout_s)
        self.endpoint = str(self.client.base_url).rstrip("/") + "/chat/completions"
        self.official = is_openai_api(self.client.base_url)
        # which answer-length fields to send (see the module docstring); fallbacks narrow it
        self.token_params: tuple[str, ...] = (
            ("max_completion_tokens",) if self.official else TOKEN_PARAMS
        )
        self.rejected: set[str] = set()  # optional fields this server refused
        self.last_stats: dict[str, Any] = {}
        self._ctx = CallContext(
            task="chat completion", model=self.model, endpoint=self.endpoint,
            key_env=oc.api_key_env, max_retries=oc.max_retries, timeout_s=oc.timeout_s,
            base_url_setting="llm.openai.base_url",
            key_file=str(self.key.file) if self.key.file else None,
        )

    # ------------------------------------------------------------------ ChatModel

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def chat(
        self,
        messages: list[ChatMessage],
        max_new_tokens: int,
        json_output: bool = False,
        on_token: TokenSink | None = None,
    ) -> str:
        stream = on_token is not None
        t0 = time.perf_counter()
        response = None
        for _ in range(len(OPTIONAL_PARAMS) + 2):  # each round drops a field or ends
            params = self.request_params(messages, max_new_tokens, json_output, stream)
            try:
                self.client.api_key = self.key.current()  # a fixed key file takes effect now
                response = self.client.chat.completions.create(**params)
                break
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                field = self._rejected_field(exc, params)
                if field is None:
                    raise self._error(exc, max_new_tokens) from exc
                self._drop(field, exc)
            except openai.OpenAIError as exc:
                raise self._error(exc, max_new_tokens) from exc
        if response is None:  # pragma: no cover - every round above drops a field
            raise OpenAIRequestError(f"{self._ctx.api} kept rejecting the request's fields")
        if stream:
            assert on_token is not None
            text, usage, finish, pieces, first_s = self._read_stream(response, on_token, t0)
        else:
            text, usage, finish = self._read_completion(response)
            pieces, first_s = None, None
        self._record(messages, text, usage, finish, pieces, first_s, time.perf_counter() - t0)
        if finish == "length":
            log.warning("openai chat: the answer was cut off at the token limit",
                        max_new_tokens=max_new_tokens, model=self.model)
        return text

    # ------------------------------------------------------------------ request

    def request_params(
        self, messages: list[ChatMessage], max_new_tokens: int, json_output: bool, stream: bool
    ) -> dict[str, Any]:
        """The keyword arguments for ``chat.completions.create``, fallbacks applied."""
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": self.temperature,
        }
        if self.temperature == 0:
            params["seed"] = SEED
        for name in self.token_params:
            params[name] = max(1, int(max_new_tokens))
        if json_output and self.json_mode:
            params["response_format"] = {"type": "json_object"}
        if stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        for name in self.rejected - set(TOKEN_PARAMS):
            params.pop(name, None)
        return params

    def _rejected_field(self, exc: openai.APIStatusError, params: dict[str, Any]) -> str | None:
        """The optional field a 400/422 says the server does not accept, if it says one."""
        text = f"{exc.message} {json.dumps(exc.body, default=str)}"
        if _TOO_LONG.search(text) or not _REJECTS_FIELD.search(text):
            return None
        sent = [k for k in params if k in OPTIONAL_PARAMS]
        named = re.split(r"[.\[]", exc.param or "", maxsplit=1)[0]
        if named in sent:
            return named
        where: dict[str, int] = {}
        for k in sent:
            m = re.search(rf"(?<!\w){re.escape(k)}(?!\w)", text)
            if m:
                where[k] = m.start()
        return min(where, key=where.__getitem__) if where else None  # the first one named

    def _drop(self, field: str, exc: openai.APIStatusError) -> None:
        self.rejected.add(field)
        if field in TOKEN_PARAMS:
            kept = tuple(p for p in self.token_params if p != field)
            if not kept:
                other = next(p for p in TOKEN_PARAMS if p != field)
                if other in self.rejected:
                    raise OpenAIRequestError(
                        f"{self._ctx.api} rejects both max_completion_tokens and max_tokens, so "
                        f"the answer length cannot be limited. Server said: {server_said(exc)}"
                    ) from exc
                kept = (other,)
            self.token_params = kept
        log.warning("openai chat: the server rejected a field; asking again without it",
                    field=field, status=exc.status_code, server_said=server_said(exc)[:300],
                    endpoint=self.endpoint)

    def _error(self, exc: openai.OpenAIError, max_new_tokens: int | None = None,
               pieces: int = 0) -> OpenAIBackendError:
        err = translate_error(exc, self._ctx)
        if isinstance(exc, openai.APIStatusError) and exc.status_code in (400, 413, 422):
            text = f"{exc.message} {json.dumps(exc.body, default=str)}"
            if _TOO_LONG.search(text):
                err = OpenAIRequestError(
                    f"{err} The prompt plus the answer limit ({max_new_tokens} tokens) does not "
                    f"fit the model's context window: set llm.context_tokens (now "
                    f"{self.context_tokens}) comfortably below the model's context length (token "
                    f"counts here are estimates), so long transcripts are split into smaller "
                    f"parts, or lower llm.max_new_tokens."
                )
        if pieces:
            err = type(err)(f"{err} (the stream broke after {pieces} pieces)")
        return err

    # ------------------------------------------------------------------ response

    def _not_a_completion(self, response: object) -> OpenAIRequestError:
        shown = response if isinstance(response, str) else type(response).__name__
        return OpenAIRequestError(
            f"{self._ctx.api} did not answer {self.endpoint} with a chat completion "
            f"(got {str(shown)[:200]!r}). Does llm.openai.base_url point at an OpenAI-compatible "
            f"API (usually ending in /v1)?"
        )

    def _read_completion(self, response: Any) -> tuple[str, Any, str | None]:
        choices = getattr(response, "choices", None)
        if not choices:
            raise self._not_a_completion(response)
        choice = choices[0]
        message = choice.message
        text = message.content or ""
        refusal = getattr(message, "refusal", None)
        if not text and refusal:
            raise OpenAIRequestError(f"model {self.model!r} refused to answer: {refusal}")
        return text, getattr(response, "usage", None), choice.finish_reason

    def _read_stream(
        self, stream: Any, on_token: TokenSink, t0: float
    ) -> tuple[str, Any, str | None, int, float | None]:
        if not isinstance(stream, openai.Stream):
            raise self._not_a_completion(stream)
        parts: list[str] = []
        usage = None
        finish: str | None = None
        first_s: float | None = None
        chunks = 0
        try:
            with stream:
                for chunk in stream:
                    chunks += 1
                    if getattr(chunk, "usage", None):
                        usage = chunk.usage
                    for choice in getattr(chunk, "choices", None) or []:
                        if choice.index not in (0, None):
                            continue
                        piece = choice.delta.content if choice.delta else None
                        if piece:
                            if first_s is None:
                                first_s = time.perf_counter() - t0
                            parts.append(piece)
                            on_token(piece)
                        if choice.finish_reason:
                            finish = choice.finish_reason
        except openai.OpenAIError as exc:
            raise self._error(exc, pieces=len(parts)) from exc
        if not chunks:  # not an event stream at all (a web page, a proxy's error page)
            kind = stream.response.headers.get("content-type", "no Content-Type")
            raise self._not_a_completion(f"{kind} instead of an event stream")
        return "".join(parts), usage, finish, len(parts), first_s

    def _record(self, messages, text, usage, finish, pieces, first_s, seconds) -> None:
        prompt = getattr(usage, "prompt_tokens", None) if usage else None
        completion = getattr(usage, "completion_tokens", None) if usage else None
        estimated = prompt is None or completion is None
        if prompt is None:
            prompt = sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)
        if completion is None:  # a streamed piece is usually one token
            completion = pieces if pieces is not None else estimate_tokens(text)
        self.last_stats = {
            "prompt_tokens": int(prompt),
            "completion_tokens": int(completion),
            "new_tokens": int(completion),
            "usage_estimated": estimated,
            "seconds": seconds,
            "tokens_per_s": round(completion / seconds, 2) if seconds > 0 else 0.0,
            "first_token_s": first_s,
            "finish_reason": finish,
            "model": self.model,
        }

