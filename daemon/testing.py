"""Stand-ins for the models, to exercise the daemon fast (tests, and trying out a set-up).

``python -m daemon.testing [--fake-llm] [--fake-all] -- <minutesd arguments>`` runs the real
CLI (``minutesd run`` and friends) with the models replaced:

* ``--fake-all``: no models at all. A "recording" is a UTF-8 text file; its lines become the
  transcript, alternating two speakers. Directives in the file: a first line ``CORRUPT``
  fails like an undecodable file; ``FLAKY n`` raises a transient error the first n times per
  process; a first line ``NOMINUTES ...`` makes the minutes step fail once per process. ``MINUTESD_FAKE_HEAR_S`` / ``MINUTESD_FAKE_UNDERSTAND_S`` make the steps take time
  (so a test can ``kill -9`` in the middle of one), ``MINUTESD_FAKE_LOAD_S`` the model load.
  A recording's facts (its sidecar) name its speakers in the order of its attendees and
  give its minutes their title and date, as the real pipeline does.
* ``MINUTESD_FAKE_STATE_FULL=<flag file>``: while that file exists, every write to the job
  queue fails as SQLite does on a full disk (``database or disk is full``): the state disk
  is full, without having to fill one.
* ``--fake-llm``: real speech models, a deterministic chat model in place of the LLM (its
  minutes quote the transcript), for end-to-end tests where the LLM is not the subject. It
  streams its answer 8 characters at a time, ``MINUTESD_FAKE_TOKEN_S`` apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import sys
import time
from pathlib import Path

from daemon import registry
from daemon.audio import AudioDecodeError
from daemon.cli import main as cli_main
from daemon.minutes.writer import MinutesError
from daemon.pipeline import finish_minutes, meeting_facts
from daemon.service.queue import JobStore
from daemon.types import (
    ActionItem,
    Diarization,
    HearResult,
    MeetingFacts,
    MeetingInfo,
    Minutes,
    Speaker,
    SpeakerSegment,
    SpeakerTranscript,
    StageTimes,
    Transcript,
)


class FakeProcessor:
    """Duck-types :class:`daemon.pipeline.Processor` (``hear`` + ``understand``)."""

    def __init__(self, settings, log=None, on_token=None):
        self.settings = settings
        self.on_token = on_token
        self.hear_s = float(os.environ.get("MINUTESD_FAKE_HEAR_S", "0"))
        self.understand_s = float(os.environ.get("MINUTESD_FAKE_UNDERSTAND_S", "0"))
        self.flaky: dict[str, int] = {}
        time.sleep(float(os.environ.get("MINUTESD_FAKE_LOAD_S", "0")))  # "loading models"
        self.calls: list[tuple[str, str]] = []
        self.infos: list[MeetingInfo | None] = []  # the facts each hear() was given
        self.remembered: list[str] = []  # the keys remember_voices() was called with

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def hear(self, path, progress=None, info: MeetingInfo | None = None) -> HearResult:
        p = Path(path)
        self.calls.append(("hear", p.name))
        self.infos.append(info)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise AudioDecodeError(p, "file not found") from None
        if not data:
            raise AudioDecodeError(p, "empty file (0 bytes)")
        text = data.decode("utf-8", errors="replace")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if lines and lines[0].startswith("CORRUPT"):
            raise AudioDecodeError(p, "not an audio or video file FFmpeg recognises")
        if lines and lines[0].startswith("FLAKY"):
            n = int(lines[0].split()[1]) if len(lines[0].split()) > 1 else 1
            done = self.flaky.get(p.name, 0)
            if done < n:
                self.flaky[p.name] = done + 1
                raise RuntimeError(f"transient failure {done + 1} of {n}")
            lines = lines[1:]
        self._sleep(self.hear_s)
        segs = [SpeakerSegment(i * 5.0, i * 5.0 + 4.0, f"SPEAKER_{i % 2:02d}", ln)
                for i, ln in enumerate(lines)]
        spk = sorted({s.speaker for s in segs})
        roster = list(info.attendees) if info else []
        t = SpeakerTranscript(duration_s=5.0 * max(1, len(segs)),
                              speakers=[Speaker(s, roster[i] if i < len(roster) else None, 4.0)
                                        for i, s in enumerate(spk)], segments=segs,
                              language=(info.language if info else None) or "en",
                              source=str(p))
        if progress:
            progress("transcribe", t.duration_s, t.duration_s)
        return HearResult(t, Transcript([]), Diarization([]), StageTimes())

    def remember_voices(self, key: str, heard: HearResult) -> None:
        """No voices are heard here, so none are kept; the key is noted (tests)."""
        self.remembered.append(key)

    def understand(self, transcript: SpeakerTranscript, path, info: MeetingInfo | None = None,
                   name: str | None = None) -> tuple[Minutes, MeetingFacts]:
        self.calls.append(("understand", Path(path).name))
        self._sleep(self.understand_s)
        first = transcript.segments[0].text if transcript.segments else ""
        if first.startswith("NOMINUTES") and not self.flaky.get("NOMINUTES " + first):
            self.flaky["NOMINUTES " + first] = 1
            raise MinutesError("no valid minutes JSON after 3 attempts: not closed")
        facts = meeting_facts(transcript, path, self.settings, info, name)
        first = transcript.segments[0].text if transcript.segments else "Meeting"
        title = " ".join(first.split()[:6]).rstrip(".,") or "Meeting"
        m = Minutes(title=title, date=facts.date, attendees=facts.attendees,
                    summary=" ".join(s.text for s in transcript.segments[:3]),
                    discussion_points=[s.text for s in transcript.segments[:5]],
                    decisions=[], action_items=[ActionItem("unassigned", "Follow up")],
                    duration_s=facts.duration_s, speakers=facts.speakers)
        return finish_minutes(m, facts, info), facts


class EchoChat:
    """A deterministic ChatModel: minutes JSON quoting the transcript in the prompt."""

    name = "echo"
    context_tokens = 32768

    def __init__(self, *args, **kwargs):
        self.last_stats = {}

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def chat(self, messages, max_new_tokens, json_output=False, on_token=None) -> str:
        user = messages[-1].content if messages else ""
        said = re.findall(r"^(?:>> )?\[\d+(?::\d\d:\d\d)?\] [^:]+: (.+)$", user, flags=re.M)
        if not said:  # a merge of part notes
            said = re.findall(r'"summary": "([^"]+)"', user)
        title = " ".join(" ".join(said[:1]).split()[:6]).rstrip(".,") or "Meeting"
        answer = json.dumps({
            "title": title,
            "summary": " ".join(said[:3])[:600],
            "discussion_points": [s[:200] for s in said[:5]],
            "decisions": [],
            "action_items": [],
        })
        if on_token:  # streamed as a model does, a few characters at a time
            pause = float(os.environ.get("MINUTESD_FAKE_TOKEN_S", "0"))
            for i in range(0, len(answer), 8):
                on_token(answer[i:i + 8])
                if pause:
                    time.sleep(pause)
        return answer


def install(fake_all: bool = False, fake_llm: bool = False) -> None:
    """Register the stand-ins under the names settings pick, for this process only."""
    if fake_all:
        registry.PIPELINES.register("standard", FakeProcessor)
    if fake_llm:
        for name in registry.CHAT_MODELS.names():
            registry.CHAT_MODELS.register(name, EchoChat)


def fake_full_state_disk(flag: Path) -> None:
    """Writes to the job queue fail as on a full disk while ``flag`` exists (this process)."""
    real_tx = JobStore.tx

    @contextlib.contextmanager
    def tx(self):
        if flag.exists():
            with real_tx(self):
                raise sqlite3.OperationalError("database or disk is full")
        with real_tx(self) as db:
            yield db

    JobStore.tx = tx  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    fake_all = "--fake-all" in args
    fake_llm = "--fake-llm" in args
    if "--" in args:
        args = args[args.index("--") + 1:]
    else:
        args = [a for a in args if a not in ("--fake-all", "--fake-llm")]
    install(fake_all, fake_llm)
    if os.environ.get("MINUTESD_FAKE_STATE_FULL"):
        fake_full_state_disk(Path(os.environ["MINUTESD_FAKE_STATE_FULL"]))
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
