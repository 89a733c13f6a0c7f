"""The web layer: webhooks, REST API, panel, auth and error handlers."""

from __future__ import annotations

from flask import Flask
from flask_bootstrap import Bootstrap5

from twilio_chat.web import (
    api,
    auth,
    config_api,
    errors,
    health,
    i18n,
    live,
    panel,
    security,
    webhooks,
)

bootstrap = Bootstrap5()


def init_app(app: Flask, sandbox: bool, production: bool) -> None:
    """Register blueprints, the auth guard, languages, security headers and error handlers."""
    app.config.setdefault("BOOTSTRAP_SERVE_LOCAL", True)  # the panel works with no internet
    bootstrap.init_app(app)
    auth.init_app(app)
    errors.init_app(app)
    i18n.init_app(app)
    security.init_app(app, production)
    app.register_blueprint(live.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(config_api.bp)
    app.register_blueprint(panel.bp)
    app.register_blueprint(health.bp)
    if sandbox:
        from twilio_chat.web.sandbox import bp as sandbox_bp

        app.register_blueprint(sandbox_bp)
