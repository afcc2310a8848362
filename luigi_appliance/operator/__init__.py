"""The operator commands: ``task``, ``worker list``, ``scheduler``, ``user unlock``, acting on the
running scheduler over its authenticated API with ``run``'s client.conf and credentials."""
