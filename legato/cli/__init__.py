"""The `legato` command line."""
