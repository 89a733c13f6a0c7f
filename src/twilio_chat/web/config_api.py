"""API for the reply configurations, the AI connection test and conversation pauses."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from werkzeug.wrappers import Response

from twilio_chat.accounts import audit
from twilio_chat.db.engine import get_db
from twilio_chat.errors import AppError, InvalidInput
from twilio_chat.inbox import conversations
from twilio_chat.replies import ai
from twilio_chat.replies import config as reply_config
from twilio_chat.settings import Settings, is_e164
from twilio_chat.web.api import json_body, str_field
from twilio_chat.web.auth import requires_scope

bp = Blueprint("config_api", __name__, url_prefix="/api")


def _settings() -> Settings:
    settings: Settings = current_app.extensions["settings"]
    return settings


def _configs() -> dict[str, dict[str, object]]:
    """Both configs as the API shows them; each says whether the other mode is on."""
    with get_db().read() as session:
        auto = reply_config.get_auto_reply(session)
        ai_config = reply_config.get_ai(session, _settings())
        mode = reply_config.current_mode(session, _settings())
    auto_json: dict[str, object] = {
        "enabled": auto.enabled,
        "message": auto.message,
        "max_length": reply_config.AUTO_REPLY_MAX,
        "ai_enabled": ai_config.enabled,
        "active_mode": mode,
    }
    ai_json: dict[str, object] = {
        **ai_config.public_json(),
        "auto_reply_enabled": auto.enabled,
        "active_mode": mode,
    }
    return {"auto_reply": auto_json, "ai": ai_json}


@bp.get("/auto-reply/config")
@requires_scope("read")
def auto_reply_get() -> Response:
    """Return the auto-reply config."""
    return jsonify(_configs()["auto_reply"])


@bp.post("/auto-reply/config")
@requires_scope("admin")
def auto_reply_save() -> Response:
    """Save the auto-reply config (enabling it switches AI off)."""
    data = json_body()
    reply_config.save_auto_reply(get_db(), _settings(), data)
    audit.record(get_db(), "config_auto_reply", None, {"fields": sorted(data)})
    return jsonify(_configs()["auto_reply"])


@bp.get("/ai/config")
@requires_scope("read")
def ai_get() -> Response:
    """Return the AI config; the key only as a masked hint."""
    return jsonify(_configs()["ai"])


@bp.post("/ai/config")
@requires_scope("admin")
def ai_save() -> Response:
    """Save the AI config (enabling it switches the auto-reply off)."""
    data = json_body()
    reply_config.save_ai(get_db(), _settings(), data)
    audit.record(get_db(), "config_ai", None, {"fields": sorted(data)})  # names, never values
    return jsonify(_configs()["ai"])


class AITestFailed(AppError):
    """The model could not answer the test (502, or 400 when no key is set)."""

    status = 502


@bp.post("/ai/test")
@requires_scope("admin")
def ai_test() -> Response:
    """Ask the model with the saved config and return its answer; nothing is sent."""
    data = json_body()
    message = str_field(data, "message") or "Hello! This is a connection test."
    if len(message) > 1600:
        raise InvalidInput("'message' must be at most 1600 characters", field="message")
    with get_db().read() as session:
        config = reply_config.get_ai(session, _settings())
    turns = [ai.ChatTurn("system", config.system_prompt)] if config.system_prompt else []
    turns.append(ai.ChatTurn("user", message))
    try:
        answer = ai.complete(config, turns, _settings().ai_timeout_seconds)
    except ai.AIError as exc:
        if exc.kind == "no_key":
            raise InvalidInput(exc.message, field="api_key", code="ai_no_key") from None
        raise AITestFailed(exc.message, code=f"ai_{exc.kind}") from None
    return jsonify({"ok": True, "model": config.model, "answer": answer})


@bp.post("/conversations/<participant>/pause")
@requires_scope("send")
def pause(participant: str) -> Response:
    """Pause automatic replies in a conversation (`minutes`, default AI_HUMAN_PAUSE_MINUTES)."""
    if not is_e164(participant):
        raise InvalidInput("participant must be a phone number in E.164 form", "participant")
    data = json_body()
    minutes = data.get("minutes", _settings().ai_human_pause_minutes or 60)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 525600:
        raise InvalidInput("'minutes' must be a whole number from 1 to 525600", field="minutes")
    until = conversations.set_pause(get_db(), participant, minutes)
    audit.record(get_db(), "pause", participant, {"minutes": minutes})
    return jsonify(
        {"participant": participant, "replies_paused_until": until and until.isoformat()}
    )


@bp.post("/conversations/<participant>/resume")
@requires_scope("send")
def resume(participant: str) -> Response:
    """Resume automatic replies in a conversation."""
    if not is_e164(participant):
        raise InvalidInput("participant must be a phone number in E.164 form", "participant")
    conversations.set_pause(get_db(), participant, None)
    audit.record(get_db(), "resume", participant)
    return jsonify({"participant": participant, "replies_paused_until": None})
