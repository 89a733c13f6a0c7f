"""Who answers texts automatically (the mode), the auto-reply and AI configurations.

The mode is one of: off (nobody answers; the inbox only), auto_reply, ai, or a chat engine's
name (echo, keywords, or one registered: replies.engines). An operator chooses it in the
panel's Automation page or the API; until then it follows the settings: AI_ENABLED, else
CHAT_MODE, else echo in the sandbox and off with real Twilio credentials, so a fresh install
never answers real customers by itself. Switching the auto-reply or AI on through their own
configs chooses that mode; switching it off there chooses off. Until the AI config is first
saved (panel or API) its values come from the environment (OPENAI_*, AI_*); after that the
stored config wins.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from twilio_chat.db.engine import Database
from twilio_chat.db.models import AIConfig, AutoReplyConfig, ReplyMode, utcnow
from twilio_chat.errors import N_, InvalidInput
from twilio_chat.replies import engines, hours
from twilio_chat.settings import Settings, is_e164, is_http_url
from twilio_chat.telemetry.logs import add_secret

AUTO_REPLY_MAX = 640
DEFAULT_WINDOW_HOURS = 12
MAX_WINDOW_HOURS = 24 * 30
OFF, AUTO_REPLY, AI = "off", "auto_reply", "ai"
DEFAULT_HISTORY_LIMIT = 20
DEFAULT_MAX_SEGMENTS = 3

# AI config field -> the environment variable that seeds it.
AI_ENV = {
    "enabled": "AI_ENABLED",
    "api_key": "OPENAI_API_KEY",
    "model": "OPENAI_MODEL",
    "temperature": "OPENAI_TEMPERATURE",
    "system_prompt": "AI_SYSTEM_PROMPT",
    "target_number": "AI_TARGET_NUMBER",
    "base_url": "OPENAI_BASE_URL",
}
AI_FIELDS = (
    "enabled",
    "api_key",
    "model",
    "temperature",
    "system_prompt",
    "target_number",
    "history_limit",
    "max_segments",
    "base_url",
    "fallback_text",
)


# Encryption of the stored API key --------------------------------------------------------


def _fernet(settings: Settings) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"twilio-chat ai api key"
    ).derive(settings.secret_bytes)
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_secret(settings: Settings, value: str) -> str:
    """Encrypt a secret with a key derived from SECRET_KEY."""
    return _fernet(settings).encrypt(value.encode()).decode()


def decrypt_secret(settings: Settings, token: str) -> str | None:
    """Decrypt a stored secret; None if SECRET_KEY changed since it was stored."""
    try:
        return _fernet(settings).decrypt(token.encode()).decode()
    except InvalidToken:
        return None


def is_usable_api_key(key: str) -> bool:
    """Tell whether a key can go in an HTTP header: printable ASCII, no spaces."""
    return all("!" <= ch <= "~" for ch in key)


def mask(secret: str | None) -> str | None:
    """Return a hint of a secret that does not reveal it (its last 4 characters)."""
    if not secret:
        return None
    return "…" + secret[-4:] if len(secret) >= 12 else "…"


# Reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoReply:
    """The fixed auto-reply, and when it may answer (see replies.policy)."""

    enabled: bool
    message: str
    window_hours: int = DEFAULT_WINDOW_HOURS  # at most once per conversation within (0: always)
    outside_hours_only: bool = False
    business_hours: dict[str, Any] | None = None  # replies.hours


@dataclass(frozen=True)
class AISettings:
    """The effective AI config, with where each value came from."""

    enabled: bool
    api_key: str | None
    model: str
    temperature: float
    system_prompt: str
    target_number: str | None
    history_limit: int
    max_segments: int
    base_url: str | None
    fallback_text: str | None
    sources: dict[str, str]

    def public_json(self) -> dict[str, Any]:
        """Serialize without the key: only a masked hint of it."""
        return {
            "enabled": self.enabled,
            "api_key_set": bool(self.api_key),
            "api_key_hint": mask(self.api_key),
            "model": self.model,
            "temperature": self.temperature,
            "system_prompt": self.system_prompt,
            "target_number": self.target_number,
            "history_limit": self.history_limit,
            "max_segments": self.max_segments,
            "base_url": self.base_url,
            "fallback_text": self.fallback_text,
            "sources": self.sources,
        }


def _remembered(key: str | None) -> str | None:
    """Note a stored key as a secret to scrub from logs, and return it."""
    add_secret(key)
    return key


def get_auto_reply(session: Session) -> AutoReply:
    """Return the auto-reply config (disabled and empty until saved)."""
    row = session.get(AutoReplyConfig, 1)
    if row is None:
        return AutoReply(False, "")
    return AutoReply(
        row.enabled,
        row.message,
        row.window_hours,
        row.outside_hours_only,
        row.business_hours,
    )


def _ai_from_env(settings: Settings) -> AISettings:
    env_set = settings.model_fields_set
    by_alias = {f.alias: name for name, f in Settings.model_fields.items()}
    sources = {}
    for field in AI_FIELDS:
        alias = AI_ENV.get(field)
        sources[field] = "environment" if alias and by_alias[alias] in env_set else "default"
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return AISettings(
        enabled=settings.ai_enabled,
        api_key=key,
        model=settings.openai_model,
        temperature=settings.openai_temperature,
        system_prompt=settings.ai_system_prompt,
        target_number=settings.ai_target_number,
        history_limit=DEFAULT_HISTORY_LIMIT,
        max_segments=DEFAULT_MAX_SEGMENTS,
        base_url=settings.openai_base_url,
        fallback_text=None,
        sources=sources,
    )


def ai_enabled(saved: bool | None, enabled: bool | None, settings: Settings) -> bool:
    """Tell whether AI answers, from the stored row's flags (None, None: no row): get_ai's rule.

    Once saved, the stored switch decides; before that the environment's, unless the row was
    switched off (by enabling the auto-reply).
    """
    if saved:
        return bool(enabled)
    return settings.ai_enabled and enabled is not False


def get_ai(session: Session, settings: Settings) -> AISettings:
    """Return the effective AI config: the stored one once saved, else the environment's."""
    row = session.get(AIConfig, 1)
    if row is None or not row.saved:
        env = _ai_from_env(settings)
        if env.enabled and not ai_enabled(False, None if row is None else row.enabled, settings):
            # Switched off by enabling the auto-reply, before any AI save: that decision holds.
            return AISettings(**{**env.__dict__, "enabled": False})
        return env
    key = (
        _remembered(decrypt_secret(settings, row.api_key_encrypted))
        if row.api_key_encrypted
        else None
    )
    plain = {field: getattr(row, field) for field in AI_FIELDS if field != "api_key"}
    return AISettings(**plain, api_key=key, sources=dict.fromkeys(AI_FIELDS, "stored"))


