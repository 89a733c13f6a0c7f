"""The JSON REST API: routes parse, authorize, call one service, and serialize."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from werkzeug.wrappers import Response

from twilio_chat import messaging
from twilio_chat.accounts import audit
from twilio_chat.db.engine import get_db
from twilio_chat.errors import N_, InvalidInput, NotFound
from twilio_chat.inbox import conversations, stats, sync
from twilio_chat.sandbox import get_sandbox
from twilio_chat.settings import Settings, is_e164
from twilio_chat.twilio.gateway import get_gateway
from twilio_chat.web.auth import current_identity, public, requires_admin, requires_scope
from twilio_chat.web.openapi import build_spec
from twilio_chat.web.serialize import conversation_json, event_json, message_json

bp = Blueprint("api", __name__, url_prefix="/api")


# Parsing helpers -----------------------------------------------------------------------


def json_body() -> dict[str, Any]:
    """Return the request's JSON object (or form fields), or raise InvalidInput."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise InvalidInput("the request body must be a JSON object", field=None)
        return data
    return {k: (v if len(v) > 1 else v[0]) for k, v in request.form.lists()}


def int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    """Read an integer query parameter within [low, high]."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"'{name}' must be an integer, got {raw!r}", field=name) from None
    if not low <= value <= high:
        raise InvalidInput(f"'{name}' must be between {low} and {high}", field=name)
    return value


def str_field(data: dict[str, Any], name: str) -> str:
    """Read an optional string field."""
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be a string", field=name)
    return value.strip() if name != "body" else value


def bool_field(data: dict[str, Any], name: str) -> bool:
    """Read an optional boolean field (JSON true/false, or true/false/1/0 in forms)."""
    value = data.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "true",
        "1",
        "yes",
        "on",
        "false",
        "0",
        "no",
        "off",
        "",
    ):
        return value.lower() in ("true", "1", "yes", "on")
    raise InvalidInput(f"'{name}' must be true or false", field=name)


def list_field(data: dict[str, Any], name: str) -> list[str]:
    """Read a list of strings (a JSON array, a repeated form field, or one string)."""
    value = data.get(name)
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise InvalidInput(f"'{name}' must be a list of URLs", field=name)


def number_arg(name: str) -> str | None:
    """Read an optional E.164 number from the query string."""
    value = request.args.get(name) or None
    if value is not None and not is_e164(value):
        raise InvalidInput(f"'{name}' must be a phone number in E.164 form", field=name)
    return value


def when_arg(name: str) -> datetime | None:
    """Read an optional ISO 8601 date or datetime from the query string."""
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"'{name}' must be a date (YYYY-MM-DD) or ISO 8601 time, got {raw!r}", field=name
        ) from None
    # The twilio SDK formats the clock time and appends Z: hand it UTC.
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["settings"]
    return settings


# Routes -----------------------------------------------------------------------------------


@bp.post("/send-message")
@requires_scope("send")
def send_message() -> tuple[Response, int]:
    """Send an SMS/MMS."""
    data = json_body()
    req = messaging.SendRequest(
        to=str_field(data, "to"),
        body=str_field(data, "body"),
        media_urls=list_field(data, "media_urls"),
        content_sid=str_field(data, "content_sid") or None,
        messaging_service_sid=str_field(data, "messaging_service_sid") or None,
        use_messaging_service=bool_field(data, "use_messaging_service"),
        source="panel" if current_identity().via == "session" else "api",
    )
    message = messaging.send(get_db(), get_gateway(), _settings(), req)
    audit.record(get_db(), "send", req.to, {"sid": message.sid, "source": req.source})
    return jsonify({"message": message_json(message)}), 201


@bp.get("/messages")
@requires_scope("read")
def messages() -> Response:
    """List stored messages, newest first, filtered as the dashboard filters them."""
    direction = request.args.get("direction") or None
    if direction not in (None, "inbound", "outbound"):
        raise InvalidInput("'direction' must be inbound or outbound", field="direction")
    status = request.args.get("status") or None
    if status is not None and status not in messaging.STATUS_RANK:
        known = ", ".join(sorted(messaging.STATUS_RANK))
        raise InvalidInput(f"'status' must be one of {known}, got {status!r}", field="status")
    text = request.args.get("text", "").strip() or None
    if text is not None and len(text) > conversations.MAX_SEARCH:
        raise InvalidInput(
            f"'text' must be at most {conversations.MAX_SEARCH} characters", field="text"
        )
    limit = int_arg("limit", 50, 1, 500) or 50
    page = conversations.list_messages(
        get_db(),
        limit,
        direction,
        int_arg("before", None, 1, 2**62),
        status=status,
        number=number_arg("number"),
        text=text,
    )
    return jsonify(
        {"messages": [message_json(m) for m in page.items], "next_cursor": page.next_cursor}
    )


@bp.get("/stats")
@requires_scope("read")
def dashboard_stats() -> Response:
    """Return the dashboard's statistics: counts of today and of the last 7 days."""
    return jsonify({"stats": dataclasses.asdict(stats.dashboard(get_db()))})


