"""Errors the services raise; the web layer turns them into JSON with a fitting status."""

from __future__ import annotations


class AppError(Exception):
    """A failure a user can act on: a code, a readable message, the field at fault."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None, code: str | int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code  # type: ignore[assignment]


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

    def __init__(self, message: str, twilio_code: int | None, twilio_status: int | None):
        super().__init__(message, field=None, code=twilio_code if twilio_code else None)
        self.twilio_code = twilio_code
        self.twilio_status = twilio_status
