"""The daemon (``minutesd run``), one module a job:

==============  ==============================================================
``lifecycle``   :class:`Service`: start, lock, load models, the main loop, stop
``intake``      files from the inbox into the queue (complete, hashed, deduplicated)
``steps``       the steps of a job, defined once (the queue's schema comes from it)
``runner``      workers and the step runner; what a failed step means
``filing``      originals to processed/, failed/ (with the reason), duplicates/
``uploads``     the uploader thread per mirror (Google Drive)
``queue``       the durable SQLite job queue
``health``      backoff, and the problem that needs the operator now
``layout``      the folders, and layouts that cannot work
==============  ==============================================================

Dependencies run one way: ``lifecycle`` builds the others and hands each only what it uses.
"""
