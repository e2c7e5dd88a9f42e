"""The minutes writer: minutes from a speaker-labelled transcript, through any ChatModel.

* Facts the pipeline knows (date, duration, attendees, talk time) are filled in here, never
  asked of the model.
* The model answers in JSON, validated with pydantic. Invalid answers are repaired (code
  fences, trailing commas, prose around the object) or retried with the error shown to the
  model; after ``max_attempts`` the stage fails: half-parsed minutes are never passed on.
* Owners of action items must be attendees or "unassigned" (:mod:`daemon.minutes.owners`).
* A transcript over the model's context budget is summarised in chunks (map) whose notes are
  merged (reduce), so a 2-hour meeting works on a 4k-context model.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from daemon.errors import PermanentError
from daemon.minutes.actions import PHRASE_SYSTEM, PhrasedTask, phrase_prompt, task_cues
from daemon.minutes.cues import commitment_hints, decision_hints, transcript_lines
from daemon.minutes.jsonfix import extract_json
from daemon.minutes.owners import resolve_owner
from daemon.minutes.prompts import (
    MERGE_PROMPT,
    SCHEMA_HINT,
    SCHEMA_HINT_NO_ACTIONS,
    SYSTEM_PROMPT,
    SYSTEM_PROMPT_NO_ACTIONS,
)
from daemon.minutes.schema import UNASSIGNED, Draft, DraftAction
from daemon.names import display_label
from daemon.protocols import ChatModel
from daemon.render import hms
from daemon.types import ActionItem, ChatMessage, MeetingFacts, Minutes, SpeakerTranscript


class MinutesError(PermanentError):
    """The model did not produce valid minutes after every attempt (the same transcript
    gives the same answer again, so the recording is not retried)."""


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
        """One focused question to the model per task cue (see daemon.minutes.actions)."""
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
