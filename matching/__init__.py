"""matching service."""
