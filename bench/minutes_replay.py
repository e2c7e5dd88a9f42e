#!/usr/bin/env python3
"""Write a bench run's minutes again with today's code, from the model answers that run
recorded: exact and fast for a change that asks the model nothing new.

    .venv/bin/python bench/minutes_replay.py OUT/NAME [OUT/NAME ...] --eval ../shared/eval \
        [--truth-root DIR] [--write]

``OUT/NAME`` is a meeting folder of ``bench/minutes.py --trace``: its ``transcript.json``,
``minutes.json`` and ``llm.jsonl`` (every model call: system, user, answer). The writer runs
again on the transcript with a chat model that answers each question with what the real
model answered then (greedy decoding: the same question gets the same answer). A question
the run never asked (a new or changed prompt) cannot be answered from the trace: the
meeting is reported as needing a real run, and nothing is written. With ``--write`` the
replayed ``minutes.json`` replaces the folder's (the old one kept as ``minutes.run.json``).
Token counts (the writer's chunking) come from the embedded model's own tokenizer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon.minutes.evidence import check_minutes  # noqa: E402
from daemon.minutes.writer import LLMMinutesWriter  # noqa: E402
from daemon.pipeline import attendance, heard_attendees  # noqa: E402
from daemon.settings import load_settings  # noqa: E402
from daemon.types import MeetingFacts, SpeakerTranscript  # noqa: E402


class NotInTrace(Exception):
    pass


class ReplayChat:
    name = "replay"

    def __init__(self, calls: list[dict], tokenizer, context_tokens: int):
        # bench/minutes.py keeps the start of each system prompt and the whole question
        self.answers = {(c["system"], c["user"]): c["answer"] for c in calls}
        self.prefix = max((len(c["system"]) for c in calls), default=0)
        self.tokenizer = tokenizer
        self.context_tokens = context_tokens
        self.asked = 0

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat(self, messages, max_new_tokens, json_output=False, on_token=None):
        key = (messages[0].content[:self.prefix], messages[-1].content)
        if key not in self.answers:
            raise NotInTrace(key[1][-200:])
        self.asked += 1
        return self.answers[key]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--eval", type=Path, default=REPO.parent / "shared" / "eval")
    ap.add_argument("--truth-root", type=Path, action="append", default=[],
                    help="folders holding NAME/truth.json (default: the kit's dev/)")
    ap.add_argument("--config", default=None)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--roster", choices=("truth", "none"), default="truth",
                    help="as the run was given (bench/minutes.py --roster)")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    settings = load_settings(args.config)
    cache = settings.resolved_cache_dir()
    hf = next((cache / "models").glob(f"{settings.llm.model.split(':')[-1]}*-hf"), None)
    if hf is None:
        sys.exit(f"no converted checkpoint of {settings.llm.model} in {cache / 'models'}")
    tokenizer = AutoTokenizer.from_pretrained(str(hf))
    roots = args.truth_root or [args.eval / "dev"]
    for d in args.folders:
        calls = [json.loads(line) for line in (d / "llm.jsonl").open()]
        old = json.loads((d / "minutes.json").read_text())
        t = SpeakerTranscript.from_json(json.loads((d / "transcript.json").read_text()))
        facts = MeetingFacts(date=old["date"], duration_s=t.duration_s,
                             attendees=heard_attendees(t), speakers=list(t.speakers))
        chat = ReplayChat(calls, tokenizer, min(settings.llm.context_tokens, 32768))
        writer = LLMMinutesWriter(chat, settings.llm.max_new_tokens,
                                  settings.minutes.max_attempts,
                                  action_items=settings.minutes.action_items)
        try:
            m = writer.write(t, facts)
        except NotInTrace as exc:
            print(f"{d.name}: needs a real run (a question the trace lacks: ...{exc})")
            continue
        truth = next((r / d.name for r in roots if (r / d.name / "truth.json").exists()), None)
        if truth is not None and args.roster == "truth":  # as bench/minutes.py gives them
            people = [s["name"] if isinstance(s, dict) else s
                      for s in json.loads((truth / "truth.json").read_text()).get("speakers", [])]
            m.attendees = attendance(facts, people) if people else m.attendees
        new = {**old, **{k: v for k, v in m.to_json().items()
                         if k in ("attendees", "decisions", "decision_evidence", "action_items",
                                  "quality_flags", "topics", "discussion_points")}}
        problems = check_minutes(new, t.to_json())
        line = f"{d.name}: replayed {chat.asked}/{len(calls)} answers, evidence problems {len(problems)}"
        if args.write:
            if not (d / "minutes.run.json").exists():
                shutil.copy(d / "minutes.json", d / "minutes.run.json")
            (d / "minutes.json").write_text(json.dumps(new, indent=2, ensure_ascii=False))
            if truth is not None:
                score = subprocess.run([sys.executable, str(args.eval / "score.py"), str(truth),
                                        str(d)], capture_output=True, text=True).stdout.strip()
                line += "\n  " + score
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
