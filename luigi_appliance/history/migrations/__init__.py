"""Alembic environment and revisions of the history schema (run by ``luigi-appliance db``)."""
