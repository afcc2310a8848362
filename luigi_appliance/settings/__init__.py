"""The machinery every configuration file of the appliance is read with.

``inifile`` reads INI text remembering the file and line of every value, ``parsers`` turns
values into typed ones, ``declare`` lets a domain declare its section once (``key``, ``secret``
fields on the section's dataclass), and ``loader`` validates a document against the declared
sections, collecting every problem as a ``ConfigIssue`` (``issues``); ``reference`` renders the
declared keys for docs/configuration.md. Which sections a file has
is decided by its composition (``luigi_appliance.config_loader`` for scheduler.conf,
``luigi_appliance.client.settings`` for client.conf). Nothing here imports the rest of the
project, so every domain can use it without an import cycle.
"""
