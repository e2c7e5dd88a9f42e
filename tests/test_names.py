"""Speaker names from how people address each other; never a guess."""

from __future__ import annotations

from daemon.names import apply_names, assign_names, display_label
from daemon.types import Speaker, SpeakerSegment, SpeakerTranscript


def transcript(turns: list[tuple[str, str]]) -> SpeakerTranscript:
    segs, t = [], 0.0
    for spk, text in turns:
        segs.append(SpeakerSegment(t, t + 5, spk, text))
        t += 6
    order = list(dict.fromkeys(s for s, _ in turns))
    return SpeakerTranscript(t, [Speaker(s, talk_time_s=5.0) for s in order], segs)


MEETING = [
    ("S0", "Good morning everyone. I have David and Priya with me today."),
    ("S1", "Thanks, Maria. The roof work came in under the estimate."),
    ("S0", "Good. David, can you collect three quotes by Friday?"),
    ("S1", "Yes, I will have three quotes by Friday."),
    ("S2", "I want to raise the children's section."),
    ("S0", "Priya, please run a survey."),
    ("S2", "Sure."),
]


def test_addressed_and_thanked_speakers_get_names_and_the_last_one_by_elimination():
    t = transcript(MEETING)
    names, ev = assign_names(t)
    assert names == {"S0": "Maria", "S1": "David", "S2": "Priya"}
    assert any("thanked" in r for r in ev.reasons)


def test_roster_gives_full_names_and_hints_survive_short_forms():
    t = transcript(MEETING)
    names, _ = assign_names(t, ["Maria Lopez", "David Chen", "Priya Natarajan"])
    assert names == {"S0": "Maria Lopez", "S1": "David Chen", "S2": "Priya Natarajan"}


def test_no_evidence_no_name():
    t = transcript([("S0", "Let's begin with the budget."), ("S1", "The budget is fine."),
                    ("S0", "Good, then we are done.")])
    names, _ = assign_names(t)
    assert names == {}
    apply_names(t, names)
    assert [display_label(t, s.id) for s in t.speakers] == ["Speaker 1", "Speaker 2"]


def test_a_speaker_who_says_a_name_is_not_given_it():
    # S1 mentions Olivia; S0 is addressed as nobody. Olivia must not go to S1.
    t = transcript([("S0", "Kenji, how does the build look?"), ("S1", "Good."),
                    ("S1", "I will send the draft to Olivia by Monday.")])
    names, _ = assign_names(t, ["Olivia Grant", "Kenji Watanabe", "Hannah Berg"])
    assert names.get("S1") == "Kenji Watanabe"
    assert names.get("S0") != "Kenji Watanabe"
    assert "Olivia Grant" not in [v for k, v in names.items() if k == "S1"]


def test_short_form_and_possessive_fold_into_one_person():
    t = transcript([("S0", "Sam, can you run the load test?"), ("S1", "Yes."),
                    ("S0", "I will wait for Samuel's report.")])
    names, _ = assign_names(t)
    assert names == {"S1": "Samuel"}


def test_self_introduction():
    t = transcript([("S0", "Hi, I'm Ingrid from finance."), ("S1", "Welcome.")])
    assert assign_names(t)[0] == {"S0": "Ingrid"}
    t2 = transcript([("S0", "I am David and Priya with me."), ("S1", "Hello.")])
    assert "S0" not in assign_names(t2)[0]  # ASR slip for "I have David and Priya"


def test_address_after_a_capitalised_lead_word():
    t = transcript([("S0", "We need data."), ("S1", "I agree."),
                    ("S0", "Good, Priya, please run the survey and bring the results."),
                    ("S2", "Sure, I will.")])
    names, _ = assign_names(t)
    assert names.get("S2") == "Priya"


def test_a_name_handed_something_in_a_reply_points_at_the_person_answered():
    t = transcript([
        ("S0", "Hannah, does the new date work for marketing?"),
        ("S1", "It does. I will update the press release and send the draft to Olivia by Monday."),
    ])
    names, ev = assign_names(t)
    assert names == {"S0": "Olivia", "S1": "Hannah"}
    assert any("handed" in r for r in ev.reasons)


