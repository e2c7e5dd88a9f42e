"""The understand half: minutes from a speaker-labelled transcript, through any ChatModel.

* Facts the pipeline knows (date, duration, attendees, talk time) are filled in here, never
  asked of the model.
* The model answers in JSON, validated with pydantic. Invalid answers are repaired (code
  fences, trailing commas, prose around the object) or retried with the error shown to the
  model; after ``max_attempts`` the stage fails: half-parsed minutes are never passed on.
* Owners of action items must be attendees (matched by full name, first name or surname,
  or a "Speaker N" label with a known name) or "unassigned": never an invented person.
* A transcript over the model's context budget is summarised in chunks (map) whose notes are
  merged (reduce), so a 2-hour meeting works on a 4k-context model.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field, ValidationError, field_validator

from daemon.names import display_label
from daemon.output import hms
from daemon.pipeline import (
    ActionItem,
    ChatMessage,
    ChatModel,
    MeetingFacts,
    Minutes,
    SpeakerTranscript,
)

UNASSIGNED = "unassigned"


class MinutesError(Exception):
    """The model did not produce valid minutes after every attempt."""


# --------------------------------------------------------------------------- schema


class DraftAction(BaseModel):
    owner: str = UNASSIGNED
    task: str
    due: str | None = None

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, v):
        return UNASSIGNED if v in (None, "", "null", "None") else str(v)

    @field_validator("due", mode="before")
    @classmethod
    def _due(cls, v):
        if v in (None, "", "null", "None", "none", "N/A", "n/a", "unspecified", "not specified"):
            return None
        return str(v)


class Draft(BaseModel):
    """What the model is asked for (the pipeline adds date, duration and attendees)."""

    title: str = ""
    summary: str = ""
    discussion_points: list[str] = Field(default_factory=list)
    decisions: list[str] = Field(default_factory=list)
    action_items: list[DraftAction] = Field(default_factory=list)

    @field_validator("discussion_points", "decisions", mode="before")
    @classmethod
    def _strings(cls, v):
        if v is None:
            return []
        if isinstance(v, str):
            return [v] if v.strip() else []
        out = []
        for x in v:
            if isinstance(x, dict):  # {"decision": "..."} and the like
                x = next((str(y) for y in x.values() if isinstance(y, str)), "")
            if str(x).strip().lower().rstrip(".") in ("none", "n/a", "null", "nothing"):
                continue  # "- None" is not a discussion point
            if str(x).strip() and str(x).strip() not in out:  # a looping model repeats
                out.append(str(x).strip())
        return out


SCHEMA_HINT = """{
  "title": "short title of the meeting",
  "summary": "3-5 sentences: purpose, main outcomes",
  "discussion_points": ["one line per topic discussed"],
  "decisions": ["one line per decision the group actually made"],
  "action_items": [{"owner": "attendee name", "task": "what they will do", "due": "when, or null"}]
}"""

SCHEMA_HINT_NO_ACTIONS = """{
  "title": "short title of the meeting",
  "summary": "3-5 sentences: purpose, main outcomes",
  "decisions": ["each decision the group actually made, as one full sentence with its details (what, when)"],
  "discussion_points": ["one line per topic discussed, each topic once, at most 8"]
}"""

SYSTEM_PROMPT = """You are a meticulous meeting secretary. From a meeting transcript you write \
accurate, concise minutes.
Rules:
- Reply with one JSON object only, no prose and no code fences, in exactly this shape:
{schema}
- Action items: only concrete tasks someone agreed or was asked to do. The owner is the \
person who will do the task (the one who says "I will ..." or is asked "X, can you ..."), \
written exactly as one of these names: {names}. If nobody owns it, use "unassigned". Never \
invent people. Put the deadline they mention in "due" (e.g. "Friday"), else null. One item \
per task; do not repeat a task.
- Decisions: only what the group decided, not proposals or open questions.
- Use only facts from the transcript."""

SYSTEM_PROMPT_NO_ACTIONS = """You are a meticulous meeting secretary. From a meeting transcript \
you write accurate, concise minutes (action items are written separately).
Rules:
- Reply with one JSON object only, no prose and no code fences, in exactly this shape:
{schema}
- Refer to people by these names: {names}.
- Decisions: only what the group decided, not proposals or open questions.
- Use only facts from the transcript."""

MERGE_PROMPT = """You are a meticulous meeting secretary. Below are notes taken on consecutive \
parts of one meeting, as JSON. Merge them into minutes of the whole meeting, as one JSON \
object in exactly this shape:
{schema}
Keep every distinct action item and decision, remove duplicates, keep owners as written \
(one of: {names}, or "unassigned"). Reply with the JSON object only."""


# --------------------------------------------------------------------------- JSON repair


def extract_json(text: str) -> dict:
    """The first JSON object in ``text``, tolerating code fences, prose and trailing commas."""
    t = text.strip()
    t = re.sub(r"^```(?:json)?\s*|\s*```$", "", t, flags=re.S)
    start = t.find("{")
    if start < 0:
        raise ValueError("no JSON object in the answer")
    depth, in_str, esc, end = 0, False, False, -1
    for i in range(start, len(t)):
        c = t[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        repaired = close_truncated(t[start:])
        if repaired is None:
            raise ValueError("the JSON object is not closed (answer cut off?)")
        return repaired
    body = t[start:end + 1]
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        repaired = re.sub(r",\s*([}\]])", r"\1", body)  # trailing commas
        return json.loads(repaired)


def _inside_item(stack: list[str]) -> bool:
    """Inside an object that is an element of a list (a half-written action item)."""
    return len(stack) >= 3 and stack[-1] == "}" and "]" in stack[:-1]


def close_truncated(body: str, tries: int = 200) -> dict | None:
    """A cut-off JSON object (token limit, or stopped because the model was looping) made
    whole: cut back to the end of the last complete value and close what is open. The
    fields before the cut are kept; a half-written value is dropped, never guessed."""
    stack: list[str] = []
    in_str = esc = False
    cuts: list[tuple[int, str]] = []  # (position after a complete value, closers needed)
    for i, c in enumerate(body):
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
                if not _inside_item(stack):  # loads() rejects a cut after a lone key
                    cuts.append((i + 1, "".join(reversed(stack))))
            continue
        if c == '"':
            in_str = True
        elif c in "[{":
            stack.append("]" if c == "[" else "}")
        elif c in "]}":
            if stack:
                stack.pop()
            if not _inside_item(stack):
                cuts.append((i + 1, "".join(reversed(stack))))
    for pos, closers in reversed(cuts[-tries:]):
        try:
            obj = json.loads(re.sub(r",\s*$", "", body[:pos]) + closers)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


# --------------------------------------------------------------------------- owners


def match_person(text: str | None, people: list[str]) -> str | None:
    """The attendee ``text`` refers to (full name, first name or surname), else None."""
    if not text:
        return None
    t = text.strip().lower()
    t = re.sub(r"'s$", "", t)
    for p in people:
        if t == p.lower():
            return p
    tokens = set(re.findall(r"[a-z][a-z'-]+", t))
    hits = [p for p in people if tokens & {w.lower() for w in p.split() if len(w) > 1}]
    if not hits:  # a short form: "Sam" for Samuel, "Dave" is not matched (no prefix)
        hits = [p for p in people
                if any(w.lower().startswith(tok) for w in p.split() for tok in tokens
                       if len(tok) >= 3)]
    return hits[0] if len(hits) == 1 else None


def resolve_owner(owner: str, attendees: list[str], labels: dict[str, str]) -> str:
    """An attendee name, or "unassigned". ``labels`` maps "Speaker 2"/"SPEAKER_01" → name."""
    o = (owner or "").strip()
    if not o or o.lower() in (UNASSIGNED, "none", "nobody", "everyone", "all", "team"):
        return UNASSIGNED
    for label, name in labels.items():
        if o.lower() == label.lower():
            return name
    return match_person(o, attendees) or UNASSIGNED


# --------------------------------------------------------------------------- the writer


@dataclass
class WriterStats:
    calls: int = 0
    attempts: int = 0
    chunks: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


_SELF_COMMIT = re.compile(r"\bI(?:'ll| will| am going to|'m going to)\s+(.{6,})", re.I)
_ASKED = re.compile(
    r"^(?:\w+,\s+)?([A-Z][a-z]+),\s+(?:(?:can|could|would|will) you|please|I want|I need|you)\b\s*(.{6,})")


def commitment_hints(t: SpeakerTranscript) -> list[str]:
    """Sentences where someone takes on a task ("I'll ...") or is asked to ("David, can you
    ..."), with the person: cues for the model, which still decides what is a task."""
    from daemon.names import _sentences

    hints: list[str] = []
    for seg in t.segments:
        who = display_label(t, seg.speaker)
        for sent in _sentences(seg.text):
            if m := _ASKED.match(sent):
                hints.append(f"{m.group(1)} (asked by {who}): {sent}")
            elif _SELF_COMMIT.search(sent) and not sent.rstrip().endswith("?"):
                hints.append(f"{who}: {sent}")
    return hints


_DECIDED = re.compile(
    r"(?<!are )(?<!did )(?<!have )(?<!should )(?<!do )"  # "are we deciding?" is a question
    r"\b(?:we(?:'re| are)? decid(?:e|ed|ing)|(?:it's|it is|that's) decided|we(?:'ve| have) "
    r"decided|we(?:'ll| will) go with|the decision is|we agree(?:d)? (?:to|that|on))\b", re.I)


def decision_hints(t: SpeakerTranscript, limit: int = 20) -> list[str]:
    """Sentences where the group states a decision ("so we are deciding today that ..."):
    cues for the model, which writes the decisions."""
    from daemon.names import _sentences

    out: list[str] = []
    for seg in t.segments:
        for sent in _sentences(seg.text):
            if _DECIDED.search(sent):  # declarative forms only ("are we deciding?" is not)
                out.append(f"{display_label(t, seg.speaker)}: {sent}")
    return out[:limit]


def transcript_lines(t: SpeakerTranscript) -> list[str]:
    return [f"[{hms(s.start)}] {display_label(t, s.speaker)}: {s.text}" for s in t.segments]


class LLMMinutesWriter:
    """MinutesWriter over any ChatModel (local transformers, or an OpenAI-compatible server)."""

    name = "llm"

    def __init__(
        self,
        chat: ChatModel,
        max_new_tokens: int = 1024,
        max_attempts: int = 3,
        on_token: Callable[[str], None] | None = None,
        log=None,
        action_items: str = "cues",
    ):
        if action_items not in ("cues", "model"):
            raise ValueError(f"action_items must be 'cues' or 'model', not {action_items!r}")
        self.action_items = action_items
        self.chat = chat
        self.max_new_tokens = max_new_tokens
        self.max_attempts = max_attempts
        self.on_token = on_token
        self.log = log
        self.stats = WriterStats()

    # -- prompts

    def _names_clause(self, attendees: list[str], t: SpeakerTranscript) -> str:
        unnamed = [display_label(t, s.id) for s in t.speakers if not s.name]
        names = list(attendees) + [u for u in unnamed if u not in attendees]
        return ", ".join(f'"{n}"' for n in names) if names else '"unassigned"'

    def _ask(self, system: str, user: str, schema: type[BaseModel] = Draft,
             max_new_tokens: int | None = None):
        messages = [ChatMessage("system", system), ChatMessage("user", user)]
        last_err = ""
        for attempt in range(1, self.max_attempts + 1):
            self.stats.attempts += 1
            t0 = time.perf_counter()
            answer = self.chat.chat(messages, max_new_tokens or self.max_new_tokens,
                                    json_output=True, on_token=self.on_token)
            self.stats.seconds += time.perf_counter() - t0
            self.stats.calls += 1
            st = getattr(self.chat, "last_stats", None) or {}
            self.stats.prompt_tokens += int(st.get("prompt_tokens", 0) or 0)
            self.stats.new_tokens += int(st.get("new_tokens", st.get("completion_tokens", 0)) or 0)
            try:
                return schema.model_validate(extract_json(answer))
            except (ValueError, ValidationError) as exc:
                last_err = str(exc).splitlines()[0]
                if self.log:
                    self.log.warning("invalid minutes JSON, retrying", attempt=attempt,
                                     error=last_err)
                messages = messages[:2] + [
                    ChatMessage("assistant", answer[:4000]),
                    ChatMessage("user", f"That was not valid: {last_err}. Reply again with only "
                                        "the JSON object, in the shape given."),
                ]
        raise MinutesError(f"no valid minutes JSON after {self.max_attempts} attempts: {last_err}")

    def _budget(self) -> int:
        """Tokens of transcript that fit one call, beside the instructions and the answer."""
        overhead = self.chat.count_tokens(SYSTEM_PROMPT + SCHEMA_HINT) + 200
        return max(256, self.chat.context_tokens - self.max_new_tokens - overhead)

    def _chunks(self, lines: list[str], budget: int) -> list[list[str]]:
        chunks: list[list[str]] = [[]]
        used = 0
        for ln in lines:
            n = self.chat.count_tokens(ln) + 1
            if chunks[-1] and used + n > budget:
                chunks.append([])
                used = 0
            chunks[-1].append(ln)
            used += n
        return chunks

    def draft(self, t: SpeakerTranscript, facts: MeetingFacts) -> Draft:
        names = self._names_clause(facts.attendees, t)
        cues = self.action_items == "cues"
        system = (SYSTEM_PROMPT_NO_ACTIONS.format(schema=SCHEMA_HINT_NO_ACTIONS, names=names)
                  if cues else SYSTEM_PROMPT.format(schema=SCHEMA_HINT, names=names))
        header = (f"Meeting on {facts.date}, {hms(facts.duration_s)} long. "
                  f"Attendees: {', '.join(facts.attendees) or 'unknown'}.\n\nTranscript:\n")
        lines = transcript_lines(t)
        hints = [] if cues else commitment_hints(t)
        footer = ""
        if hints:
            footer = ("\n\nSentences where someone takes on or is given a task (each is usually "
                      "one action item, owned by the person named first; merge two sentences "
                      "about the same task):\n" + "\n".join(f"- {h}" for h in hints))
        if decided := decision_hints(t):
            footer += ("\n\nSentences where the group states a decision (write each one that "
                       "was decided under \"decisions\"; tasks people will do are not "
                       "decisions):\n" + "\n".join(f"- {h}" for h in decided))
        chunks = self._chunks(lines, self._budget() - self.chat.count_tokens(footer))
        self.stats.chunks = len(chunks)
        if len(chunks) == 1:
            return self._ask(system, header + "\n".join(lines) + footer)
        # Map: notes per part. Reduce: merge the notes (recursively if they are long too).
        parts = []
        for i, chunk in enumerate(chunks, 1):
            if self.log:
                self.log.info("minutes: summarising part", part=i, parts=len(chunks))
            part_header = header.replace("Transcript:", f"Transcript, part {i} of {len(chunks)}:")
            parts.append(self._ask(system, part_header + "\n".join(chunk)))
        return self._reduce(parts, names, facts)

    def _reduce(self, parts: list[Draft], names: str, facts: MeetingFacts) -> Draft:
        merge_system = MERGE_PROMPT.format(schema=SCHEMA_HINT, names=names)
        docs = [json.dumps(p.model_dump(), ensure_ascii=False) for p in parts]
        budget = self._budget()
        if sum(self.chat.count_tokens(d) for d in docs) > budget and len(parts) > 1:
            half = len(parts) // 2
            return self._reduce([self._reduce(parts[:half], names, facts),
                                 self._reduce(parts[half:], names, facts)], names, facts)
        merged = self._ask(merge_system, "\n\n".join(
            f"Notes on part {i}:\n{d}" for i, d in enumerate(docs, 1)))
        # The merge must not lose action items the parts found: add back any it dropped.
        seen = {a.task.lower() for a in merged.action_items}
        for p in parts:
            for a in p.action_items:
                if a.task.lower() not in seen:
                    merged.action_items.append(a)
                    seen.add(a.task.lower())
        return merged

    def cue_actions(self, t: SpeakerTranscript) -> list[DraftAction]:
        """One focused question to the model per task cue (see daemon.actions)."""
        from daemon.actions import PHRASE_SYSTEM, PhrasedTask, phrase_prompt, task_cues

        out: list[DraftAction] = []
        cues = task_cues(t)
        for i, cue in enumerate(cues, 1):
            if self.log:
                self.log.info("minutes: action item", item=i, items=len(cues),
                              owner=display_label(t, cue.owner))
            try:
                got = self._ask(PHRASE_SYSTEM, phrase_prompt(t, cue), PhrasedTask,
                                max_new_tokens=min(160, self.max_new_tokens))
            except MinutesError:
                # The cue stands on its own words rather than being lost.
                got = PhrasedTask(task=cue.commitments[-1].sentence)
            if got.task:
                out.append(DraftAction(owner=display_label(t, cue.owner), task=got.task,
                                       due=got.due))
        return out

    def write(self, t: SpeakerTranscript, facts: MeetingFacts) -> Minutes:
        draft = self.draft(t, facts)
        if self.action_items == "cues":
            draft.action_items = self.cue_actions(t)
        labels = {display_label(t, s.id): s.name for s in t.speakers if s.name}
        labels.update({s.id: s.name for s in t.speakers if s.name})
        items: list[ActionItem] = []
        seen: set[tuple[str, str]] = set()
        for a in draft.action_items:
            task = a.task.strip()
            if not task:
                continue
            owner = resolve_owner(a.owner, facts.attendees, labels)
            if owner == UNASSIGNED:
                # "Speaker 2" without a known name stays as the label, so readers can tell
                unnamed = {display_label(t, s.id) for s in t.speakers if not s.name}
                if a.owner.strip() in unnamed:
                    owner = a.owner.strip()
            key = (owner.lower(), re.sub(r"\W+", " ", task.lower()).strip())
            if key in seen:
                continue
            seen.add(key)
            items.append(ActionItem(owner=owner, task=task, due=a.due))
        return Minutes(
            title=draft.title.strip() or "Meeting",
            date=facts.date,
            attendees=list(facts.attendees),
            summary=draft.summary.strip(),
            discussion_points=draft.discussion_points,
            decisions=draft.decisions,
            action_items=items,
            duration_s=facts.duration_s,
            speakers=list(facts.speakers),
        )


# --------------------------------------------------------------------------- rendering


def minutes_markdown(m: Minutes, time_hhmm: str | None = None) -> str:
    when = m.date + (f" {time_hhmm}" if time_hhmm else "")
    out = [f"# {m.title}", "", f"**Date:** {when}  ", f"**Duration:** {hms(m.duration_s)}  "]
    out.append(f"**Attendees:** {', '.join(m.attendees) if m.attendees else 'not identified'}")
    talk = [s for s in m.speakers if s.talk_time_s > 0]
    if talk:
        total = sum(s.talk_time_s for s in talk) or 1.0
        parts = []
        for i, s in enumerate(m.speakers):
            if s.talk_time_s > 0:
                parts.append(f"{s.name or f'Speaker {i + 1}'} {100 * s.talk_time_s / total:.0f}%")
        out.append(f"  \n**Talk time:** {', '.join(parts)}")
    out += ["", "## Summary", "", m.summary or "_No summary._", ""]
    out += ["## Discussion points", ""]
    out += [f"- {p}" for p in m.discussion_points] or ["_None recorded._"]
    out += ["", "## Decisions", ""]
    out += [f"- {d}" for d in m.decisions] or ["_None recorded._"]
    out += ["", "## Action items", ""]
    out += [f"- [ ] {a.owner} — {a.task}" + (f" ({a.due})" if a.due else "")
            for a in m.action_items] or ["_None recorded._"]
    return "\n".join(out).rstrip() + "\n"


def minutes_html(m: Minutes, time_hhmm: str | None = None,
                 links: list[tuple[str, str]] | None = None) -> str:
    """The same minutes as :func:`minutes_markdown`, as HTML that Google Docs converts into
    headings, bullet lists and ☐ check boxes. ``links``: (label, url) shown under the title
    (the transcript Doc, the recording)."""
    from html import escape as e

    when = m.date + (f" {time_hhmm}" if time_hhmm else "")
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
    out += ["<h2>Discussion points</h2>", *items(m.discussion_points)]
    out += ["<h2>Decisions</h2>", *items(m.decisions)]
    out += ["<h2>Action items</h2>"]
    if m.action_items:
        out.append('<ul style="list-style-type:none">')
        out += [f"<li>☐ <b>{e(a.owner)}</b> — {e(a.task)}" + (f" ({e(a.due)})" if a.due else "")
                + "</li>" for a in m.action_items]
        out.append("</ul>")
    else:
        out.append("<p><i>None recorded.</i></p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
