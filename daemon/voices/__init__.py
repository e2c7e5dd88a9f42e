"""Voice profiles: recognise enrolled people by their voices across meetings.

``spans`` picks each diarized speaker's clean speech; the diarizer backend embeds it
(:class:`daemon.protocols.VoiceEmbedder`); ``store`` keeps people's samples in SQLite;
``matching`` pairs a meeting's speakers with people one-to-one; ``recognizer`` ties them
together for the pipeline and the ``minutesd voices`` commands.
"""
