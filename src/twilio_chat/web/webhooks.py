"""Twilio's webhooks: verify the signature, store, enqueue, and answer at once."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request

from .. import messaging
from ..db import get_db
from ..metrics import DELIVERIES, WEBHOOKS
from ..settings import Settings
from ..twilio_gateway import get_gateway
from .auth import public

bp = Blueprint("webhooks", __name__, url_prefix="/twilio")
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'


def public_url() -> str:
    """Return the URL Twilio called: from PUBLIC_BASE_URL, or the proxied request when trusted."""
    settings: Settings = current_app.extensions["settings"]
    query = request.query_string.decode("latin-1")  # raw, exactly as sent: never re-encoded
    suffix = request.path + (f"?{query}" if query else "")
    if settings.trusted_proxy_count:
        return request.root_url.rstrip("/") + suffix  # ProxyFix rebuilt it from X-Forwarded-*
    return settings.base_url + suffix


def verify_signature(kind: str) -> None:
    """Abort with 403 unless X-Twilio-Signature is valid (or checking is switched off)."""
    settings: Settings = current_app.extensions["settings"]
    form = request.form  # reading it first makes an oversized body answer 413
    if not settings.twilio_validate_signature:
        return
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not get_gateway().validate_signature(public_url(), form, signature):
        WEBHOOKS.labels(kind, "bad_signature").inc()
        abort(403, "invalid or missing X-Twilio-Signature")


def _require(kind: str, *fields: str) -> None:
    missing = [f for f in fields if not request.form.get(f)]
    if missing:
        WEBHOOKS.labels(kind, "bad_request").inc()
        abort(400, f"missing {', '.join(missing)}")


def _twiml() -> Response:
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


@bp.post("/inbound")
@public("Twilio request signature")
def inbound() -> Response:
    """Store an inbound message (once per MessageSid) and enqueue its answer."""
    verify_signature("inbound")
    _require("inbound", "MessageSid", "From")
    result = messaging.record_inbound(get_db(), current_app.extensions["settings"], request.form)
    WEBHOOKS.labels("inbound", "stored" if result.created else "duplicate").inc()
    return _twiml()


@bp.post("/status")
@public("Twilio request signature")
def status() -> Response:
    """Record a delivery status callback."""
    verify_signature("status")
    _require("status", "MessageSid")
    if not (request.form.get("MessageStatus") or request.form.get("SmsStatus")):
        WEBHOOKS.labels("status", "bad_request").inc()
        abort(400, "missing MessageStatus")
    mid = request.args.get("mid", "")
    known = messaging.record_status(get_db(), request.form, int(mid) if mid.isdigit() else None)
    WEBHOOKS.labels("status", "stored" if known else "unmatched").inc()
    status_name = (request.form.get("MessageStatus") or request.form.get("SmsStatus") or "").lower()
    DELIVERIES.labels(status_name, request.form.get("ErrorCode") or "").inc()
    return _twiml()
