"""Errors that carry a message meant for the user.

A bot handler raises ``UserError("You have 12 credits; this job needs 40.")`` for anything the user can fix;
the dispatcher sends that text as the reply. Any other exception is our bug: the user gets a short apology
with a reference, the details go to the log.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can act on. ``message`` is HTML, already escaped where it quotes user input."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
