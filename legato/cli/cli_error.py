"""The error every CLI command reports as one paragraph (legato.cli.main prints it and exits)."""

from __future__ import annotations


class CliError(Exception):
    """A one-paragraph error for the user, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = 3) -> None:
        super().__init__(message)
        self.exit_code = exit_code
