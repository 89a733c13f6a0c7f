"""API for the reply configurations, the AI connection test and conversation pauses."""

from __future__ import annotations

import dataclasses

from flask import current_app
from flask_openapi3.blueprint import APIBlueprint
from werkzeug.wrappers import Response

from twilio_chat.accounts import audit
from twilio_chat.db.engine import get_db
from twilio_chat.errors import AppError, InvalidInput
from twilio_chat.inbox import conversations
from twilio_chat.replies import ai
from twilio_chat.replies import config as reply_config
from twilio_chat.settings import Settings
from twilio_chat.web.auth import requires_scope
from twilio_chat.web.contract import CONVERSATIONS_TAG, REPLIES_TAG, error_answers
from twilio_chat.web.schemas.answers import (
    AIConfig,
    AITestAnswer,
    Automation,
    AutoReplyConfig,
    PauseAnswer,
)
from twilio_chat.web.schemas.requests import (
    AIConfigBody,
    AITestBody,
    AutoReplyBody,
    ModeBody,
    ParticipantPath,
    PauseBody,
)
from twilio_chat.web.serialize import answer

bp = APIBlueprint("config_api", __name__, url_prefix="/api")
# An AI error that is the config's fault: 400 naming the field to fix.
AI_CONFIG_FIELDS = {"no_key": "api_key", "bad_key": "api_key", "bad_base_url": "base_url"}
# What the audit log records of a config's save: each of these that changed, old -> new (the
# AI's key only as changed, through its masked hint).
AUTO_REPLY_AUDITED = tuple(f.name for f in dataclasses.fields(reply_config.AutoReply))
AI_AUDITED = tuple(name for name in reply_config.AI_FIELDS if name != "api_key")


def _settings() -> Settings:
    settings: Settings = current_app.extensions["settings"]
    return settings


def _configs() -> tuple[AutoReplyConfig, AIConfig]:
    """Both configs as the API shows them; each says whether the other mode is on."""
    with get_db().read() as session:
        auto = reply_config.get_auto_reply(session)
        ai_config = reply_config.get_ai(session, _settings())
        mode = reply_config.current_mode(session, _settings())
    auto_reply = AutoReplyConfig.model_validate(
        {
            "enabled": auto.enabled,
            "message": auto.message,
            "max_length": reply_config.AUTO_REPLY_MAX,
            "window_hours": auto.window_hours,
            "outside_hours_only": auto.outside_hours_only,
            "business_hours": auto.business_hours,
            "ai_enabled": ai_config.enabled,
            "active_mode": mode,
        }
    )
    ai_json = AIConfig.model_validate(
        {**ai_config.public_json(), "auto_reply_enabled": auto.enabled, "active_mode": mode}
    )
    return auto_reply, ai_json


def _automation() -> Automation:
    """Who answers now, as the API shows it."""
    with get_db().read() as session:
        row = reply_config.mode_since(session)
        return Automation(
            mode=reply_config.current_mode(session, _settings()),
            chosen=reply_config.is_chosen(session),
            since=row.since if row is not None else None,
            modes=reply_config.available_modes(),
        )


@bp.get(
    "/automation",
    tags=REPLIES_TAG,
    operation_id="getAutomation",
    responses={200: Automation, **error_answers(401, 403)},
)
@requires_scope("read")
def automation_get() -> Response:
    """Return who answers texts automatically now (the mode) and the modes one may choose."""
    return answer(_automation())


@bp.post(
    "/automation",
    tags=REPLIES_TAG,
    operation_id="chooseMode",
    responses={200: Automation, **error_answers(400, 401, 403)},
)
@requires_scope("admin")
def automation_choose(body: ModeBody) -> Response:
    """Choose who answers texts automatically from now on (off: nobody, the inbox only)."""
    before = _automation().mode
    reply_config.choose_mode(get_db(), _settings(), body.mode)
    audit.record(get_db(), "automation_mode", None, {"mode": [before, body.mode]})
    return answer(_automation())


@bp.get(
    "/auto-reply/config",
    tags=REPLIES_TAG,
    operation_id="getAutoReply",
    responses={200: AutoReplyConfig, **error_answers(401, 403)},
)
@requires_scope("read")
def auto_reply_get() -> Response:
    """Return the auto-reply config."""
    return answer(_configs()[0])


