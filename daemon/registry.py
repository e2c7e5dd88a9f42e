"""The one place that picks implementations: backend names in settings → the classes.

Each registry maps a name (the value of a setting such as ``asr.backend``) to a factory,
written as ``"module:attribute"`` so that choosing a backend imports only that backend (and
it imports its heavy libraries -- torch, ctranslate2, pyannote, googleapiclient -- in its
constructor). Every factory of one registry takes the same arguments:

=================  ===========================  ===================================
registry           setting                      factory arguments
=================  ===========================  ===================================
``TRANSCRIBERS``   ``asr.backend``              ``(asr settings, cache_dir)``
``DIARIZERS``      ``diarization.backend``      ``(diarization settings, cache_dir)``
``CHAT_MODELS``    ``llm.backend``              ``(llm settings, cache_dir)``
``ARCHIVES``       ``archive.backend``          ``(settings)``
``MIRRORS``        ``archive.<name>.enabled``   ``(settings)``
``PIPELINES``      (the daemon's)               ``(settings, log)``
=================  ===========================  ===================================

:func:`build_hearer` and :func:`standard_processor` put the pipeline together from them
(the composition root: :mod:`daemon.pipeline` itself is handed its stages).

A plug-in or a test registers another implementation with :meth:`Registry.register`
(``daemon.testing`` registers its stand-ins this way); nothing else in minutesd names a
backend class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from daemon.errors import ConfigError
from daemon.minutes.writer import LLMMinutesWriter
from daemon.pipeline import Hearer, Processor
from daemon.protocols import (
    ChatModel,
    Diarizer,
    MinutesWriter,
    Processing,
    Transcriber,
    VoiceEmbedder,
)
from daemon.settings import Settings
from daemon.types import TokenSink
from daemon.voices.learner import ProfileLearner
from daemon.voices.recognizer import VoiceProfiles

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, setting: str, entries: dict[str, str]):
        self.setting = setting
        self._entries: dict[str, str | Callable[..., T]] = dict(entries)

    def register(self, name: str, factory: str | Callable[..., T]) -> None:
        """Add ``name`` (or put another implementation behind it, for this process)."""
        self._entries[name] = factory

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> dict[str, str | Callable[..., T]]:
        return dict(self._entries)

    def factory(self, name: str) -> Callable[..., T]:
        try:
            entry = self._entries[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self._entries)
            raise ConfigError(f"unknown {self.setting} {name!r}; known: {known}") from None
        if isinstance(entry, str):
            module, _, attrs = entry.partition(":")
            obj: Any = importlib.import_module(module)
            for attr in attrs.split("."):
                obj = getattr(obj, attr)
            return obj
        return entry

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.factory(name)(*args, **kwargs)


TRANSCRIBERS: Registry[Transcriber] = Registry("asr.backend", {
    "faster-whisper": "daemon.backends.asr_faster_whisper:FasterWhisperTranscriber",
    "transformers": "daemon.backends.asr_transformers:TransformersTranscriber",
    "openai": "integrations.openai_asr:OpenAITranscriber",
})

DIARIZERS: Registry[Diarizer] = Registry("diarization.backend", {
    "senko": "daemon.backends.diar_senko:SenkoDiarizer",
    "pyannote": "daemon.backends.diar_pyannote:PyannoteDiarizer",
    "none": "daemon.backends.diar_none:NoDiarizer",
})

CHAT_MODELS: Registry[ChatModel] = Registry("llm.backend", {
    "transformers": "daemon.backends.llm_transformers:TransformersChat",
    "openai": "integrations.openai_llm:OpenAIChat",
})

ARCHIVES: Registry[Any] = Registry("archive.backend", {
    "local": "daemon.archive.local:LocalArchive.from_settings",
})

MIRRORS: Registry[Any] = Registry("archive mirror", {
    "gdrive": "integrations.gdrive:DriveArchive",
})

def build_transcriber(cfg, cache_dir: Path) -> Transcriber:
    return TRANSCRIBERS.build(cfg.backend, cfg, cache_dir)


def build_diarizer(cfg, cache_dir: Path) -> Diarizer:
    return DIARIZERS.build(cfg.backend, cfg, cache_dir)


def build_chat(cfg, cache_dir: Path) -> ChatModel:
    return CHAT_MODELS.build(cfg.backend, cfg, cache_dir)


def build_archive(settings) -> Any:
    return ARCHIVES.build(settings.archive.backend, settings)


def mirror_names(settings) -> list[str]:
    """The mirrors switched on in settings (Google Drive when ``archive.drive.enabled``).
    None by default: nothing leaves the machine unless configured."""
    return ["gdrive"] if settings.archive.drive.enabled else []


def build_mirrors(settings) -> list[Any]:
    return [MIRRORS.build(name, settings) for name in mirror_names(settings)]


def voice_embedder(diarizer: Diarizer) -> VoiceEmbedder | None:
    """The voice embedder that goes with a diarizer: its own speaker-embedding model (senko's
    CAM++, the pyannote pipeline's); None for a diarizer without one (``none``)."""
    return diarizer if isinstance(diarizer, VoiceEmbedder) else None


def build_voice_profiles(settings: Settings, diarizer: Diarizer) -> VoiceProfiles | None:
    """Voice profiles as settings describe them; None when ``speakers.voice_profiles`` is
    false (nothing is computed or stored) or the diarizer has no embedding model."""
    embedder = voice_embedder(diarizer)
    if not settings.speakers.voice_profiles or embedder is None:
        return None
    return VoiceProfiles(settings.speakers,
                         settings.speakers.resolved_profiles(settings.daemon), embedder)


def build_hearer(settings: Settings, voices: bool = False) -> Hearer:
    """The hear half; with ``voices`` (the naming pipeline) also each speaker's voice."""
    cache = settings.resolved_cache_dir()
    diarizer = build_diarizer(settings.diarization, cache)
    profiles = build_voice_profiles(settings, diarizer) if voices else None
    return Hearer(settings, build_transcriber(settings.asr, cache), diarizer, profiles)


def build_writer(settings: Settings, on_token: TokenSink | None = None,
                 log=None) -> MinutesWriter:
    chat = build_chat(settings.llm, settings.resolved_cache_dir())
    return LLMMinutesWriter(chat, settings.llm.max_new_tokens, settings.minutes.max_attempts,
                            on_token=on_token, log=log,
                            action_items=settings.minutes.action_items)


def standard_processor(settings: Settings, log=None,
                       on_token: TokenSink | None = None) -> Processor:
    """The whole pipeline as settings describe it. The roster (a recording's attendees, else
    ``minutes.roster``) goes to Whisper as hints per recording (:class:`Hearer`)."""
    return Processor(settings, build_hearer(settings, voices=True),
                     build_writer(settings, on_token, log))


PIPELINES: Registry[Processing] = Registry("pipeline", {})
PIPELINES.register("standard", standard_processor)


def build_processor(settings: Settings, log=None,
                    on_token: TokenSink | None = None) -> Processing:
    """The daemon's pipeline: the standard one, unless something registered another.
    ``on_token`` gets the LLM's text as it is written (the review page's live view)."""
    if on_token is None:
        return PIPELINES.build("standard", settings, log=log)
    return PIPELINES.build("standard", settings, log=log, on_token=on_token)


def build_voice_learner(settings: Settings) -> ProfileLearner | None:
    """What learns voices from names people set (None: voice profiles are off)."""
    if not settings.speakers.voice_profiles:
        return None
    return ProfileLearner(settings.speakers.resolved_profiles(settings.daemon))
