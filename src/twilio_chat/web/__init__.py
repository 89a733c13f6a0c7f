"""The web layer: webhooks, REST API, panel, auth and error handlers."""

from __future__ import annotations

from flask_bootstrap import Bootstrap5
from flask_openapi3.openapi import OpenAPI

from twilio_chat.web import (
    api,
    auth,
    config_api,
    contract,
    errors,
    health,
    i18n,
    live,
    panel,
    security,
    webhooks,
)

bootstrap = Bootstrap5()


def init_app(app: OpenAPI, sandbox: bool, production: bool) -> None:
    """Register blueprints, the auth guard, languages, security headers and error handlers.

    The API's blueprints go through `register_api`, which adds their routes to the OpenAPI
    document.
    """
    app.config.setdefault("BOOTSTRAP_SERVE_LOCAL", True)  # the panel works with no internet
    app.json = contract.JSONProvider(app)
    bootstrap.init_app(app)
    auth.init_app(app)
    errors.init_app(app)
    i18n.init_app(app)
    security.init_app(app, production)
    app.register_api(live.bp)
    app.register_blueprint(webhooks.bp)
    app.register_api(api.bp)
    app.register_api(config_api.bp)
    app.register_blueprint(contract.assets)
    app.register_blueprint(panel.bp)
    app.register_blueprint(health.bp)
    if sandbox:
        from twilio_chat.web.sandbox import bp as sandbox_bp

        app.register_blueprint(sandbox_bp)
        app.register_api(api.sandbox_bp)
