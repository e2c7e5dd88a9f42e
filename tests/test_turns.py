"""Joining words and speaker turns into speaker-attributed segments."""

from __future__ import annotations

import pytest

from daemon.settings import TurnSettings
from daemon.turns import assign_speakers, renumber, speaker_at, speaker_stats
from daemon.types import Diarization, Segment, SpeakerTurn, Transcript, Word


def words(spec: list[tuple[float, float, str]]) -> list[Word]:
    return [Word(s, e, " " + t) for s, e, t in spec]


def test_segment_split_at_the_word_where_the_speaker_changes():
    seg = Segment(0.0, 4.0, "hello there yes indeed", words([
        (0.0, 0.5, "hello"), (0.6, 1.0, "there"), (2.1, 2.5, "yes"), (2.6, 3.0, "indeed"),
    ]))
    dia = Diarization([SpeakerTurn(0.0, 1.2, "B"), SpeakerTurn(2.0, 3.5, "A")])
    out = assign_speakers(Transcript([seg]), dia)
    assert [(s.speaker, s.text) for s in out] == [("B", "hello there"), ("A", "yes indeed")]
    assert out[0].start == 0.0 and out[0].end == 1.0
    assert out[1].start == 2.1 and out[1].end == 3.0


def test_overlapping_word_goes_to_the_speaker_covering_more_of_it():
    dia = Diarization([SpeakerTurn(0.0, 1.3, "A"), SpeakerTurn(1.1, 3.0, "B")])
    assert speaker_at(dia.turns, 1.0, 1.4) == "A"  # A covers 0.3 s, B covers 0.3 s → first max
    assert speaker_at(dia.turns, 1.15, 1.6) == "B"  # A 0.15 s, B 0.45 s


def test_words_in_a_gap_go_to_the_nearest_turn_or_stay_with_the_previous_speaker():
    dia = Diarization([SpeakerTurn(0.0, 1.0, "A"), SpeakerTurn(6.0, 7.0, "B")])
    assert speaker_at(dia.turns, 1.2, 1.4) == "A"  # 0.3 s after A's turn
    assert speaker_at(dia.turns, 5.6, 5.8) == "B"
    assert speaker_at(dia.turns, 3.4, 3.6) is None  # > 2 s from any turn
    seg = Segment(0.0, 7.0, "", words([(0.2, 0.6, "one"), (3.4, 3.6, "two"), (6.2, 6.6, "three")]))
    out = assign_speakers(Transcript([seg]), dia, TurnSettings(merge_gap_s=5.0))
    # "two" is nobody's: it stays with A (the previous speaker); no word is lost.
    assert [(s.speaker, s.text) for s in out] == [("A", "one two"), ("B", "three")]


def test_merge_gap_and_max_turn_split_long_monologues():
    ws = [(i * 1.0, i * 1.0 + 0.5, f"w{i}") for i in range(10)]
    dia = Diarization([SpeakerTurn(0.0, 10.0, "A")])
    seg = Segment(0.0, 10.0, "", words(ws))
    assert len(assign_speakers(Transcript([seg]), dia, TurnSettings(merge_gap_s=1.0))) == 1
    assert len(assign_speakers(Transcript([seg]), dia, TurnSettings(merge_gap_s=0.4))) == 10
    assert len(assign_speakers(Transcript([seg]), dia, TurnSettings(max_turn_s=3.0))) == 4


def test_segment_strategy_without_words():
    segs = [Segment(0.0, 2.0, "first part"), Segment(2.5, 4.0, "second part")]
    dia = Diarization([SpeakerTurn(0.0, 2.2, "X"), SpeakerTurn(2.3, 4.0, "Y")])
    out = assign_speakers(Transcript(segs), dia, TurnSettings(strategy="segment"))
    assert [(s.speaker, s.text) for s in out] == [("X", "first part"), ("Y", "second part")]


def test_renumber_in_order_of_first_speech_and_talk_time():
    segs = [Segment(0.0, 1.0, "", words([(0.0, 1.0, "hi")])),
            Segment(2.0, 3.0, "", words([(2.0, 3.0, "yo")]))]
    dia = Diarization([SpeakerTurn(0.0, 1.5, "SPEAKER_07"), SpeakerTurn(1.8, 3.0, "SPEAKER_02"),
                       SpeakerTurn(4.0, 5.0, "SPEAKER_07")])
    out = assign_speakers(Transcript(segs), dia)
    renumber(out, dia)
    assert [s.speaker for s in out] == ["SPEAKER_00", "SPEAKER_01"]
    stats = {s.id: s.talk_time_s for s in speaker_stats(out, dia)}
    assert stats == {"SPEAKER_00": pytest.approx(2.5), "SPEAKER_01": pytest.approx(1.2)}


def test_reply_first_word_drifting_into_the_previous_turn_is_snapped_back():
    # "... with everyone. From marketing, the release is done." — Whisper put "From" 0.2 s
    # early, inside speaker A's turn; the sentence belongs to B.
    seg = Segment(0.0, 6.0, "", words([
        (0.0, 0.5, "Share"), (0.6, 1.0, "with"), (1.1, 1.8, "everyone."),
        (1.9, 2.1, "From"), (2.4, 2.9, "marketing,"), (3.0, 3.2, "the"), (3.3, 3.8, "release"),
        (3.9, 4.1, "is"), (4.2, 4.6, "done."),
    ]))
    dia = Diarization([SpeakerTurn(0.0, 2.2, "A"), SpeakerTurn(2.3, 5.0, "B")])
    snapped = assign_speakers(Transcript([seg]), dia, TurnSettings(snap_to_sentences=True))
    assert [(s.speaker, s.text) for s in snapped] == [
        ("A", "Share with everyone."), ("B", "From marketing, the release is done.")]
    raw = assign_speakers(Transcript([seg]), dia, TurnSettings(snap_to_sentences=False))
    assert raw[0].text == "Share with everyone. From"


def test_a_real_interruption_mid_sentence_keeps_its_split():
    seg = Segment(0.0, 6.0, "", words([
        (0.0, 0.4, "We"), (0.5, 0.8, "should"), (0.9, 1.2, "really"), (1.3, 1.6, "move"),
        (2.0, 2.3, "no"), (2.4, 2.7, "wait"), (2.8, 3.1, "let"), (3.2, 3.5, "me"),
        (3.6, 4.0, "finish."),
    ]))
    dia = Diarization([SpeakerTurn(0.0, 1.8, "A"), SpeakerTurn(1.9, 4.5, "B")])
    out = assign_speakers(Transcript([seg]), dia)
    assert [s.speaker for s in out] == ["A", "B"]
