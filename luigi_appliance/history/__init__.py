"""Task history: a non-blocking luigi TaskHistory, its PostgreSQL/SQLite store, pages and retention.

The flow: :mod:`.recorder` (luigi's TaskHistory, enqueue only, events cleaned by :mod:`.clean`)
-> :mod:`.writer` (the thread: batches into :mod:`.store`, else :mod:`.spool`, refused events to
:mod:`.deadletter`) -> the database; :mod:`.status` is what the writer and recorder report,
:mod:`.reader` the queries behind :mod:`.pages` and :mod:`.metrics`; :mod:`.runtime` composes
them for the server. Importing this package is cheap (no SQLAlchemy): the configuration loader
uses :mod:`.settings`; the scheduler imports the rest only when history is enabled.
docs/history.md is the operator's guide.
"""