def test_roster_short_forms_and_elimination_with_the_meetings_roster():
    roster = ["Olivia Grant", "Kenji Watanabe", "Samuel Okafor", "Hannah Berg"]
    t = transcript([
        ("S0", "Kenji, how does the release candidate look?"),
        ("S1", "Mostly good."),
        ("S0", "That's a risk. Sam, you, I want a full load test."),  # ASR's "Samuel, I want"
        ("S2", "Understood."),
        ("S0", "We delay the launch. Does that work for marketing?"),
        ("S3", "It does. I need the final launch date, and I will send the draft to Olivia."),
        ("S0", "Yes, but only after Friday."),
    ])
    names, _ = assign_names(t, roster)
    assert names == {"S0": "Olivia Grant", "S1": "Kenji Watanabe", "S2": "Samuel Okafor",
                     "S3": "Hannah Berg"}  # Hannah: the one speaker and the one name left
    # "Sam" is ambiguous when two roster names start with it: not guessed
    names, _ = assign_names(t, roster + ["Samantha Reed"])
    assert "S2" not in names


def test_a_request_to_a_name_inside_a_sentence_is_evidence_too():
    t = transcript([
        ("S0", "Then let's get more numbers, David, can you collect three quotes by Friday?"),
        ("S1", "Yes, I will have three quotes by Friday."),
    ])
    names, _ = assign_names(t)
    assert names.get("S1") == "David"


def test_a_name_set_off_by_commas_before_you_is_addressed():
    # Whisper often runs "That's a risk. Sam, I want ..." into one sentence
    t = transcript([
        ("S0", "That's a risk, Sam, you'd want a full load test with a report."),
        ("S1", "Understood, I'll run the load test this week."),
        ("S0", "We met in Leeds, Paris, and Rome last year."),
        ("S2", "Those were good trips."),
    ])
    names, _ = assign_names(t)
    assert names == {"S1": "Sam"}


def test_attendees_get_the_full_name_they_were_introduced_by():
    from daemon.names import assign_names
    from daemon.types import Speaker, SpeakerSegment, SpeakerTranscript

    segs = [SpeakerSegment(0, 5, "A", "Hello everyone, I'm Laura Bennett and I chair this."),
            SpeakerSegment(6, 9, "B", "Thanks, Laura. Shall we start with the roof?"),
            SpeakerSegment(10, 14, "A", "Yes. Frank, what did the roofers say?"),
            SpeakerSegment(15, 19, "B", "They can come in July, Laura.")]
    t = SpeakerTranscript(20, [Speaker("A"), Speaker("B")], segs)
    names, _ = assign_names(t)
    assert names == {"A": "Laura Bennett", "B": "Frank"}  # no surname said for Frank


def test_introducing_someone_else_is_not_a_self_introduction():
    from daemon.names import assign_names
    from daemon.types import Speaker, SpeakerSegment, SpeakerTranscript

    roster = ["Daniel Reyes", "Martin Kowalski", "Priya Shah"]
    segs = [SpeakerSegment(0, 5, "D", "Thanks for making the time, Martin. Priya, this is "
                           "Martin Kowalski, he runs operations. Martin, this is Priya Shah."),
            SpeakerSegment(6, 8, "P", "Hi Martin, nice to meet you."),
            SpeakerSegment(9, 11, "M", "Nice to meet you too.")]
    t = SpeakerTranscript(12, [Speaker("D"), Speaker("P"), Speaker("M")], segs)
    names, _ = assign_names(t, roster)
    assert names.get("D") not in ("Martin Kowalski", "Priya Shah")
    # on a call, "Hi, this is Daniel" still introduces the speaker
    t2 = SpeakerTranscript(5, [Speaker("D")], [SpeakerSegment(0, 4, "D", "Hi, this is Daniel.")])
    assert assign_names(t2, roster)[0] == {"D": "Daniel Reyes"}


def test_a_roster_name_whisper_misspelled_is_still_that_person():
    from daemon.names import _canon

    roster = ["Philippa Grange", "Marcus Reid", "Nora Lindqvist", "Mark Reed"]
    assert _canon("Range", roster) == "Philippa Grange"   # "Mr. Range" for Grange
    assert _canon("Linvist", roster) == "Nora Lindqvist"
    assert _canon("Reed", roster) == "Mark Reed"  # the exact name wins over a near one
    assert _canon("Reyd", roster) is None  # Reid or Reed: not guessed
    assert _canon("Table", roster) is None


def test_titles_and_a_name_alone_hand_the_floor_to_that_person():
    roster = ["Eleanor Fairbrother", "Victor Adeyemi", "Philippa Grange", "Rohan Mehta"]
    t = transcript([
        ("S0", "I am Eleanor Fairbrother, and I shall chair tonight."),
        ("S3", "For the record, I wish to declare an interest."),
        ("S0", "Thank you, Mister Mehta. That is noted. Item one, the warehouse. Mr. Adeyemi?"),
        ("S1", "Thank you, Chair. We have been offered a unit."),
        ("S0", "Item three. Governance. Miss Grange."),
        ("S2", "The annual return is due on the thirtieth, Madam Chair."),
    ])
    names, ev = assign_names(t, roster)
    assert names == {"S0": "Eleanor Fairbrother", "S3": "Rohan Mehta", "S1": "Victor Adeyemi",
                     "S2": "Philippa Grange"}
    assert any("given the floor" in r for r in ev.reasons)
    # "Chair" is how one addresses the chair, not a name
    assert "Chair" not in {n for d in assign_names(t)[1].scores.values() for n in d}


