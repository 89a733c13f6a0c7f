"""Errors the services raise; the web layer turns them into JSON with a fitting status.

Messages are English templates with named ``%(name)s`` parameters, marked with ``N_`` so the
translation catalog picks them up; the web layer renders them in the request's language.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def N_(message: str) -> str:
    """Mark a message for translation without translating it here."""
    return message


class AppError(Exception):
    """A failure a user can act on: a code, a readable message, the field at fault."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        field: str | None = None,
        code: str | int | None = None,
        **params: Any,
    ) -> None:
        self.template = message
        self.params = params
        self.message = message % params if params else message
        super().__init__(self.message)
        self.field = field
        if code is not None:
            self.code = code  # type: ignore[assignment]

    def localized(self, gettext: Callable[[str], str]) -> str:
        """Render the message in another language with the given gettext."""
        text = gettext(self.template)
        try:
            return text % self.params if self.params else text
        except (KeyError, ValueError, TypeError):
            return self.message


class InvalidInput(AppError):
    """The request carried a missing or bad value (400)."""

    status = 400
    code = "invalid"


class NotFound(AppError):
    """The thing asked for does not exist (404)."""

    status = 404
    code = "not_found"


class OptedOut(AppError):
    """The recipient opted out of our messages (409)."""

    status = 409
    code = "opted_out"


class Upstream(AppError):
    """Twilio refused or could not be reached (502); `code` is Twilio's when it gave one."""

    status = 502
    code = "twilio_error"

    def __init__(
        self,
        message: str,
        twilio_code: int | None,
        twilio_status: int | None,
        **params: Any,
    ) -> None:
        super().__init__(message, None, twilio_code if twilio_code else None, **params)
        self.twilio_code = twilio_code
        self.twilio_status = twilio_status