def available_modes() -> list[str]:
    """Return the modes one may choose: off, auto_reply, ai and every chat engine's name."""
    return [OFF, AUTO_REPLY, AI, *engines.engine_names()]


def default_mode(settings: Settings) -> str:
    """Return the mode before anyone chose one: CHAT_MODE, else echo in the sandbox, else off."""
    if settings.chat_mode:
        return settings.chat_mode
    return "echo" if settings.sandbox else OFF


def current_mode(session: Session, settings: Settings) -> str:
    """Return the mode that answers now: the one chosen, else what the settings say."""
    row = session.get(ReplyMode, 1)
    if row is not None and row.chosen:
        return row.mode
    if get_ai(session, settings).enabled:
        return AI
    if get_auto_reply(session).enabled:
        return AUTO_REPLY
    return default_mode(settings)


def is_chosen(session: Session) -> bool:
    """Tell whether an operator chose the mode (else it follows the settings)."""
    row = session.get(ReplyMode, 1)
    return row is not None and row.chosen


def choose_mode(db: Database, settings: Settings, mode: Any) -> str:
    """Choose who answers from now on; raise InvalidInput (field "mode") for a mode unknown."""
    with db.session() as session:
        _choose(session, settings, mode)
        return mode  # type: ignore[no-any-return]  # _choose checked it is a known name


