"""history service."""
