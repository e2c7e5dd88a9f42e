"""The minutes writer: minutes from a speaker-labelled transcript, through any ChatModel.

* Facts the pipeline knows (date, duration, attendees, talk time) are filled in here, never
  asked of the model.
* Action items: found broadly (the model reading the transcript in parts, and the English
  cue patterns), judged one at a time, and checked against the transcript: each carries its
  evidence, its owner is someone who took it on (:mod:`daemon.minutes.commitments`).
* Decisions: the draft's and the cue patterns' places, each judged on its excerpt and worded
  from it, carry the sentences they were decided in; one the transcript does not support is
  dropped and said so in the quality flags (:mod:`daemon.minutes.decisions`).
* The model answers in JSON, validated with pydantic. Invalid answers are repaired (code
  fences, trailing commas, prose around the object) or retried with the error shown to the
  model; after ``max_attempts`` the stage fails: half-parsed minutes are never passed on.
* A transcript over the model's context budget is summarised in chunks (map) whose notes are
  merged (reduce), so a 2-hour meeting works on a 4k-context model; action items are looked
  for in every chunk.
* The minutes end with quality flags: what a reader should check (:mod:`daemon.minutes.quality`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from daemon.errors import PermanentError
from daemon.minutes.actions import firm, own_words, task_cues, unhedged
from daemon.minutes.commitments import (
    FIND_SYSTEM,
    JUDGE_SYSTEM,
    RETRY_UNSUPPORTED,
    Candidate,
    Judged,
    ProposedList,
    evidence_text,
    find_prompt,
    follow_conversation,
    judge_prompt,
    merge_candidates,
    numbered_lines,
    resolve,
    supported,
)
from daemon.minutes.cues import decision_hints, decision_turns
from daemon.minutes.decisions import SAME_PLACE, carried_motion, decide_prompt, same_decision
from daemon.minutes.decisions import candidates as decision_candidates
from daemon.minutes.decisions import resolve as resolve_decision
from daemon.minutes.evidence import overlap
from daemon.minutes.jsonfix import extract_json
from daemon.minutes.owners import resolve_owner
from daemon.minutes.prompts import (
    DECIDE_SYSTEM,
    MERGE_PROMPT,
    SCHEMA_HINT_NO_ACTIONS,
    SCHEMA_HINT_PLAIN,
    SYSTEM_PROMPT_NO_ACTIONS,
)
from daemon.minutes.quality import quality_flags
from daemon.minutes.schema import UNASSIGNED, Decided, Draft, DraftDecision, DraftTopic
from daemon.names import display_label
from daemon.protocols import ChatModel
from daemon.render import hms
from daemon.types import (
    ActionItem,
    ChatMessage,
    MeetingFacts,
    Minutes,
    Quote,
    SpeakerTranscript,
    Topic,
)


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
    repaired: int = 0  # answers that were not valid JSON as given and were repaired
    retried: int = 0  # answers rejected and asked again
    candidates: int = 0  # places where someone may have taken on a task

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


# Share of a proposed task's words a line must say for the task to be put on that line when the
# model gave a line number the transcript part does not have.
RELOCATE = 0.5


class LLMMinutesWriter:
    """MinutesWriter over any ChatModel (local transformers, or an OpenAI-compatible server).

    ``action_items``: ``checked`` (default) finds candidates with the model and the English
    cue patterns; ``model`` with the model only (any language); ``cues`` with the patterns
    only (English; fewest model calls). Every candidate is then judged and checked the same
    way, so each item carries its evidence.
    """

    name = "llm"

    def __init__(
        self,
        chat: ChatModel,
        max_new_tokens: int = 1024,
        max_attempts: int = 3,
        on_token: Callable[[str], None] | None = None,
        log=None,
        action_items: str = "checked",
    ):
        if action_items not in ACTION_SOURCES:
            raise ValueError(f"action_items must be one of {', '.join(ACTION_SOURCES)}, "
                             f"not {action_items!r}")
        self.action_items = action_items
        self.chat = chat
        self.max_new_tokens = max_new_tokens
        self.max_attempts = max_attempts
        self.on_token = on_token
        self.log = log
        self.stats = WriterStats()
        self.repairs: list[str] = []  # said in the quality flags of the minutes being written

    # -- asking

    def _names_clause(self, attendees: list[str], t: SpeakerTranscript) -> str:
        unnamed = [display_label(t, s.id) for s in t.speakers if not s.name]
        names = list(attendees) + [u for u in unnamed if u not in attendees]
        return ", ".join(f'"{n}"' for n in names) if names else '"unassigned"'

    def _ask(self, system: str, user: str, schema: type[BaseModel] = Draft,
             max_new_tokens: int | None = None, what: str = "the minutes"):
        messages = [ChatMessage("system", system), ChatMessage("user", user)]
        last_err = ""
        looped_before = getattr(self.chat, "looped", 0)
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
                got = schema.model_validate(extract_json(answer))
            except (ValueError, ValidationError) as exc:
                last_err = str(exc).splitlines()[0]
                self.stats.retried += 1
                if self.log:
                    self.log.warning("invalid minutes JSON, retrying", attempt=attempt,
                                     error=last_err)
                messages = messages[:2] + [
                    ChatMessage("assistant", answer[:4000]),
                    ChatMessage("user", f"That was not valid: {last_err}. Reply again with only "
                                        "the JSON object, in the shape given."),
                ]
                continue
            if getattr(self.chat, "looped", 0) > looped_before:
                self.repairs.append(f"the model repeated itself writing {what}; its answer "
                                    "was cut off there and closed after the last whole value")
            elif not _valid_as_given(answer):
                self.stats.repaired += 1
            if attempt > 1:
                self.repairs.append(f"the model's first answer for {what} was not valid "
                                    f"JSON; it was asked again ({attempt} attempts)")
            return got
        raise MinutesError(f"no valid minutes JSON after {self.max_attempts} attempts: {last_err}")

    def _budget(self, system: str) -> int:
        """Tokens of transcript that fit one call, beside the instructions and the answer."""
        overhead = self.chat.count_tokens(system) + 200
        return max(256, self.chat.context_tokens - self.max_new_tokens - overhead)

    def _chunks(self, t: SpeakerTranscript, budget: int) -> list[tuple[int, int]]:
        """Consecutive (lo, hi) ranges of segments whose numbered lines fit ``budget``."""
        lines = numbered_lines(t)
        out: list[tuple[int, int]] = []
        lo, used = 0, 0
        for i, ln in enumerate(lines):
            n = self.chat.count_tokens(ln) + 1
            if i > lo and used + n > budget:
                out.append((lo, i))
                lo, used = i, 0
            used += n
        out.append((lo, len(lines)))
        return out

    # -- summary, topics, decisions

    def draft(self, t: SpeakerTranscript, facts: MeetingFacts) -> Draft:
        names = self._names_clause(facts.attendees, t)
        system = SYSTEM_PROMPT_NO_ACTIONS.format(schema=SCHEMA_HINT_NO_ACTIONS, names=names)
        header = (f"Meeting on {facts.date}, {hms(facts.duration_s)} long. "
                  f"Attendees: {', '.join(facts.attendees) or 'unknown'}.\n\nTranscript:\n")
        footer = ""
        if decided := decision_hints(t):
            footer += ("\n\nSentences where the group states a decision (write each one that "
                       "was decided under \"decisions\"; tasks people will do are not "
                       "decisions):\n" + "\n".join(f"- {h}" for h in decided))
        chunks = self._chunks(t, self._budget(system) - self.chat.count_tokens(header + footer))
        self.stats.chunks = len(chunks)
        if len(chunks) == 1:
            text = header + "\n".join(numbered_lines(t)) + footer
            try:
                return self._ask(system, text)
            except MinutesError as exc:
                return self._plain_draft(text, names, exc)
        # Map: notes per part. Reduce: merge the notes (recursively if they are long too).
        parts = []
        for i, (lo, hi) in enumerate(chunks, 1):
            if self.log:
                self.log.info("minutes: summarising part", part=i, parts=len(chunks))
            part_header = header.replace("Transcript:", f"Transcript, part {i} of {len(chunks)}:")
            parts.append(self._ask(system, part_header + "\n".join(numbered_lines(t, lo, hi)),
                                   what=f"part {i} of the minutes"))
        return self._reduce(parts, names, system)

    def _plain_draft(self, text: str, names: str, exc: MinutesError) -> Draft:
        """When the full draft never comes back as valid JSON: ask for the title and summary
        alone; failing that too, no summary. The action items and the rest still come (they
        are asked separately) and the minutes say what happened, rather than the whole
        recording failing for the want of a summary."""
        system = SYSTEM_PROMPT_NO_ACTIONS.format(schema=SCHEMA_HINT_PLAIN, names=names)
        try:
            got = self._ask(system, text, what="the summary")
            self.repairs.append("the model's minutes draft was not valid JSON after "
                                f"{self.max_attempts} attempts ({exc}); the title and summary "
                                "were asked for alone, so there are no topics, and decisions "
                                "come from the cue patterns only")
            return got
        except MinutesError as again:
            self.repairs.append(f"the model gave no valid summary ({again}): the minutes "
                                "have no summary or topics, and decisions come from the cue "
                                "patterns only; check the transcript")
            return Draft()

    def _reduce(self, parts: list[Draft], names: str, system: str) -> Draft:
        merge_system = MERGE_PROMPT.format(schema=SCHEMA_HINT_NO_ACTIONS, names=names)
        docs = [json.dumps(p.model_dump(exclude={"discussion_points"}),
                           ensure_ascii=False) for p in parts]
        if sum(self.chat.count_tokens(d) for d in docs) > self._budget(system) and len(parts) > 1:
            half = len(parts) // 2
            return self._reduce([self._reduce(parts[:half], names, system),
                                 self._reduce(parts[half:], names, system)], names, system)
        merged = self._ask(merge_system, "\n\n".join(
            f"Notes on part {i}:\n{d}" for i, d in enumerate(docs, 1)), what="the merged minutes")
        # A merge cut short (small models loop on long lists) loses the topics: the parts'
        # topics stand in, one per title, in meeting order.
        if not merged.topics:
            by_title: dict[str, list[str]] = {}
            for p in parts:
                for tp in p.topics:
                    points = by_title.setdefault(tp.title.strip() or "Other", [])
                    points += [x for x in tp.points if x not in points]
            merged.topics = [DraftTopic(title=k, points=v[:6]) for k, v in by_title.items()][:8]
            if merged.topics:
                self.repairs.append("the merged minutes came back without topics; the topics "
                                    "of each part are listed instead")
        # The merge must not lose decisions the parts found: add back any it dropped.
        seen = {d.line for d in merged.decisions if d.line is not None}
        for p in parts:
            for d in p.decisions:
                if d.line is not None and d.line not in seen and not any(
                        overlap(d.text, m.text) >= 0.6 for m in merged.decisions):
                    merged.decisions.append(d)
                    seen.add(d.line)
        return merged

    def decisions(self, t: SpeakerTranscript, draft: list[DraftDecision],
                  taken: set[int] | frozenset[int] = frozenset()
                  ) -> tuple[list[str], list[list[Quote]]]:
        """The decisions the transcript supports, each with the sentences it was decided in
        (:mod:`daemon.minutes.decisions`): the draft's and the cue patterns' places, each
        judged on its excerpt; a draft decision no line supports is dropped, and said so.
        ``taken``: the lines action items rest on (a task taken on there is not a decision,
        unless the line also sounds like the group settling something)."""
        found, unsupported = decision_candidates(t, draft, decision_turns(t), taken)
        for d in unsupported:
            self.repairs.append(f"dropped: a decision the transcript does not support "
                                f"({d.text[:120]!r})")
        kept: list[tuple[str, list[Quote]]] = []
        for i, c in enumerate(found, 1):
            if c.sources == {"cues"} and any(abs(q.turn - c.turn) <= SAME_PLACE
                                             for k in kept for q in k[1]):
                continue  # the "Agreed." after a decision already taken is the same place
            if self.log:
                self.log.info("minutes: decision", item=i, items=len(found))
            try:
                got = self._ask(DECIDE_SYSTEM, decide_prompt(t, c), Decided, max_new_tokens=16,
                                what="a decision check")
            except MinutesError:
                if "model" not in c.sources:
                    continue  # a cue alone, unconfirmed, is not a decision
                got = Decided(kind="decision")  # no verdict: the draft's stands on its line
                self.repairs.append(f"the model gave no verdict on the decision at "
                                    f"{hms(t.segments[c.turn].start)}; the draft's wording "
                                    "is kept")
            if not got.decided:
                continue  # a proposal, a fact, a task or a misreading: not a decision
            if (r := resolve_decision(t, c, got.decision)) is None:
                if "model" not in c.sources:
                    continue  # "Agreed." alone: the decision is the line it answered
                self.repairs.append(f"dropped: a decision whose wording the transcript does "
                                    f"not support ({(got.decision or c.hint)[:120]!r})")
                continue
            if (k := carried_motion(kept, r)) is not None:
                k[1].extend(q for q in r[1] if q.turn not in {x.turn for x in k[1]})
                continue  # "The motion is carried": the vote on the motion just put
            if not any(same_decision(r[0], k[0]) for k in kept):
                kept.append(r)
        return [k[0] for k in kept], [k[1] for k in kept]

    # -- action items

    def propose(self, t: SpeakerTranscript, attendees: list[str]):
        """The model's reading, part by part: lines where someone takes on a task."""
        budget = self._budget(FIND_SYSTEM) - 100
        out = []
        for lo, hi in self._chunks(t, budget):
            try:
                got = self._ask(FIND_SYSTEM, find_prompt(t, lo, hi, attendees), ProposedList,
                                max_new_tokens=min(400, self.max_new_tokens),
                                what="the list of tasks people took on")
            except MinutesError:
                self.repairs.append(f"the model's reading of the transcript from "
                                    f"{hms(t.segments[lo].start)} on gave no valid answer: "
                                    "action items there come from the cue patterns only")
                continue
            for p in got.items:
                if not lo <= p.line < hi:
                    # a line number the part does not have (a long turn read as many lines):
                    # the line that says the task, if one says it clearly, else let go
                    best = max(((overlap(p.task, t.segments[i].text), i) for i in range(lo, hi)),
                               default=(0.0, -1))
                    if best[0] < RELOCATE:
                        continue
                    p = p.model_copy(update={"line": best[1]})
                out.append(p)
        return out

    def action_items_for(self, t: SpeakerTranscript, facts: MeetingFacts) -> list[ActionItem]:
        cues = task_cues(t) if self.action_items in ("checked", "cues") else []
        proposed = self.propose(t, facts.attendees) if self.action_items != "cues" else []
        candidates = merge_candidates(t, cues, proposed)
        self.stats.candidates = len(candidates)
        items: list[ActionItem] = []
        for i, c in enumerate(candidates, 1):
            if self.log:
                self.log.info("minutes: action item", item=i, items=len(candidates))
            item = self._judge(t, c)
            if item is not None:
                items.append(item)
        return follow_conversation(items)

    def _judge(self, t: SpeakerTranscript, c: Candidate) -> ActionItem | None:
        try:
            got = self._ask(JUDGE_SYSTEM, judge_prompt(t, c), Judged,
                            max_new_tokens=min(200, self.max_new_tokens),
                            what="an action item")
            if ((got.kind or "").lower() == "idea" and "cues" in c.sources
                    and firm(c.task_hint) and unhedged(c.task_hint)):
                # "Sure, I can take that", "I can get you that by Thursday": a firm promise,
                # said without a hedge, is not an idea (the 1.5B judge often says so)
                got = Judged(kind="task", owner=got.owner, line=got.line, due=got.due,
                             task=got.task or own_words(c.task_hint))
            if got.is_task(cued=True) and "cues" in c.sources and not supported(
                    got.task, evidence_text(t, c)):
                # one more look, told what was wrong, before the candidate is let go
                got = self._ask(JUDGE_SYSTEM, judge_prompt(t, c) + "\n\n" + RETRY_UNSUPPORTED,
                                Judged, max_new_tokens=min(200, self.max_new_tokens),
                                what="an action item")
                if (got.is_task(cued=True) and not supported(got.task, evidence_text(t, c))
                        and firm(c.task_hint)):
                    # Still a task, still worded from another line (small models copy the
                    # line before), and said as a firm "I'll ...": the speaker's own words
                    # stand, and the reader is told.
                    got = Judged(kind="task", task=own_words(c.task_hint), due=got.due)
                    self.repairs.append(
                        f"the model worded the task at {hms(t.segments[c.first].start)} from "
                        "another line; the speaker's own words are kept")
        except MinutesError:
            if "cues" not in c.sources:
                return None
            # A cue stands on its own words rather than being lost; the reader is told.
            got = Judged(task=own_words(c.task_hint), owner=None)
            self.repairs.append(f"the model gave no valid answer for the task at "
                                f"{hms(t.segments[c.first].start)}; its words are kept as said")
        return resolve(t, c, got)

    # -- the whole minutes

    def write(self, t: SpeakerTranscript, facts: MeetingFacts) -> Minutes:
        self.repairs = []
        draft = self.draft(t, facts)
        actions = self.action_items_for(t, facts)
        decisions, decision_quotes = self.decisions(
            t, draft.decisions, taken={q.turn for a in actions for q in a.evidence})
        labels = {display_label(t, s.id): s.name for s in t.speakers if s.name}
        labels.update({s.id: s.name for s in t.speakers if s.name})
        unnamed = {display_label(t, s.id) for s in t.speakers if not s.name}
        items: list[ActionItem] = []
        for a in actions:
            owner = resolve_owner(a.owner, facts.attendees, labels)
            if owner == UNASSIGNED and a.owner.strip() in unnamed:
                owner = a.owner.strip()  # "Speaker 2" stays a label, so readers can tell
            a.owner = owner
            items.append(a)
        topics = [Topic(x.title.strip(), [p.strip() for p in x.points if p.strip()])
                  for x in draft.topics if x.title.strip() or x.points]
        points = list(draft.discussion_points)
        if topics:
            points = [f"{x.title}: {p}" if x.title else p for x in topics for p in x.points] or [
                x.title for x in topics]
        if self.stats.repaired:
            self.repairs.append(f"{self.stats.repaired} of the model's answers needed their "
                                "JSON repaired (code fences, trailing commas, cut off)")
        m = Minutes(
            title=draft.title.strip() or "Meeting",
            date=facts.date,
            attendees=list(facts.attendees),
            summary=draft.summary.strip(),
            discussion_points=points,
            decisions=decisions,
            action_items=items,
            duration_s=facts.duration_s,
            speakers=list(facts.speakers),
            decision_evidence=decision_quotes,
            topics=topics,
        )
        m.flags = quality_flags(m, t, self.repairs)
        return m


# Where action items come from (minutes.action_items), see LLMMinutesWriter.
ACTION_SOURCES = ("checked", "model", "cues")



def _valid_as_given(answer: str) -> bool:
    try:
        json.loads(answer.strip())
        return True
    except ValueError:
        return False
