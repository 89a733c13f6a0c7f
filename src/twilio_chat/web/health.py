"""Health and metrics: /healthz (the process answers), /readyz (ready for traffic), /metrics."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import func, select, text

from twilio_chat.db.engine import get_db
from twilio_chat.db.migrate import is_current
from twilio_chat.db.models import WorkerHeartbeat, utcnow
from twilio_chat.telemetry import metrics
from twilio_chat.web.auth import public, requires_scope

bp = Blueprint("health", __name__)
HEARTBEAT_FRESH = timedelta(seconds=60)


@bp.get("/healthz")
@public("liveness probe; says nothing but 'ok'")
def healthz() -> Response:
    """Answer that the process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@public("readiness probe; says only which checks pass")
def readyz() -> tuple[Response, int]:
    """Check the database answers, migrations are current, and a worker's heartbeat is fresh."""
    db = get_db()
    checks: dict[str, str] = {}
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
            seen = session.scalar(select(func.max(WorkerHeartbeat.seen_at)))
        checks["database"] = "ok"
        checks["migrations"] = "ok" if _migrations_current() else "pending: run twilio-chat prepare"
        if seen is not None and utcnow() - seen <= HEARTBEAT_FRESH:
            checks["worker"] = "ok"
        else:
            checks["worker"] = "no worker heartbeat in the last minute"
    except Exception as exc:  # the database is away: say so, do not crash
        checks["database"] = f"unreachable ({type(exc).__name__})"
    ready = all(v == "ok" for v in checks.values()) and len(checks) == 3
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), (
        200 if ready else 503
    )


def _migrations_current() -> bool:
    cache = current_app.extensions.setdefault("migrations_current", {})
    if not cache.get("ok"):
        cache["ok"] = is_current(get_db())  # once current, it stays so for this code
    return bool(cache["ok"])


@bp.get("/metrics")
@requires_scope("read")
def prometheus() -> Response:
    """Prometheus metrics (needs a bearer token with the read scope)."""
    settings = current_app.extensions["settings"]
    body = metrics.render(get_db(), settings.prometheus_multiproc_dir)
    return Response(body, mimetype=metrics.CONTENT_TYPE.split(";")[0])
