"""Minutes and transcripts for people: markdown (the archive's .md files) and the HTML that
the Google Docs are converted from. One module, so both say the same thing.

Pure functions over :mod:`daemon.types`; writing files is :mod:`daemon.output`'s job. Every
text that came from outside (the file name, titles, names, what the models wrote) goes
through :func:`daemon.text.printable`: no control character, ANSI escape or bidi override
reaches a reader raw.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

from daemon.text import printable as p
from daemon.types import ActionItem, Minutes, QualityFlag, Quote, SpeakerTranscript


def e(text: str) -> str:
    """HTML-escaped and printable."""
    return escape(p(text))


def hms(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def anchor(seconds: float) -> str:
    """The id of the transcript line at ``seconds``: "t-00-12-41" (one per second)."""
    return "t-" + hms(seconds).replace(":", "-")


def time_link(seconds: float, title: str = "") -> str:
    """Markdown link from the minutes to the transcript line: [00:12:41](transcript.md#t-…)."""
    t = f' "{title}"' if title else ""
    return f"[{hms(seconds)}](transcript.md#{anchor(seconds)}{t})"


def display_name(transcript: SpeakerTranscript, speaker_id: str) -> str:
    for s in transcript.speakers:
        if s.id == speaker_id and s.name:
            return p(s.name)
    return p(speaker_id)


def transcript_markdown(t: SpeakerTranscript, title: str | None = None) -> str:
    lines = [f"# {p(title or 'Transcript')}", ""]
    if t.source:
        lines.append(f"Source: `{p(Path(t.source).name)}`  ")
    lines.append(f"Duration: {hms(t.duration_s)}  ")
    if t.speakers:
        who = ", ".join(
            f"{display_name(t, s.id)} ({hms(s.talk_time_s)})" for s in t.speakers
        )
        lines.append(f"Speakers: {who}")
    lines.append("")
    anchored: set[str] = set()
    for seg in t.segments:
        a = anchor(seg.start)  # the minutes' time links land here: the first line of a second
        mark = "" if a in anchored else f'<a id="{a}"></a>'
        anchored.add(a)
        lines.append(f"{mark}[{hms(seg.start)}] {display_name(t, seg.speaker)}: {p(seg.text)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def transcript_html(t: SpeakerTranscript, title: str | None = None,
                    links: list[tuple[str, str]] | None = None) -> str:
    """The speaker-labelled transcript as HTML for a Google Doc (as transcript.md, plus
    ``links``: (label, url), e.g. the minutes Doc)."""
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



# How the minutes say where their date came from (Minutes.date_source).
DATE_FROM = {
    "meeting facts": "from the meeting's facts file",
    "settings": "as given",
    "recording tags": "from the recording's tags",
    "file name": "from the file name",
    "file time": "from the file's modification time",
}


def date_line(m: Minutes, time_hhmm: str | None = None) -> str:
    """"2026-11-30 14:00 (from the recording's tags)"."""
    when = m.date + (f" {time_hhmm}" if time_hhmm else "")
    source = DATE_FROM.get(m.date_source)
    return f"{when} ({source})" if source else when


def minutes_markdown(m: Minutes, time_hhmm: str | None = None) -> str:
    when = date_line(m, time_hhmm)
    out = [f"# {p(m.title)}", "", f"**Date:** {p(when)}  ",
           f"**Duration:** {hms(m.duration_s)}  "]
    out.append(f"**Attendees:** {p(', '.join(m.attendees)) if m.attendees else 'not identified'}")
    talk = [s for s in m.speakers if s.talk_time_s > 0]
    if talk:
        total = sum(s.talk_time_s for s in talk) or 1.0
        parts = []
        for i, s in enumerate(m.speakers):
            if s.talk_time_s > 0:
                parts.append(f"{s.name or f'Speaker {i + 1}'} {100 * s.talk_time_s / total:.0f}%")
        out.append(f"  \n**Talk time:** {p(', '.join(parts))}")
    out += ["", "## Summary", "", p(m.summary) if m.summary else "_No summary._", ""]
    out += ["## Discussion points", ""]
    if m.topics:
        for tp in m.topics:
            if tp.title:
                out += [f"### {p(tp.title)}", ""]
            out += [f"- {p(x)}" for x in tp.points]
            out.append("")
    else:
        out += [f"- {p(x)}" for x in m.discussion_points] or ["_None recorded._"]
        out.append("")
    out += ["## Decisions", ""]
    out += [f"- {p(d)}" + _md_evidence(_decision_quotes(m, i))
            for i, d in enumerate(m.decisions)] or ["_None recorded._"]
    out += ["", "## Action items", ""]
    out += [f"- [ ] {p(a.owner)} — {p(a.task)}" + (f" ({p(a.due)})" if a.due else "")
            + _md_evidence(a.evidence, a) for a in m.action_items] or ["_None recorded._"]
    if m.flags:
        out += ["", "## Check these", ""]
        out += [f"- {p(f.message)}" + _md_flag_time(f) for f in m.flags]
    return "\n".join(out).rstrip() + "\n"


# What a weak item's line says the reader should check (by ActionItem.how).
WEAK_CHECK = {
    "took it on": "check the owner said they would",
    "accepted": "the owner was asked; check they accepted",
    "handed over": "check who took it over",
    "model": "only the model says who owns it",
    "": "its evidence checks out only in part",
}


def weak_note(a: ActionItem) -> str:
    return WEAK_CHECK.get(a.how, WEAK_CHECK[""])


def _decision_quotes(m: Minutes, i: int) -> list[Quote]:
    return m.decision_evidence[i] if i < len(m.decision_evidence) else []


def _md_evidence(quotes: list[Quote], item: ActionItem | None = None) -> str:
    """" [00:12:41](transcript.md#t-00-12-41)" for the first quote; a weak item's check."""
    out = ""
    if quotes:
        q = quotes[0]
        text = " ".join(q.text.split())
        said = f"{q.name or q.speaker}: " + (text if len(text) <= 80 else text[:79] + "…")
        out = " " + time_link(q.start, p(said).replace('"', "'").replace("\\", "/"))  # on hover
    if item is not None and item.weak:
        out += f" — *check: {p(weak_note(item))}*"
    return out


def _md_flag_time(f: QualityFlag) -> str:
    return "" if f.start is None else " " + time_link(f.start)


def minutes_html(m: Minutes, time_hhmm: str | None = None,
                 links: list[tuple[str, str]] | None = None) -> str:
    """The same minutes as :func:`minutes_markdown`, as HTML that Google Docs converts into
    headings, bullet lists and ☐ check boxes. ``links``: (label, url) shown under the title
    (the transcript Doc, the recording)."""
    when = date_line(m, time_hhmm)
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
           f"<title>{e(m.title)}</title></head><body>", f"<h1>{e(m.title)}</h1>",
           f"<p><b>Date:</b> {e(when)}<br><b>Duration:</b> {hms(m.duration_s)}<br>"
           f"<b>Attendees:</b> {e(', '.join(m.attendees)) if m.attendees else 'not identified'}"]
    talk = [s for s in m.speakers if s.talk_time_s > 0]
    if talk:
        total = sum(s.talk_time_s for s in talk) or 1.0
        parts = [f"{s.name or f'Speaker {i + 1}'} {100 * s.talk_time_s / total:.0f}%"
                 for i, s in enumerate(m.speakers) if s.talk_time_s > 0]
        out.append(f"<br><b>Talk time:</b> {e(', '.join(parts))}")
    out.append("</p>")
    if links:
        out.append("<p>" + "<br>".join(f'<b>{e(label)}:</b> <a href="{e(url)}">{e(url)}</a>'
                                       for label, url in links) + "</p>")

    def items(xs: list[str]) -> list[str]:
        if not xs:
            return ["<p><i>None recorded.</i></p>"]
        return ["<ul>", *(f"<li>{e(x)}</li>" for x in xs), "</ul>"]

    out += ["<h2>Summary</h2>", f"<p>{e(m.summary) if m.summary else '<i>No summary.</i>'}</p>"]
    out += ["<h2>Discussion points</h2>"]
    if m.topics:
        for tp in m.topics:
            if tp.title:
                out.append(f"<h3>{e(tp.title)}</h3>")
            if tp.points:
                out += items(tp.points)
    else:
        out += items(m.discussion_points)
    out += ["<h2>Decisions</h2>"]
    if m.decisions:
        out.append("<ul>")
        out += [f"<li>{e(d)}{_html_evidence(_decision_quotes(m, i))}</li>"
                for i, d in enumerate(m.decisions)]
        out.append("</ul>")
    else:
        out.append("<p><i>None recorded.</i></p>")
    out += ["<h2>Action items</h2>"]
    if m.action_items:
        out.append('<ul style="list-style-type:none">')
        out += [f"<li>☐ <b>{e(a.owner)}</b> — {e(a.task)}" + (f" ({e(a.due)})" if a.due else "")
                + _html_evidence(a.evidence, a) + "</li>" for a in m.action_items]
        out.append("</ul>")
    else:
        out.append("<p><i>None recorded.</i></p>")
    if m.flags:
        out += ["<h2>Check these</h2>", "<ul>"]
        out += [f"<li>{_code(e(f.message))}"
                + ("" if f.start is None else f" [{hms(f.start)}]") + "</li>" for f in m.flags]
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_evidence(quotes: list[Quote], item: ActionItem | None = None) -> str:
    """" [00:12:41]" as plain text (a Doc cannot link into another file); a weak item's
    check."""
    out = f" [{hms(quotes[0].start)}]" if quotes else ""
    if item is not None and item.weak:
        out += f" — <i>check: {e(weak_note(item))}</i>"
    return out


def _code(escaped: str) -> str:
    """`command` spans of an escaped text as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
