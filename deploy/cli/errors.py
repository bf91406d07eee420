"""The failure a `cellbank` command reports to its user, with the exit code it ends with."""

from __future__ import annotations


class CliError(Exception):
    """A failure the user must act on; the message says what and how, `code` is the exit code
    (2: the question could not be answered; 1: the answer is bad)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
