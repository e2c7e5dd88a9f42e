"""One Protocol per stage: anything that has these methods can take a stage's place.

Backends (``daemon/backends/``, ``integrations/``) implement them and depend only on
:mod:`daemon.types` and this module; :mod:`daemon.registry` is the one place that maps the
names in settings to implementations; :mod:`daemon.pipeline` runs them in order. The
archive's Protocols live beside its record types in :mod:`daemon.archive.base`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from daemon.types import (
    Audio,
    ChatMessage,
    Diarization,
    HearResult,
    MeetingFacts,
    MeetingInfo,
    Minutes,
    Progress,
    SpeakerTranscript,
    TokenSink,
    Transcript,
)


@runtime_checkable
class Transcriber(Protocol):
    name: str

    def transcribe(self, audio: Audio, progress: Progress | None = None,
                   language: str | None = None, prompt: str | None = None) -> Transcript:
        """``language`` (an ISO code) and ``prompt`` (spelling hints) for this recording;
        None: ``asr.language`` and ``asr.initial_prompt``."""
        ...


@runtime_checkable
class Diarizer(Protocol):
    name: str

    def diarize(self, audio: Audio, progress: Progress | None = None,
                num_speakers: int | None = None,
                max_speakers: int | None = None) -> Diarization:
        """``num_speakers`` (exact) or ``max_speakers`` (at most) for this recording, from
        its facts; None: the ``diarization`` settings' bounds."""
        ...


@runtime_checkable
class VoiceEmbedder(Protocol):
    """A speaker-embedding model (the diarizer's own). ``model_id`` names the model and its
    recipe: embeddings of different ids are never compared."""

    model_id: str

    def embed(self, audio: Audio, spans: list[tuple[float, float]]) -> np.ndarray | None:
        """One L2-normalised vector for the speech in ``spans`` (seconds; 16 kHz mono audio):
        the mean of its windows' embeddings. None when the spans hold too little audio."""
        ...


@runtime_checkable
class ChatModel(Protocol):
    """An instruction-tuned LLM behind a chat interface (local transformers, or an
    OpenAI-compatible server). Deterministic unless settings ask for sampling."""

    name: str
    context_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def chat(
        self,
        messages: list[ChatMessage],
        max_new_tokens: int,
        json_output: bool = False,
        on_token: TokenSink | None = None,
    ) -> str: ...


@runtime_checkable
class MinutesWriter(Protocol):
    name: str

    def write(self, transcript: SpeakerTranscript, facts: MeetingFacts) -> Minutes: ...


class Processing(Protocol):
    """What the daemon needs of the whole pipeline (:class:`daemon.pipeline.Processor`): its
    two checkpointed halves. Tests and the stand-ins of :mod:`daemon.testing` provide it too."""

    def hear(self, path: str | Path, progress: Progress | None = None,
             info: MeetingInfo | None = None) -> HearResult: ...

    def understand(self, transcript: SpeakerTranscript, path: str | Path,
                   info: MeetingInfo | None = None,
                   name: str | None = None) -> tuple[Minutes, MeetingFacts]: ...

    def remember_voices(self, key: str, heard: HearResult) -> None:
        """Keep the meeting's speaker voices (voice profiles on) under its key, so a name a
        person sets later can be learned."""
        ...
