"""The understand half: minutes from a speaker-labelled transcript, through any ChatModel.

=============  ===============================================================
``writer``     :class:`LLMMinutesWriter`: the flow (draft, action items, owners)
``prompts``    what the model is told
``schema``     what the model must answer (pydantic), ``UNASSIGNED``
``jsonfix``    answers made whole: code fences, prose, trailing commas, cut-offs
``owners``     who an owner named by the model is (attendees only)
``cues``       sentences pointed out to the model (commitments, decisions)
``actions``    action items from commitments: who took on what
``faithful``   names and numbers in the minutes that nobody said
``quality``    the quality flags: what a reader should check
=============  ===============================================================

Rendering to markdown and HTML is in :mod:`daemon.render`.
"""