def _choose(session: Session, settings: Settings, mode: Any) -> None:
    """Choose the mode in the caller's transaction, keeping the configs' switches in step."""
    if not isinstance(mode, str) or mode not in available_modes():
        raise InvalidInput(
            N_("Choose one of: %(choices)s."), field="mode", choices=", ".join(available_modes())
        )
    auto = session.get(AutoReplyConfig, 1)
    if mode == AUTO_REPLY and (auto is None or not auto.message):
        raise InvalidInput(N_("Save an auto-reply message first."), field="mode")
    if auto is not None:
        if mode == AUTO_REPLY and not auto.enabled:
            auto.enabled_at = utcnow()
        auto.enabled = mode == AUTO_REPLY
    if mode == AI:
        _switch_ai_on(session, settings)
    else:
        _switch_ai_off(session, settings)
    row = session.get(ReplyMode, 1)
    if row is None:
        session.add(ReplyMode(id=1, mode=mode, since=utcnow(), chosen=True))
    else:
        if row.mode != mode:
            row.mode = mode
            row.since = utcnow()
        row.chosen = True
    session.flush()


def _note_mode(session: Session, settings: Settings) -> None:
    """Record when the answering mode changed (sync catch-up answers only newer messages)."""
    mode = current_mode(session, settings)
    row = session.get(ReplyMode, 1)
    if row is None:
        try:
            with session.begin_nested():  # another process starting at once may win the race
                session.add(ReplyMode(id=1, mode=mode, since=utcnow()))
            return
        except IntegrityError:
            row = session.get_one(ReplyMode, 1)
    if row.mode != mode:
        row.mode = mode
        row.since = utcnow()


def mode_since(session: Session) -> ReplyMode | None:
    """Return the current mode row (None before the first start)."""
    return session.get(ReplyMode, 1)


def note_start(db: Database, settings: Settings) -> None:
    """Record the reply mode at start (the environment may have switched AI on or off)."""
    with db.session() as session:
        _note_mode(session, settings)


# Writing ------------------------------------------------------------------------------------


def _bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(N_("%(field_name)s must be true or false."), field=name, field_name=name)
    return value


def save_auto_reply(db: Database, settings: Settings, data: dict[str, Any]) -> AutoReply:
    """Validate and save the auto-reply (the fields given); `enabled` chooses it or off."""
    with db.session() as session:
        current = get_auto_reply(session)
        enabled = _bool(data, "enabled", current.enabled)
        message = data.get("message", current.message)
        if not isinstance(message, str):
            raise InvalidInput(N_("The message must be text."), field="message")
        message = message.strip()
        if not 1 <= len(message) <= AUTO_REPLY_MAX:
            raise InvalidInput(
                N_("The message must be 1 to %(limit)d characters (it is %(length)d)."),
                field="message",
                limit=AUTO_REPLY_MAX,
                length=len(message),
            )
        window = _int(data, "window_hours", current.window_hours, 0, MAX_WINDOW_HOURS)
        outside = _bool(data, "outside_hours_only", current.outside_hours_only)
        schedule = (
            hours.validate(data["business_hours"])
            if "business_hours" in data
            else current.business_hours
        )
        if outside and not schedule:
            raise InvalidInput(
                N_("Set the business hours to answer only outside them."), field="business_hours"
            )
        row = session.get(AutoReplyConfig, 1)
        if row is None:
            row = AutoReplyConfig(id=1, enabled=False)
            session.add(row)
        row.message = message
        row.window_hours = window
        row.outside_hours_only = outside
        row.business_hours = schedule
        session.flush()
        if "enabled" in data:
            mode = current_mode(session, settings)
            if enabled:
                _choose(session, settings, AUTO_REPLY)
            elif mode == AUTO_REPLY:
                _choose(session, settings, OFF)
        _note_mode(session, settings)
        return get_auto_reply(session)


def _switch_ai_on(session: Session, settings: Settings) -> None:
    row = session.get(AIConfig, 1)
    if row is None:
        row = _new_ai_row(settings, _ai_from_env(settings))
        row.saved = False
        session.add(row)
    if not row.enabled:
        row.enabled_at = utcnow()
    row.enabled = True


def _switch_ai_off(session: Session, settings: Settings) -> None:
    row = session.get(AIConfig, 1)
    if row is None:
        env = _ai_from_env(settings)
        row = _new_ai_row(settings, env)
        row.saved = False
        session.add(row)
    row.enabled = False


