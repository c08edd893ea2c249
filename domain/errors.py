"""Domain errors: a command the rules refuse. Each is a family the gateway's error table
(``gateway/errors.py``) maps to a wire code: invalid, forbidden, not_found, blocked."""

from __future__ import annotations


class DomainError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidError(DomainError):
    """The command is malformed or breaks a rule (body too long, a foreign thread id...)."""


class ForbiddenError(DomainError):
    """The user may not do this (not a participant, not the sender)."""


class BlockedError(DomainError):
    """The other participant blocks the thread (protocol.md section 5, Blocking)."""


class NotFoundError(DomainError):
    """The target (a message, or a read receipt's event) is not in the thread."""
