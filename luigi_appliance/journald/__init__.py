"""Logging to journald with structured fields: the native protocol (native.py), the fields and
MESSAGE_IDs (fields.py), the logging handler (handler.py). logsetup.py decides when it is used."""
