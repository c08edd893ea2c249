"""Domain errors; each carries its wire code (protocol.md, Errors)."""

from __future__ import annotations


class DomainError(Exception):
    code = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidError(DomainError):
    code = "invalid"


class ForbiddenError(DomainError):
    code = "forbidden"


class NotFoundError(DomainError):
    code = "not_found"
