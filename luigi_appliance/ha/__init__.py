"""High availability: an active/standby scheduler pair coordinated by a lease and a journal in PostgreSQL."""
