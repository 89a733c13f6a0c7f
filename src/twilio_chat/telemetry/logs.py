"""Logging: JSON lines in production, a request id on every line, secrets scrubbed.

Scrubbing happens when a record is created (a log record factory), so every handler — ours,
gunicorn's, a test's — sees only scrubbed text: every configured secret (auth token, API keys,
passwords, the secret key) and anything shaped like one of our bearer tokens is replaced.
"""

from __future__ import annotations

import logging
import random
import re
import sys
from typing import Any

from flask import Flask, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter
from werkzeug.wrappers import Response

from twilio_chat.settings import Settings

BEARER = re.compile(r"tc_[A-Za-z0-9_\-]{20,}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")  # an X-Request-ID given is kept if it looks so
REDACTED = "[redacted]"
_SECRETS: set[str] = set()
_base_factory = logging.getLogRecordFactory()


def scrub(text: str) -> str:
    """Return `text` without any known secret or bearer token."""
    for secret in _SECRETS:
        text = text.replace(secret, REDACTED)
    return BEARER.sub(REDACTED, text)


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = getattr(g, "request_id", "-") if has_request_context() else "-"
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = str(record.msg)
    record.msg = scrub(message)
    record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
    return record


def secrets_of(settings: Settings) -> list[str]:
    """Return every secret value the settings hold."""
    held = (
        settings.twilio_auth_token,
        settings.openai_api_key,
        settings.secret_key,
        settings.admin_password,
    )
    values = [settings.auth_token, *(s.get_secret_value() for s in held if s is not None)]
    return [v for v in values if v and len(v) >= 6]


def add_secret(value: str | None) -> None:
    """Also scrub this value from logs (e.g. an API key saved in the panel)."""
    if value and len(value) >= 6:
        _SECRETS.add(value)


_installed: list[logging.Handler] = []


def remove_handlers() -> None:
    """Remove the handlers setup_logging() installed."""
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
    _installed.clear()


def setup_logging(settings: Settings) -> None:
    """Log to stderr (JSON lines in production) with request ids and secrets scrubbed."""
    install_scrubbing(settings)
    remove_handlers()
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    if settings.app_env == "production":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    _installed.append(handler)


def install_scrubbing(settings: Settings) -> None:
    """Scrub this app's secrets from every log record created from now on."""
    _SECRETS.update(secrets_of(settings))
    if logging.getLogRecordFactory() is not _record_factory:
        logging.setLogRecordFactory(_record_factory)


def init_app(app: Flask, settings: Settings) -> None:
    """Give each request an id (X-Request-ID, echoed back) and scrub secrets from logs."""
    install_scrubbing(settings)

    @app.before_request
    def _request_id() -> None:
        given = request.headers.get("X-Request-ID", "")
        # An id only has to be unique, not secret: no system call (os.urandom) per request,
        # which gives the interpreter up to the process's other request threads.
        g.request_id = given if REQUEST_ID.fullmatch(given) else f"{random.getrandbits(128):032x}"

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        return response
