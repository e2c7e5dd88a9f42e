"""The understand half: minutes from a speaker-labelled transcript, through any ChatModel.

==============  ===============================================================
``writer``      :class:`LLMMinutesWriter`: the flow (draft, action items, owners)
``prompts``     what the model is told
``schema``      what the model must answer (pydantic), ``UNASSIGNED``
``jsonfix``     answers made whole: code fences, prose, trailing commas, cut-offs
``owners``      who an owner named by the model is (attendees only)
``cues``        sentences pointed out to the model (decisions stated)
``actions``     English cue patterns: sentences where someone takes on a task
``commitments`` action items: candidates, the model's judgement, the owner checked
``evidence``    the quoted sentences items rest on, and the check of them
``faithful``    names and numbers in the minutes that nobody said
``quality``     the quality flags: what a reader should check
==============  ===============================================================

Rendering to markdown and HTML is in :mod:`daemon.render`.
"""
