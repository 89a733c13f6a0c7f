"""Twilio's webhooks: verify the signature, store, enqueue, and answer at once.

Twilio does not retry a webhook answered 5xx: when the database cannot take one, it is spooled
to a local file (see spool.py), answered 200, and stored by a worker once the database is back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Blueprint, Response, abort, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from twilio_chat import messaging
from twilio_chat.db.engine import get_db
from twilio_chat.messaging.writer import get_writer
from twilio_chat.settings import Settings
from twilio_chat.telemetry.metrics import DELIVERIES, WEBHOOKS
from twilio_chat.twilio import spool
from twilio_chat.twilio.gateway import get_gateway
from twilio_chat.web.auth import public

log = logging.getLogger(__name__)
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


def _require(kind: str, form: Mapping[str, str], *fields: str) -> None:
    missing = [f for f in fields if not form.get(f)]
    if missing:
        WEBHOOKS.labels(kind, "bad_request").inc()
        abort(400, f"missing {', '.join(missing)}")


def _twiml() -> Response:
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


def _spool(kind: str, error: SQLAlchemyError) -> Response:
    """Keep a webhook the database could not take in the spool and acknowledge it.

    If even the spool cannot be written, answer 503: Twilio will not retry it, but a 200 would
    claim a text was kept that is lost.
    """
    settings: Settings = current_app.extensions["settings"]
    sid = request.form.get("MessageSid", "")
    reason = type(getattr(error, "orig", None) or error).__name__
    try:
        spool.append(settings.spool_path, kind, request.form, request.args)
    except OSError as exc:
        WEBHOOKS.labels(kind, "spool_failed").inc()
        log.error(
            "database unavailable (%s) and the spool cannot be written (%s: %s); "
            "%s webhook %s answered 503",
            reason,
            type(exc).__name__,
            exc.strerror or exc,
            kind,
            sid,
        )
        abort(503, "the database is unavailable and the webhook could not be kept")
    WEBHOOKS.labels(kind, "spooled").inc()
    log.warning("database unavailable (%s); %s webhook %s spooled for replay", reason, kind, sid)
    return _twiml()


@bp.post("/inbound")
@public("Twilio request signature")
def inbound() -> Response:
    """Store an inbound message (once per MessageSid) and enqueue its answer."""
    verify_signature("inbound")
    form = request.form.to_dict()  # the first value of each: a MultiDict raises on a miss
    _require("inbound", form, "MessageSid", "From")
    try:
        writer = get_writer(current_app, get_db(), current_app.extensions["settings"])
        result = writer.store(messaging.inbound_fields(form))
    except SQLAlchemyError as exc:
        if not spool.database_unavailable(exc):
            raise
        return _spool("inbound", exc)
    WEBHOOKS.labels("inbound", "stored" if result.created else "duplicate").inc()
    return _twiml()


@bp.post("/status")
@public("Twilio request signature")
def status() -> Response:
    """Record a delivery status callback."""
    verify_signature("status")
    _require("status", request.form, "MessageSid")
    if not (request.form.get("MessageStatus") or request.form.get("SmsStatus")):
        WEBHOOKS.labels("status", "bad_request").inc()
        abort(400, "missing MessageStatus")
    try:
        known = messaging.record_status(
            get_db(), request.form, spool.parse_mid(request.args.get("mid"))
        )
    except SQLAlchemyError as exc:
        if not spool.database_unavailable(exc):
            raise
        answer = _spool("status", exc)
    else:
        WEBHOOKS.labels("status", "stored" if known else "unmatched").inc()
        answer = _twiml()
    status_name = (request.form.get("MessageStatus") or request.form.get("SmsStatus") or "").lower()
    DELIVERIES.labels(status_name, request.form.get("ErrorCode") or "").inc()
    return answer
