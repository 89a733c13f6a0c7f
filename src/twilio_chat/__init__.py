"""Twilio Chat: a self-hosted SMS inbox and auto-responder on top of Twilio."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from flask_openapi3.openapi import OpenAPI
from werkzeug.middleware.proxy_fix import ProxyFix

from twilio_chat.settings import Settings, load_settings

__all__ = ["create_app"]

MAX_REQUEST_BYTES = 1024 * 1024


class App(OpenAPI):
    """Flask with flask-openapi3's contract: the OpenAPI document is made from the routes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._doc_lock = threading.Lock()

    @property
    def api_doc(self) -> dict[str, Any]:
        """Return the OpenAPI document, written by the first request that asks, once."""
        with self._doc_lock:  # request threads: one writes it, the others wait for it
            doc: dict[str, Any] = super().api_doc
            return doc

    def generate_spec_json(self) -> None:
        """Write the OpenAPI document, listing a 400 answer only where an operation declares it.

        flask-openapi3 adds one to every operation, as a list of errors; ours is one error,
        declared by the operations that take input (web.contract.error_answers).
        """
        super().generate_spec_json()  # type: ignore[no-untyped-call]
        for item in self.spec_json["paths"].values():
            for operation in item.values():
                answer = operation["responses"].get("400", {})
                schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
                if schema.get("type") == "array":
                    del operation["responses"]["400"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app for these settings: wiring only, no I/O, no threads."""
    from twilio_chat import web
    from twilio_chat.db import engine as db
    from twilio_chat.inbox import tasks as inbox_tasks
    from twilio_chat.jobs import tasks
    from twilio_chat.messaging import tasks as messaging_tasks
    from twilio_chat.replies import tasks as reply_tasks
    from twilio_chat.telemetry import logs
    from twilio_chat.twilio import gateway as twilio_gateway
    from twilio_chat.web.contract import openapi_options

    settings = settings or load_settings()
    app = App(
        __name__,
        template_folder="web/templates",
        static_folder="web/static",
        **openapi_options(settings),
    )
    app.extensions["settings"] = settings
    production = settings.app_env == "production"
    app.config.update(
        SECRET_KEY=settings.secret_bytes,
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_REQUEST_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=production,
        DEBUG=settings.app_debug and not production,
    )
    if settings.trusted_proxy_count:
        n = settings.trusted_proxy_count
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n
        )
    logs.init_app(app, settings)
    db.init_app(app, settings)
    twilio_gateway.init_app(app, settings)
    tasks.init_app(app, [reply_tasks.TASKS, messaging_tasks.TASKS, inbox_tasks.TASKS])
    if settings.sandbox:
        from twilio_chat import sandbox

        sandbox.init_app(app, settings)
    web.init_app(app, sandbox=settings.sandbox, production=production)
    return app
