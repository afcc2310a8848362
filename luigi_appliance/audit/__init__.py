"""The audit trail: what it records (trail.py), its settings (settings.py), the hash chain and
signed checkpoints that make it tamper-evident (chain.py), and the tools that verify and export
it (``luigi-appliance audit ...``)."""

from luigi_appliance.audit.trail import FLUSH_INTERVAL, HEARTBEAT_METHODS, AuditLog

__all__ = ["FLUSH_INTERVAL", "HEARTBEAT_METHODS", "AuditLog"]
