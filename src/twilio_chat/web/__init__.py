"""The web layer: webhooks, REST API, panel, auth and error handlers."""

from __future__ import annotations

from flask import Flask, Response, jsonify

from . import api, auth, config_api, errors, panel, webhooks
from .auth import public


@public("liveness probe; says nothing but 'ok'")
def healthz() -> Response:
    """Answer that the process is up."""
    return jsonify({"status": "ok"})


def init_app(app: Flask, sandbox: bool) -> None:
    """Register blueprints, the auth guard and error handlers."""
    auth.init_app(app)
    errors.init_app(app)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(config_api.bp)
    app.register_blueprint(panel.bp)
    app.add_url_rule("/healthz", "healthz", healthz)
    if sandbox:
        from ..sandbox.routes import bp as sandbox_bp

        app.register_blueprint(sandbox_bp)
