"""Voices learned from names people set or confirm (``minutesd speakers MEETING --set``).

When the daemon archives a meeting with voice profiles on, it keeps each speaker's embedding
in the profiles file under the meeting's key (:meth:`ProfileStore.remember`). A name a person
sets or confirms later turns that embedding into a sample of the person ("set in meeting X");
a name set wrongly and then changed takes its sample back. Learning from the pipeline's own
guesses is ``speakers.learn_from_guesses`` (off by default: a wrong guess would teach itself).
"""

from __future__ import annotations

from pathlib import Path

from daemon.types import SpeakerTranscript
from daemon.voices.store import ProfileStore


def origin(meeting: str, label: str) -> str:
    return f"{meeting}:{label}"


class ProfileLearner:
    """:class:`daemon.corrections.VoiceLearner` over the profiles file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def learn(self, meeting_key: str, label: str, name: str, source: str) -> bool:
        if not self.path.exists():
            return False
        with ProfileStore(self.path) as store:
            voice = store.meeting_voice(meeting_key, label)
            if voice is None or store.has_origin(name, origin(meeting_key, label)):
                return False
            vec, model_id = voice
            store.add_sample(name, vec, model_id, source, origin=origin(meeting_key, label))
        return True

    def unlearn(self, meeting_key: str, label: str, name: str) -> bool:
        if not self.path.exists():
            return False
        with ProfileStore(self.path) as store:
            return store.remove_origin(name, origin(meeting_key, label)) > 0


def learn_guesses(store: ProfileStore, meeting: str, transcript: SpeakerTranscript,
                  model_id: str, min_confidence: float) -> int:
    """``learn_from_guesses``: names the pipeline gave from the roster or the words (not from
    a voice, which would only reinforce itself), sure enough, become samples."""
    n = 0
    for s in transcript.speakers:
        if not s.name or (s.confidence or 0.0) < min_confidence or any(
                e.kind == "voice" for e in s.evidence):
            continue
        voice = store.meeting_voice(meeting, s.id)
        if voice is None or store.has_origin(s.name, origin(meeting, s.id)):
            continue
        store.add_sample(s.name, voice[0], model_id, f"guessed in meeting {meeting[:12]}",
                         origin=origin(meeting, s.id))
        n += 1
    return n
