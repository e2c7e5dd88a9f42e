"""Where finished minutes go.

* :mod:`daemon.archive.base` -- what every archive shares: the record stored, a search hit,
  the ``Archive`` and ``SearchableArchive`` Protocols, folder naming. Imports only
  :mod:`daemon.types`, so outside archives (``integrations/gdrive.py``) depend on it alone.
* :mod:`daemon.archive.local` -- the local archive (the default): dated folders, an SQLite
  FTS5 index for ``minutesd search``, exactly once per recording.

Which archive and which mirrors run is picked in :mod:`daemon.registry`.
"""
