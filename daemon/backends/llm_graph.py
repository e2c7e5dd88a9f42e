"""Token-by-token decoding with a static KV cache, the one-token step replayed as a CUDA graph.

Why: ``model.generate`` on one sequence spends most of each token launching kernels from
Python. Llama-3.2-3B in NF4 on an H100 decodes at 26-29 tok/s that way, while reading its
~2 GB of weights once per token would allow several hundred. transformers removes that
overhead itself only by compiling the forward (``cache_implementation="static"`` plus
``torch.compile``), and it refuses to for bitsandbytes 4-bit models (the bnb quantizer
reports ``is_compileable = False``, so generate() never auto-compiles them). A CUDA graph
needs no compiler: the step is captured once, with the weights, the static cache and the
small input buffers at fixed addresses, and each token is one replay.

What is captured: the model's forward for one token at a position read from a device
buffer, and (greedy) the argmax. The prompt is prefilled eagerly into the same static
cache. The cache is sized in buckets (``bucket`` tokens), so calls of similar length reuse
one cache and one graph; a longer call builds a bigger cache and captures again
(well under a second). On CPU, or when capture fails, the same static-cache loop runs
eagerly, which is what the CPU tests check against ``generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from daemon.logs import get_logger

DEFAULT_BUCKET = 2048
GQA_ATTENTION = "minutesd_sdpa_gqa"


def _sdpa_gqa_decode(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention of one new token over a masked static cache, as two batched matmuls.

    Two things make transformers' SDPA slow here. With the mask a static cache needs, it
    first copies K and V for every query head (``repeat_kv``: for Llama-3.2-3B, 24 query and
    8 KV heads, over a 14k-token cache, ~10 GB moved per token). And the fused attention
    kernels parallelise over (batch, head, query block): one query token gives 8-24 thread
    blocks on a 132-SM H100, each streaming its head's whole cache (measured: ~13 ms per
    token at 12k context, mostly attention). Here the group's query heads become rows of
    one matmul against their KV head ((b, 24, 1, d) -> (b, 8, 3, d)), so K and V are read
    once as stored, by kernels that split the cache length across the chip; the softmax is
    in float32, as in transformers' eager attention. Everything else (prefill, no mask,
    training) goes to transformers' SDPA.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, hq, q_len, d = query.shape
    hk = key.shape[1]
    if q_len != 1 or hq % hk or attention_mask is None or dropout:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    scale = scaling if scaling is not None else d**-0.5
    mask = attention_mask
    if mask.ndim == 4:
        mask = mask[:, :, :, : key.shape[-2]]
    q = query.reshape(b, hk, hq // hk, d)
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # (b, hk, g, L)
    bool_mask = mask.dtype == torch.bool
    scores = scores.masked_fill(~mask, float("-inf")) if bool_mask else scores + mask
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # (b, hk, g, d)
    return out.reshape(b, hq, 1, d).transpose(1, 2).contiguous(), None


def use_gqa_decode_attention(model: Any) -> str | None:
    """Switch ``model`` from SDPA to :func:`_sdpa_gqa_decode`; None if done, else why not."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        current = getattr(model.config, "_attn_implementation", None)
        if current == GQA_ATTENTION:
            return None
        if current != "sdpa":
            return f"attention implementation is {current!r}, not sdpa"
        AttentionInterface.register(GQA_ATTENTION, _sdpa_gqa_decode)
        AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)
        model.set_attn_implementation(GQA_ATTENTION)
        return None
    except Exception as exc:  # an older/newer transformers without these hooks: plain SDPA
        return f"{type(exc).__name__}: {exc}"


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


