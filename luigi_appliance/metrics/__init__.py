"""The scheduler's Prometheus metrics: what is exported (catalog.py, declared once), how each is
collected, and the /metrics route that serves them through the auth layer."""
