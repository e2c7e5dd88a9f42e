"""Batched long-form Whisper for GPUs: cut at silences, decode many windows at once, align words.

The transformers ASR pipeline (``asr.long_form: pipeline``) decodes overlapping 30 s windows
and runs Whisper's timestamp logits processor, a per-sequence Python loop, at every step; at
batch 64 on an H100 that kept whisper-medium.en near 85x real time. This path
(``asr.long_form: batched``) does what WhisperX and faster-whisper's batched pipeline do,
with Whisper's own word alignment (813x real time on an H200, README "Performance"):

1. **Windows cut at silences** (``silence_windows``): each window is at most 30 s and ends at
   the quietest moment of its last 10 s, so no word is cut in two and no audio is decoded
   twice (the pipeline's overlap decodes 1.5x the audio). Windows with no sound at all are
   skipped (Whisper hallucinates on silence).
2. **Greedy batched decoding**: log-mel on the model's device, one encoder pass per batch,
   then a plain loop over the decoder with its KV cache, Whisper's timestamp rules applied to
   the whole batch as tensor operations (``_TimestampRules``; the tokens are the ones
   ``generate`` picks); a window that starts repeating itself is stopped.
3. **Word times from the alignment heads**, as openai-whisper does it: one teacher-forced
   decoder pass over the decoded tokens, the cross-attention of the alignment heads
   (computed from hooked queries and keys, so the fast attention kernels stay on),
   normalised, median filtered, and aligned to the audio frames by dynamic time warping.

Greedy only: ``beam_size`` is for the pipeline path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from daemon.types import Word

SR = 16_000
WINDOW_S = 30.0
FRAMES_PER_S = 50  # Whisper's encoder: one output frame per 20 ms
_HOP = 160  # 10 ms energy frames
_SILENT_RMS = 10 ** (-60 / 20)  # a window whose loudest 10 ms is below -60 dBFS holds nothing
_MEDFILT = 7


# --------------------------------------------------------------------------- windows


def silence_windows(
    samples: np.ndarray,
    sr: int = SR,
    max_s: float = WINDOW_S,
    search_s: float = 10.0,
    smooth_s: float = 0.3,
) -> list[tuple[int, int]]:
    """(start, end) sample ranges of at most ``max_s`` that together cover ``samples``.

    Each cut is placed at the quietest ``smooth_s`` stretch of the last ``search_s`` seconds
    of a window, so cuts fall between words. Windows with no sound above -60 dBFS are left
    out.
    """
    n = len(samples)
    if n == 0:
        return []
    hop = max(1, sr * _HOP // SR)
    frames = n // hop + 1
    padded = np.zeros(frames * hop, dtype=np.float32)
    padded[:n] = samples
    rms = np.sqrt(np.mean(padded.reshape(frames, hop).astype(np.float64) ** 2, axis=1))
    k = max(1, int(smooth_s * sr / hop))
    smooth = np.convolve(rms, np.ones(k) / k, mode="same")
    max_len = int(max_s * sr)
    out: list[tuple[int, int]] = []
    start = 0
    while start < n:
        if n - start <= max_len:
            end = n
        else:
            lo = (start + max_len - int(search_s * sr)) // hop + 1
            hi = (start + max_len) // hop
            cut = lo + int(np.argmin(smooth[lo:hi])) if hi > lo else hi
            end = min(n, max(start + hop, cut * hop))
        if rms[start // hop : (end - 1) // hop + 1].max(initial=0.0) >= _SILENT_RMS:
            out.append((start, end))
        start = end
    return out


def speech_onset(chunk: np.ndarray, sr: int = SR) -> float:
    """Seconds to the first 10 ms of sound within 40 dB of the chunk's loudest (0 if none)."""
    hop = max(1, sr * _HOP // SR)
    n = len(chunk) // hop
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(chunk[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1))
    loud = np.flatnonzero(rms >= max(rms.max() * 0.01, _SILENT_RMS))
    return float(loud[0] * hop / sr) if len(loud) else 0.0


# --------------------------------------------------------------------------- words


_PREPEND = set("\"'“¿([{-$")  # a word of only these joins the word after it
_OPENING = set("“¿([{$")  # these start a word even with no space before them


def split_words(decode: Callable[[list[int]], str], tokens: Sequence[int]) -> list[list[int]]:
    """Token ids grouped into words: a word starts at a token beginning with a space, other
    punctuation sticks to the word before it and opening quotes, brackets and currency signs
    to the word after it; multi-byte characters split across tokens stay whole
    (openai-whisper's split_tokens_on_unicode + split_tokens_on_spaces + merge_punctuations)."""
    full = decode(list(tokens))
    pieces: list[tuple[str, list[int]]] = []
    cur: list[int] = []
    offset = 0
    for t in tokens:
        cur.append(int(t))
        text = decode(cur)
        bad = text.find("\ufffd")
        if bad < 0 or (offset + bad < len(full) and full[offset + bad] == "\ufffd"):
            pieces.append((text, cur))
            offset += len(text)
            cur = []
    if cur:
        pieces.append((decode(cur), cur))
    words: list[list[int]] = []
    texts: list[str] = []
    for text, ids in pieces:
        stripped = text.strip()
        if not words:
            join = False
        elif texts[-1].strip() and all(c in _PREPEND for c in texts[-1].strip()):
            join = True  # an opening quote or bracket goes with the word after it
        elif text.startswith(" "):
            join = False
        else:  # no space: part of the word before, unless it opens a new one ("$", "(")
            join = not (stripped and all(c in _OPENING for c in stripped))
        if join:
            words[-1].extend(ids)
            texts[-1] += text
        else:
            words.append(list(ids))
            texts.append(text)
    return words


def tidy_word_times(words: list[Word], onset: float) -> list[Word]:
    """Alignment by DTW stretches a window's first word back over any silence before it, to
    the window's start: the first word starts no earlier than the window's first sound."""
    if not words:
        return words
    out = [Word(w.start, w.end, w.text, w.probability) for w in words]
    if out[0].start < onset < out[0].end:
        out[0].start = onset
    return out


def median_filter(x: Any, width: int = _MEDFILT) -> Any:
    """Median over the last axis of a (..., frames) tensor, reflect-padded (openai-whisper)."""
    import torch.nn.functional as F

    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    shape = x.shape
    y = F.pad(x.reshape(-1, 1, shape[-1]), (pad, pad), mode="reflect")
    return y.unfold(-1, width, 1).median(-1).values.reshape(shape)


def word_times(
    weights: Any,
    n_text: int,
    word_tokens: list[list[int]],
    dtw: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> list[tuple[float, float]]:
    """(start, end) seconds of each word, from alignment-head weights (heads, rows, frames).

    ``weights`` has one row per position that predicts a text token or the end of text
    (``n_text + 1`` rows) and one column per encoder frame of real audio.
    """
    import torch

    if not word_tokens or weights.shape[-1] < 2:
        return []
    w = weights.float()
    std, mean = torch.std_mean(w, dim=-2, keepdim=True, correction=0)
    w = (w - mean) / std.clamp_min(1e-6)
    matrix = median_filter(w).mean(dim=0)[: n_text + 1]
    text_idx, time_idx = dtw(-matrix.double().cpu().numpy())
    if len(text_idx) == 0:
        return []
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] / FRAMES_PER_S
    bounds = np.pad(np.cumsum([len(t) for t in word_tokens]), (1, 0))
    bounds = np.minimum(bounds, len(jump_times) - 1)
    return [
        (float(jump_times[a]), float(jump_times[b]))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


# --------------------------------------------------------------------------- decoding


def _repeating(seq: list[int]) -> int | None:
    """Where a runaway repetition at the end of ``seq`` began (kept once), else None:
    an n-gram (n 2..12) four times in a row, or one token eight times."""
    n = len(seq)
    if n >= 8 and len(set(seq[-8:])) == 1:
        return n - 7
    for k in range(2, 13):
        if n < 4 * k:
            break
        tail = seq[-k:]
        if all(seq[n - (r + 1) * k : n - r * k] == tail for r in range(1, 4)):
            return n - 3 * k
    return None


class _TimestampRules:
    """openai-whisper's ApplyTimestampRules, for a whole batch at once on the device: start
    with a timestamp (at most ``max_initial_timestamp``), timestamps in pairs and never
    decreasing, and a timestamp whenever their summed probability beats every text token.
    Decoding with timestamps keeps Whisper in the mode it was mostly trained in (Whisper base
    without them wrote "!" for most sentence ends on the eval meetings)."""

    def __init__(self, bw: BatchedWhisper, batch: int, device: Any):
        import torch

        self.eot = bw.eot
        self.ts0 = bw.no_ts + 1  # <|0.00|>
        self.max_initial = bw.max_initial_timestamp
        self.cols = torch.arange(bw.model.config.vocab_size, device=device)
        # Before the first sampled token both count as timestamps (openai-whisper: "len(seq) < 2").
        self.last_ts = torch.ones(batch, dtype=torch.bool, device=device)
        self.pen_ts = torch.ones(batch, dtype=torch.bool, device=device)
        self.seen = torch.zeros(batch, dtype=torch.bool, device=device)
        self.last_val = torch.zeros(batch, dtype=torch.long, device=device)

    def apply(self, logits: Any, step: int) -> None:
        import torch

        cols = self.cols[: logits.shape[1]]
        is_ts = cols >= self.ts0
        if step == 0:
            logits[:, : self.ts0] = -torch.inf
            if self.max_initial is not None:
                logits[:, self.ts0 + self.max_initial + 1 :] = -torch.inf
            return
        pair_done = (self.last_ts & self.pen_ts)[:, None] & is_ts
        pair_open = (self.last_ts & ~self.pen_ts)[:, None] & (cols < self.eot)
        floor = torch.where(self.last_ts & ~self.pen_ts, self.last_val, self.last_val + 1)
        backwards = self.seen[:, None] & is_ts & (cols[None, :] < floor[:, None])
        logits.masked_fill_(pair_done | pair_open | backwards, -torch.inf)
        logprobs = torch.log_softmax(logits, dim=-1)
        ts_mass = torch.logsumexp(logprobs[:, self.ts0 :], dim=-1)
        force = ts_mass > logprobs[:, : self.ts0].max(dim=-1).values
        logits[:, : self.ts0].masked_fill_(force[:, None], -torch.inf)

    def update(self, nxt: Any) -> None:
        is_ts = nxt >= self.ts0
        self.pen_ts = self.last_ts
        self.last_ts = is_ts
        self.seen |= is_ts
        self.last_val = self.last_val.where(~is_ts, nxt)


class BatchedWhisper:
    """Greedy batched decoding and word alignment over a loaded HF Whisper model."""

    def __init__(self, model: Any, tokenizer: Any, feature_extractor: Any, dtw: Callable):
        import torch

        self.model = model
        self.tok = tokenizer
        self.fe = feature_extractor
        self.dtw = dtw
        gen = model.generation_config
        self.eot = int(gen.eos_token_id if not isinstance(gen.eos_token_id, list)
                       else gen.eos_token_id[0])
        self.sot = int(gen.decoder_start_token_id)
        self.no_ts = int(gen.no_timestamps_token_id)
        self.lang_to_id = dict(getattr(gen, "lang_to_id", None) or {})
        self.task_to_id = dict(getattr(gen, "task_to_id", None) or {})
        self.max_positions = int(model.config.max_target_positions)
        suppress = list(getattr(gen, "suppress_tokens", None) or [])
        self.suppress = torch.tensor(sorted(set(suppress)), dtype=torch.long)
        self.begin_suppress = torch.tensor(
            sorted(set(getattr(gen, "begin_suppress_tokens", None) or [self.eot])),
            dtype=torch.long,
        )
        heads = getattr(gen, "alignment_heads", None) or []
        self.alignment_heads = [(int(layer), int(head)) for layer, head in heads]
        self.max_initial_timestamp = getattr(gen, "max_initial_timestamp_index", None)
        self.timestamps = True  # decode with timestamp tokens (see _TimestampRules)
        self.min_new_tokens = 0  # the bench forces lengths with random weights
        self.max_new_tokens = self.max_positions // 2

    # ------------------------------------------------------------------ pieces

    def prefix(
        self, language: str | None, prompt_ids: list[int] | None, timestamps: bool = False
    ) -> list[int]:
        """The decoder's forced start; with <|notimestamps|> unless ``timestamps``."""
        ids = list(prompt_ids or [])
        ids.append(self.sot)
        if language and self.lang_to_id:
            ids.append(self.lang_to_id[f"<|{language}|>"])
            if "transcribe" in self.task_to_id:
                ids.append(self.task_to_id["transcribe"])
        if not timestamps:
            ids.append(self.no_ts)
        return ids

    def features(self, chunks: list[np.ndarray]) -> Any:
        import torch

        device = self.model.device
        kwargs: dict[str, Any] = {"sampling_rate": SR, "return_tensors": "pt"}
        if device.type == "cuda":
            kwargs["device"] = str(device)  # torch STFT on the GPU
        feats = self.fe(chunks, **kwargs).input_features
        return feats.to(device=device, dtype=self.model.dtype, non_blocking=True) if isinstance(
            feats, torch.Tensor
        ) else torch.as_tensor(feats, device=device, dtype=self.model.dtype)

    def decode(self, enc: Any, prefix: list[int]) -> list[list[int]]:
        """Greedy tokens of each window, end of text not included: text only after a
        <|notimestamps|> prefix, else text and timestamp tokens under Whisper's rules."""
        import torch
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        b = enc.shape[0]
        device = enc.device
        ids = torch.tensor([prefix] * b, device=device)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        limit = min(self.max_new_tokens, self.max_positions - len(prefix))
        suppress = self.suppress.to(device)
        begin = self.begin_suppress.to(device)
        rules = None if prefix[-1] == self.no_ts else _TimestampRules(self, b, device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        stopped = [False] * b
        out = torch.full((b, limit), self.eot, dtype=torch.long, device=device)
        n = 0
        for step in range(limit):
            logits = self.model(
                encoder_outputs=(enc,),
                decoder_input_ids=ids,
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1].float()
            logits[:, self.eot + 1 : self.no_ts + 1] = -torch.inf  # special tokens
            if rules is None:
                logits[:, self.no_ts + 1 :] = -torch.inf  # and timestamps
            if len(suppress):
                logits[:, suppress] = -torch.inf
            if step == 0:
                logits[:, begin] = -torch.inf
            if step < self.min_new_tokens:
                logits[:, self.eot] = -torch.inf
            if rules is not None:
                rules.apply(logits, step)
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.eot), nxt)
            if rules is not None:
                rules.update(nxt)
            out[:, step] = nxt
            done |= nxt == self.eot
            ids = nxt[:, None]
            n = step + 1
            if n % 16 == 0:  # one host sync per 16 steps: stop when all ended or looping
                if bool(done.all()):
                    break
                rows = out[:, :n].tolist()
                for i, row in enumerate(rows):
                    if not stopped[i] and self.eot not in row and _repeating(row) is not None:
                        stopped[i] = True
                        done[i] = True
        result = []
        for row in out[:, :n].tolist():
            toks = row[: row.index(self.eot)] if self.eot in row else row
            text = [t for t in toks if t < self.eot]
            cut = _repeating(text)
            result.append(text[:cut] if cut is not None else text)
        return result

    def align(
        self,
        enc: Any,
        prefix: list[int],
        texts: list[list[int]],
        words: list[list[list[int]]],
        frames: list[int],
    ) -> list[list[tuple[float, float]]]:
        """Word times (seconds from each window's start) of each window's token groups."""
        import torch

        if not self.alignment_heads or not any(texts):
            return [[] for _ in texts]
        decoder = self.model.get_decoder()
        layers = sorted({layer for layer, _ in self.alignment_heads})
        captured: dict[int, Any] = {}
        hooks = []
        for layer in layers:
            attn = decoder.layers[layer].encoder_attn

            def grab(module, args, kwargs, layer=layer):
                captured[layer] = args[0] if args else kwargs["hidden_states"]

            hooks.append(attn.register_forward_pre_hook(grab, with_kwargs=True))
        p = len(prefix)
        width = p + max(len(t) for t in texts) + 1
        rows = [prefix + t + [self.eot] * (width - p - len(t)) for t in texts]
        ids = torch.tensor(rows, device=enc.device)
        try:
            decoder(input_ids=ids, encoder_hidden_states=enc, use_cache=False)
        finally:
            for h in hooks:
                h.remove()
        per_head = []
        for layer, head in self.alignment_heads:
            attn = decoder.layers[layer].encoder_attn
            hd = attn.head_dim
            sl = slice(head * hd, (head + 1) * hd)
            q = torch.nn.functional.linear(
                captured[layer], attn.q_proj.weight[sl], attn.q_proj.bias[sl]
                if attn.q_proj.bias is not None else None
            )
            k = torch.nn.functional.linear(enc, attn.k_proj.weight[sl])
            scores = torch.einsum("btd,bsd->bts", q.float(), k.float()) * hd**-0.5
            per_head.append(scores.softmax(-1))
        weights = torch.stack(per_head, dim=1)  # (batch, heads, rows, frames)
        out = []
        for i, t in enumerate(texts):
            if not t:
                out.append([])
                continue
            w = weights[i, :, p - 1 : p + len(t), : max(2, frames[i])]
            out.append(word_times(w, len(t), words[i], self.dtw))
        return out

    # ------------------------------------------------------------------ one batch

    def transcribe_batch(
        self, chunks: list[np.ndarray], language: str | None, prompt_ids: list[int] | None
    ) -> list[list[Word]]:
        """Words (times from each chunk's start) of up to one batch of <= 30 s chunks."""
        import torch

        prefix = self.prefix(language, prompt_ids)  # alignment runs without timestamps
        with torch.inference_mode():
            feats = self.features(chunks)
            enc = self.model.get_encoder()(feats).last_hidden_state
            texts = self.decode(enc, self.prefix(language, prompt_ids, self.timestamps))
            groups = [split_words(self.tok.decode, t) if t else [] for t in texts]
            frames = [int(np.ceil(len(c) / (SR / FRAMES_PER_S))) for c in chunks]
            times = self.align(enc, prefix, texts, groups, frames)
        out: list[list[Word]] = []
        for chunk, words_ids, tm in zip(chunks, groups, times, strict=True):
            words = []
            for ids, (a, b) in zip(words_ids, tm, strict=False):  # no times: no words
                text = self.tok.decode(ids)
                if text.strip():
                    words.append(Word(a, max(a, b), text if text.startswith(" ") else " " + text))
            out.append(tidy_word_times(words, speech_onset(chunk)))
        return out
