"""The worker side: credentials, an authenticated RemoteScheduler, and ``luigi-appliance run``."""
