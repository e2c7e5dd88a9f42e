"""Writers for the output contract (transcript.json, minutes.json; see README) and the readable
.md files beside them, each written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from daemon.render import minutes_markdown, transcript_markdown
from daemon.types import Minutes, SpeakerTranscript


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_transcript(t: SpeakerTranscript, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "transcript.json", out_dir / "transcript.md"
    atomic_write(json_path, json.dumps(t.to_json(), indent=2, ensure_ascii=False) + "\n")
    atomic_write(md_path, transcript_markdown(t))
    return json_path, md_path


def write_minutes(m: Minutes, out_dir: Path, time_hhmm: str | None = None) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "minutes.json", out_dir / "minutes.md"
    data = m.to_json()
    if time_hhmm:
        data["time"] = time_hhmm
    atomic_write(json_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    atomic_write(md_path, minutes_markdown(m, time_hhmm))
    return json_path, md_path
