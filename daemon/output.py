"""Writers for the output contract (transcript.json, see README) and readable transcript.md."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from daemon.pipeline import Minutes, SpeakerTranscript


def hms(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


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


def display_name(transcript: SpeakerTranscript, speaker_id: str) -> str:
    for s in transcript.speakers:
        if s.id == speaker_id and s.name:
            return s.name
    return speaker_id


def transcript_markdown(t: SpeakerTranscript, title: str | None = None) -> str:
    lines = [f"# {title or 'Transcript'}", ""]
    if t.source:
        lines.append(f"Source: `{Path(t.source).name}`  ")
    lines.append(f"Duration: {hms(t.duration_s)}  ")
    if t.speakers:
        who = ", ".join(
            f"{display_name(t, s.id)} ({hms(s.talk_time_s)})" for s in t.speakers
        )
        lines.append(f"Speakers: {who}")
    lines.append("")
    for seg in t.segments:
        lines.append(f"[{hms(seg.start)}] {display_name(t, seg.speaker)}: {seg.text}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def transcript_html(t: SpeakerTranscript, title: str | None = None,
                    links: list[tuple[str, str]] | None = None) -> str:
    """The speaker-labelled transcript as HTML for a Google Doc (as transcript.md, plus
    ``links``: (label, url), e.g. the minutes Doc)."""
    from html import escape as e

    head = title or "Transcript"
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
           f"<title>{e(head)}</title></head><body>", f"<h1>{e(head)}</h1>", "<p>"]
    if t.source:
        out.append(f"<b>Source:</b> {e(Path(t.source).name)}<br>")
    out.append(f"<b>Duration:</b> {hms(t.duration_s)}")
    if t.speakers:
        who = ", ".join(f"{display_name(t, s.id)} ({hms(s.talk_time_s)})" for s in t.speakers)
        out.append(f"<br><b>Speakers:</b> {e(who)}")
    out.append("</p>")
    if links:
        out.append("<p>" + "<br>".join(f'<b>{e(label)}:</b> <a href="{e(url)}">{e(url)}</a>'
                                       for label, url in links) + "</p>")
    for seg in t.segments:
        out.append(f"<p>[{hms(seg.start)}] <b>{e(display_name(t, seg.speaker))}:</b> "
                   f"{e(seg.text)}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_transcript(t: SpeakerTranscript, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "transcript.json", out_dir / "transcript.md"
    atomic_write(json_path, json.dumps(t.to_json(), indent=2, ensure_ascii=False) + "\n")
    atomic_write(md_path, transcript_markdown(t))
    return json_path, md_path


def write_minutes(m: Minutes, out_dir: Path, time_hhmm: str | None = None) -> tuple[Path, Path]:
    from daemon.minutes import minutes_markdown

    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "minutes.json", out_dir / "minutes.md"
    data = m.to_json()
    if time_hhmm:
        data["time"] = time_hhmm
    atomic_write(json_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    atomic_write(md_path, minutes_markdown(m, time_hhmm))
    return json_path, md_path