def test_a_turn_opening_with_a_full_name_and_a_role_introduces_the_speaker():
    t = transcript([("S0", "Okay, let's start, I chair this committee."),
                    ("S1", "Frank Doyle, site manager, for anyone who hasn't met me."),
                    ("S2", "Emily Stone, business manager. I look after the money."),
                    ("S0", "Thanks both.")])
    assert assign_names(t)[0] == {"S1": "Frank Doyle", "S2": "Emily Stone"}
    # introducing someone else, or thanking them, is not saying one's own name
    for line in ("Victor Adeyemi, our treasurer, will present the accounts.",
                 "Thanks Martin, talk soon."):
        names, _ = assign_names(transcript([("S0", line)]))
        assert "S0" not in names


def test_a_full_name_asked_a_question_is_the_next_speaker():
    roster = ["Hugo Brandt", "Mei Lin Chow", "Aaron Whitlock"]
    t = transcript([("S0", "I'm Hugo, filling in today. Mei Lin Chow, do you want to start?"),
                    ("S1", "Sure. I finished the invoice export."),
                    ("S0", "Great. Aaron Whitlock?"),
                    ("S2", "Yeah. I upgraded the driver.")])
    assert assign_names(t, roster)[0] == {"S0": "Hugo Brandt", "S1": "Mei Lin Chow",
                                          "S2": "Aaron Whitlock"}


def test_a_name_at_the_end_of_a_statement_answers_the_previous_speaker():
    t = transcript([("S0", "Right, shall we make a start? Thanks for coming out."),
                    ("S1", "Wouldn't miss it, Gordon. Someone promised biscuits."),
                    ("S2", "They are on the side, I think."),
                    ("S1", "Over to you, Wendy."),
                    ("S2", "Thanks. The hedge is next.")])
    names, _ = assign_names(t)
    # Gordon answers nobody here: S1 answers S0; "Over to you, Wendy" hands over to S2
    assert names == {"S0": "Gordon", "S2": "Wendy"}
    # at the end of a longer turn, the name hands over (Whisper's full stop for a "?")
    t = transcript([("S0", "Right. Third thing, the phones at eight in the morning, Tomasz."),
                    ("S1", "We get three hundred calls between eight and half past."),
                    ("S0", "That is a lot.")])
    assert assign_names(t)[0] == {"S1": "Tomasz"}


def test_a_surname_said_alone_gets_the_first_name_said_with_it():
    t = transcript([("S0", "Present are our treasurer, Mister Victor Adeyemi, and others."),
                    ("S1", "Good evening."),
                    ("S0", "Item one. Mister Adeyemi, would you introduce it?"),
                    ("S1", "Thank you. We have a unit on offer.")])
    assert assign_names(t)[0] == {"S1": "Victor Adeyemi"}


def test_a_name_whisper_spelled_by_its_sound_is_that_roster_person_only_when_written_as_a_name():
    roster = ["Elena Rossi", "Jun Tanaka", "Chris Wood"]
    t = transcript([("S0", "Then, Jen, could you take the reviewer responses instead?"),
                    ("S1", "Sure, I can take that."),
                    ("S0", "Cheers, that helps a lot."),
                    ("S2", "Cheers.")])
    names, _ = assign_names(t, roster)
    assert names.get("S1") == "Jun Tanaka"  # "Jen" is written as a name, and sounds as Jun
    assert "Chris Wood" not in names.values()  # "Cheers" sounds alike, but is not a name


def test_a_roster_name_opening_a_very_short_last_sentence_hands_over():
    roster = ["Hugo Brandt", "Aaron Whitlock", "Zainab Okoro"]
    t = transcript([("S0", "I'm Hugo. Sounds good. Any blockers? Aaron with lock."),  # Whisper
                    ("S1", "Yeah. I upgraded the database driver."),
                    ("S0", "Thanks. And Sam said so."),  # not a roster name: nothing
                    ("S2", "Right.")])
    names, _ = assign_names(t, roster)
    assert names.get("S1") == "Aaron Whitlock"
    assert assign_names(t)[0].get("S1") is None  # without a roster, too weak to name anyone
