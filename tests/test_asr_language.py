"""asr.language and a recording's language reach faster-whisper's decoder (the embedded,
multilingual Whisper base): left to detect, English speech is English; asked for another
language, Whisper decodes in it (its tokens start with that language's token)."""

from __future__ import annotations

import pytest

from daemon.audio import decode_audio
from daemon.settings import ASRSettings, Settings
from daemon.types import Audio

pytest.importorskip("faster_whisper")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from daemon.backends.asr_faster_whisper import FasterWhisperTranscriber

    cache = Settings().resolved_cache_dir()
    tr = FasterWhisperTranscriber(ASRSettings(model="embedded:base", device="cpu",
                                              beam_size=1), cache)
    assert tr.multilingual
    return tr


def test_language_reaches_the_decoder(base, dialogue):
    mp3, _truth = dialogue
    audio = decode_audio(mp3)
    clip = Audio(audio.samples[: 8 * 16000])
    sent: list[dict] = []
    real = base.model.transcribe

    def spy(samples, **kw):
        sent.append(kw)
        return real(samples, **kw)

    base.model.transcribe = spy
    try:
        assert base.transcribe(clip).language == "en"  # detected
        assert sent[-1]["language"] is None
        out = base.transcribe(clip, language="de", prompt="Teilnehmer: Jörg.")
        assert out.language == "de" and sent[-1]["language"] == "de"
        assert sent[-1]["initial_prompt"] == "Teilnehmer: Jörg."
        base.cfg.language = "fr"  # asr.language, with no language for the recording
        assert base.transcribe(clip).language == "fr" and sent[-1]["language"] == "fr"
    finally:
        base.cfg.language = "auto"
        base.model.transcribe = real