def _new_ai_row(settings: Settings, ai: AISettings) -> AIConfig:
    plain = {field: getattr(ai, field) for field in AI_FIELDS if field != "api_key"}
    key = encrypt_secret(settings, ai.api_key) if ai.api_key else None
    return AIConfig(id=1, api_key_encrypted=key, **plain)


def _opt_str(data: dict[str, Any], name: str, current: str | None, max_len: int) -> str | None:
    if name not in data:
        return current
    value = data[name]
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(N_("%(field_name)s must be text."), field=name, field_name=name)
    value = value.strip()
    if len(value) > max_len:
        raise InvalidInput(
            N_("%(field_name)s must be at most %(limit)d characters."),
            field=name,
            field_name=name,
            limit=max_len,
        )
    return value or None


def _int(data: dict[str, Any], name: str, current: int, low: int, high: int) -> int:
    value = data.get(name, current)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(
            N_("%(field_name)s must be a whole number from %(low)d to %(high)d."),
            field=name,
            field_name=name,
            low=low,
            high=high,
        )
    return value


def save_ai(db: Database, settings: Settings, data: dict[str, Any]) -> AISettings:
    """Validate and save the AI config (only the fields given); enabling it switches auto-reply off.

    `api_key` is write-only: a string sets it, an empty string or null clears it, and leaving
    it out keeps the stored key.
    """
    unknown = set(data) - set(AI_FIELDS)
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(N_("Unknown field %(field_name)s."), field=name, field_name=name)
    with db.session() as session:
        cur = get_ai(session, settings)
        enabled = _bool(data, "enabled", cur.enabled)
        model = _opt_str(data, "model", cur.model, 100)
        if not model:
            raise InvalidInput(N_("Enter the model's name."), field="model")
        temperature = data.get("temperature", cur.temperature)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise InvalidInput(N_("The temperature must be a number from 0 to 2."), "temperature")
        if not 0 <= float(temperature) <= 2:
            raise InvalidInput(N_("The temperature must be a number from 0 to 2."), "temperature")
        system_prompt = _opt_str(data, "system_prompt", cur.system_prompt, 4000) or ""
        target = _opt_str(data, "target_number", cur.target_number, 32)
        if target and not is_e164(target):
            raise InvalidInput(
                N_("The target number must be in E.164 form like +15551234567."),
                field="target_number",
            )
        base_url = _opt_str(data, "base_url", cur.base_url, 500)
        if "base_url" in data and base_url and not is_http_url(base_url):
            raise InvalidInput(
                N_("The base URL must be an http:// or https:// URL like %(example)s."),
                field="base_url",
                example="https://api.openai.com/v1",
            )
        api_key = _opt_str(data, "api_key", cur.api_key, 500)
        if "api_key" in data and api_key and not is_usable_api_key(api_key):
            raise InvalidInput(
                N_("The API key must be printable ASCII characters without spaces."),
                field="api_key",
            )
        new = AISettings(
            enabled=enabled,
            api_key=api_key,
            model=model,
            temperature=float(temperature),
            system_prompt=system_prompt,
            target_number=target,
            history_limit=_int(data, "history_limit", cur.history_limit, 1, 200),
            max_segments=_int(data, "max_segments", cur.max_segments, 1, 10),
            base_url=base_url.rstrip("/") if base_url else None,
            fallback_text=_opt_str(data, "fallback_text", cur.fallback_text, 640),
            sources=dict.fromkeys(AI_FIELDS, "stored"),
        )
        row = session.get(AIConfig, 1)
        was_enabled = cur.enabled
        fresh = _new_ai_row(settings, new)
        if row is None:
            row = fresh
            session.add(row)
        else:
            # The stored columns are the config's fields, with the key kept encrypted.
            for field in AI_FIELDS:
                column = "api_key_encrypted" if field == "api_key" else field
                setattr(row, column, getattr(fresh, column))
        row.saved = True
        row.enabled = was_enabled  # the switch moves with the mode, below
        session.flush()
        if "enabled" in data:
            if enabled:
                _choose(session, settings, AI)
            elif current_mode(session, settings) == AI:
                _choose(session, settings, OFF)
        _note_mode(session, settings)
        return get_ai(session, settings)