class StaticGraphDecoder:
    """Greedy or sampled decoding of one sequence; see the module docstring."""

    def __init__(
        self,
        model: Any,
        use_graph: bool = True,
        bucket: int = DEFAULT_BUCKET,
        max_positions: int | None = None,
    ):
        import torch

        self.torch = torch
        self.model = model
        self.device = next(model.parameters()).device
        self.use_graph = bool(use_graph) and self.device.type == "cuda"
        self.bucket = max(64, int(bucket))
        self.max_positions = max_positions
        self.gqa_note = use_gqa_decode_attention(model)  # None: grouped decode attention on
        self.cache: Any = None
        self.cache_len = 0
        self.graph: Any = None
        self.graph_error: str | None = None  # why capture failed, if it did
        self.captures = 0
        self._tok = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self._pos = torch.zeros((1,), dtype=torch.long, device=self.device)
        self._logits: Any = None

    # ------------------------------------------------------------------ cache and graph

    def _ensure_cache(self, need: int) -> None:
        from transformers import StaticCache

        size = _round_up(need, self.bucket)
        if self.max_positions:
            size = min(size, max(need, self.max_positions))
        if self.cache is not None and self.cache_len >= need and self.cache_len <= 2 * size:
            return
        self.graph = None  # the graph holds the old cache's addresses
        self.cache = None
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()
        self.cache = StaticCache(config=self.model.config, max_cache_len=size)
        self.cache_len = size

    def _forward_one(self) -> Any:
        out = self.model(
            input_ids=self._tok,
            past_key_values=self.cache,
            cache_position=self._pos,
            use_cache=True,
        )
        return out.logits[:, -1, :]

    def _write_positions(self) -> list[Any]:
        """The static layers' write counters (device tensors in transformers 5)."""
        return [
            layer.cumulative_length
            for layer in getattr(self.cache, "layers", [])
            if isinstance(getattr(layer, "cumulative_length", None), self.torch.Tensor)
        ]

    def _capture(self) -> None:
        torch = self.torch
        # Static layers advance a device-side write counter on every forward; the warm-up
        # and capture forwards below must not move it (their keys land in slots that the
        # real steps overwrite before anything attends to them).
        saved = [c.clone() for c in self._write_positions()]
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up outside the capture, as graphs need
                for _ in range(2):
                    self._forward_one()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._logits = self._forward_one()
        finally:
            torch.cuda.synchronize()
            for counter, value in zip(self._write_positions(), saved, strict=True):
                counter.copy_(value)
        self.graph = graph
        self.captures += 1

    def _step(self, token: Any, position: int) -> Any:
        """Logits (1, vocab) for ``token`` at ``position``; the KV cache is updated."""
        self._tok.copy_(token.view(1, 1))
        self._pos.fill_(position)
        if self.use_graph and self.graph is None and self.graph_error is None:
            try:
                self._capture()
            except Exception as exc:  # a host sync or unsupported op inside the step
                self.graph = None
                self.graph_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                get_logger().warning(
                    "CUDA graph capture failed: decoding eagerly with the static cache",
                    error=self.graph_error,
                )
                self.torch.cuda.synchronize()
                self._tok.copy_(token.view(1, 1))
                self._pos.fill_(position)
        if self.graph is not None:
            self.graph.replay()
            return self._logits
        return self._forward_one()

    # ------------------------------------------------------------------ decoding

    def generate(
        self,
        input_ids: Any,
        max_new_tokens: int,
        eos_token_ids: Sequence[int] = (),
        streamer: Any = None,
        should_stop: Callable[[], bool] | None = None,
        temperature: float = 0.0,
        min_new_tokens: int = 0,
        generator: Any = None,
    ) -> Any:
        """Prompt + new token ids, shape (1, n + new), like ``generate``'s output."""
        torch = self.torch
        if input_ids.shape[0] != 1:
            raise ValueError("StaticGraphDecoder decodes one sequence at a time")
        input_ids = input_ids.to(self.device)
        n = int(input_ids.shape[1])
        self._ensure_cache(n + max_new_tokens)
        if streamer is not None:
            streamer.put(input_ids.cpu())
        eos = set(int(e) for e in eos_token_ids)
        out: list[int] = []
        try:
            with torch.inference_mode():
                self.cache.reset()  # write counters back to 0 (a reused cache keeps them)
                logits = self.model(
                    input_ids=input_ids,
                    past_key_values=self.cache,
                    cache_position=torch.arange(n, device=self.device),
                    use_cache=True,
                    logits_to_keep=1,
                ).logits[:, -1, :]
                for i in range(max_new_tokens):
                    if len(out) < min_new_tokens and eos:
                        logits = logits.clone()
                        logits[:, list(eos)] = float("-inf")
                    if temperature > 0:
                        probs = torch.softmax(logits.float() / temperature, dim=-1)
                        token = torch.multinomial(probs, 1, generator=generator).view(1)
                    else:
                        token = logits.argmax(dim=-1)
                    tok = int(token.item())  # one host sync per token: eos, streaming
                    out.append(tok)
                    if streamer is not None:
                        streamer.put(torch.tensor([tok]))
                    if (tok in eos and len(out) >= min_new_tokens) or i == max_new_tokens - 1:
                        break
                    if should_stop is not None and should_stop():
                        break
                    logits = self._step(token, n + i)
        finally:
            if streamer is not None:
                streamer.end()
        new = torch.tensor([out], dtype=input_ids.dtype, device=self.device)
        return torch.cat([input_ids, new], dim=1)