@bp.post(
    "/auto-reply/config",
    tags=REPLIES_TAG,
    operation_id="saveAutoReply",
    responses={200: AutoReplyConfig, **error_answers(400, 401, 403)},
)
@requires_scope("admin")
def auto_reply_save(body: AutoReplyBody) -> Response:
    """Save the auto-reply config; `enabled` chooses the auto-reply mode (false: off)."""
    before = _configs()[0]
    reply_config.save_auto_reply(get_db(), _settings(), body.model_dump(exclude_unset=True))
    after = _configs()[0]
    changed = audit.changes(before.model_dump(), after.model_dump(), AUTO_REPLY_AUDITED)
    audit.record(get_db(), "config_auto_reply", None, {"changes": changed})
    return answer(after)


@bp.get(
    "/ai/config",
    tags=REPLIES_TAG,
    operation_id="getAIConfig",
    responses={200: AIConfig, **error_answers(401, 403)},
)
@requires_scope("read")
def ai_get() -> Response:
    """Return the AI config; the key only as a masked hint."""
    return answer(_configs()[1])


@bp.post(
    "/ai/config",
    tags=REPLIES_TAG,
    operation_id="saveAIConfig",
    responses={200: AIConfig, **error_answers(400, 401, 403)},
)
@requires_scope("admin")
def ai_save(body: AIConfigBody) -> Response:
    """Save the AI config; `enabled` chooses the AI mode (false: off)."""
    before = _configs()[1]
    reply_config.save_ai(get_db(), _settings(), body.model_dump(exclude_unset=True))
    after = _configs()[1]
    changed = audit.changes(  # the key never: only that it changed
        before.model_dump(), after.model_dump(), AI_AUDITED, {"api_key_hint": "api_key"}
    )
    audit.record(get_db(), "config_ai", None, {"changes": changed})
    return answer(after)


class AITestFailed(AppError):
    """The model could not answer the test (502)."""

    status = 502


@bp.post(
    "/ai/test",
    tags=REPLIES_TAG,
    operation_id="testAI",
    responses={200: AITestAnswer, **error_answers(400, 401, 403, 502)},
)
@requires_scope("admin")
def ai_test(body: AITestBody) -> Response:
    """Ask the model and return its answer; nothing is sent.

    The saved AI settings, with any given in the body in their place: a form tests its
    values before they are saved. An API key left out or empty is the saved one.
    """
    given = body.model_dump(exclude_unset=True)
    message = given.pop("message", None) or "Hello! This is a connection test."
    given.pop("enabled", None)
    if not given.get("api_key"):
        given.pop("api_key", None)
    with get_db().read() as session:
        config = dataclasses.replace(reply_config.get_ai(session, _settings()), **given)
    turns = [ai.ChatTurn("system", config.system_prompt)] if config.system_prompt else []
    turns.append(ai.ChatTurn("user", message))
    try:
        reply = ai.complete(config, turns, _settings().ai_timeout_seconds)
    except ai.AIError as exc:
        field = AI_CONFIG_FIELDS.get(exc.kind)
        if field:
            raise InvalidInput(exc.template, field, f"ai_{exc.kind}", **exc.params) from None
        raise AITestFailed(exc.template, None, f"ai_{exc.kind}", **exc.params) from None
    return answer(AITestAnswer(ok=True, model=config.model, answer=reply))


@bp.post(
    "/conversations/<participant>/pause",
    tags=CONVERSATIONS_TAG,
    operation_id="pauseConversation",
    responses={200: PauseAnswer, **error_answers(400, 401, 403)},
)
@requires_scope("send")
def pause(path: ParticipantPath, body: PauseBody) -> Response:
    """Pause automatic replies in a conversation (`minutes`, default AI_HUMAN_PAUSE_MINUTES)."""
    if "minutes" in body.model_fields_set:
        minutes = body.minutes
    else:
        minutes = _settings().ai_human_pause_minutes or 60
    until = conversations.set_pause(get_db(), path.participant, minutes)
    audit.record(get_db(), "pause", path.participant, {"minutes": minutes})
    return answer(PauseAnswer(participant=path.participant, replies_paused_until=until))


@bp.post(
    "/conversations/<participant>/resume",
    tags=CONVERSATIONS_TAG,
    operation_id="resumeConversation",
    responses={200: PauseAnswer, **error_answers(400, 401, 403)},
)
@requires_scope("send")
def resume(path: ParticipantPath) -> Response:
    """Resume automatic replies in a conversation."""
    conversations.set_pause(get_db(), path.participant, None)
    audit.record(get_db(), "resume", path.participant)
    return answer(PauseAnswer(participant=path.participant, replies_paused_until=None))