@bp.get("/messages/remote")
@requires_scope("read")
def remote_messages() -> Response:
    """List messages as Twilio has them (newest first), storing any we did not have."""
    limit = int_arg("limit", 50, 1, 1000) or 50
    result = sync.sync(
        get_db(),
        get_gateway(),
        _settings(),
        to=number_arg("to"),
        from_=number_arg("from"),
        date_sent=when_arg("date_sent"),
        date_sent_before=when_arg("date_sent_before"),
        date_sent_after=when_arg("date_sent_after"),
        limit=limit,
    )
    return jsonify(
        {
            "messages": [m.to_json() for m in result.messages],
            "stored": {
                "inserted": result.inserted,
                "updated": result.updated,
                "replies_enqueued": result.replies_enqueued,
            },
        }
    )


@bp.get("/messages/<sid>")
@requires_scope("read")
def message_detail(sid: str) -> Response:
    """Return one message with its status events (or Twilio's record of it)."""
    detail = conversations.get_message(get_db(), get_gateway(), sid)
    if detail.local is not None:
        body = message_json(detail.local)
        body["events"] = [event_json(e) for e in detail.events]
        return jsonify({"message": body, "stored": True})
    assert detail.remote is not None
    return jsonify({"message": detail.remote.to_json(), "stored": False})


@bp.post("/messages/<sid>/redact")
@requires_scope("admin")
def redact(sid: str) -> Response:
    """Erase a message's body at Twilio and here."""
    local = conversations.redact_message(get_db(), get_gateway(), sid)
    audit.record(get_db(), "redact", sid)
    return jsonify(
        {"redacted": True, "sid": sid, "message": message_json(local) if local else None}
    )


@bp.delete("/messages/<sid>")
@requires_scope("admin")
def delete(sid: str) -> Response:
    """Delete a message at Twilio and here."""
    conversations.delete_message(get_db(), get_gateway(), sid)
    audit.record(get_db(), "delete", sid)
    return jsonify({"deleted": True, "sid": sid})


@bp.get("/conversations")
@requires_scope("read")
def conversation_list() -> Response:
    """List conversations, latest activity first."""
    limit = int_arg("limit", 50, 1, 200) or 50
    page = conversations.list_conversations(get_db(), limit, int_arg("before", None, 1, 2**62))
    return jsonify(
        {
            "conversations": [conversation_json(c) for c in page.items],
            "next_cursor": page.next_cursor,
        }
    )


@bp.get("/conversations/<participant>")
@requires_scope("read")
def conversation(participant: str) -> Response:
    """Return one conversation's latest messages, oldest first."""
    if not is_e164(participant):
        raise InvalidInput("participant must be a phone number in E.164 form", "participant")
    limit = int_arg("limit", 100, 1, 500) or 100
    thread = conversations.get_thread(
        get_db(), participant, limit, int_arg("before", None, 1, 2**62)
    )
    return jsonify(
        {
            "conversation": conversation_json(thread.summary),
            "messages": [message_json(m) for m in thread.messages],
            "next_cursor": thread.next_cursor,
        }
    )


@bp.post("/conversations/<participant>/contact")
@requires_scope("send")
def contact(participant: str) -> Response:
    """Name (or unname, with an empty name) the contact of a conversation."""
    if not is_e164(participant):
        raise InvalidInput("participant must be a phone number in E.164 form", "participant")
    name = str_field(json_body(), "name")
    if len(name) > 120:
        raise InvalidInput(N_("The name must be at most 120 characters."), field="name")
    row = conversations.set_name(get_db(), participant, name or None)
    audit.record(get_db(), "contact_name", participant, {"name": row.name})
    return jsonify({"participant": participant, "name": row.name})


@bp.post("/sandbox/simulate")
@requires_scope("send")
def simulate() -> tuple[Response, int]:
    """Text the app from the sandbox's simulated handset (sandbox mode only)."""
    if not _settings().sandbox:
        raise NotFound("the phone simulator exists only in sandbox mode")
    data = json_body()
    result = get_sandbox().simulate_inbound(
        str_field(data, "from"),
        str_field(data, "body"),
        list_field(data, "media_urls"),
        str_field(data, "to") or None,
    )
    return jsonify(result), 201


@bp.get("/audit")
@requires_admin
def audit_log() -> Response:
    """The audit log, newest first (admins only)."""
    limit = int_arg("limit", 100, 1, 500) or 100
    events = audit.latest(get_db(), limit, int_arg("before", None, 1, 2**62))
    return jsonify(
        {
            "events": [
                {
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "detail": e.detail,
                    "ip": e.ip,
                }
                for e in events
            ],
            "next_cursor": events[-1].id if len(events) == limit else None,
        }
    )


@bp.get("/openapi.json")
@public("describes the API; holds no data")
def openapi() -> Response:
    """Return the OpenAPI description of this API."""
    return jsonify(build_spec(_settings()))
