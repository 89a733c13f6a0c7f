"""The auto-reply and AI configurations, and which reply mode is on since when.

Enabling AI switches the auto-reply off and enabling the auto-reply switches AI off, here and
only here. Until the AI config is first saved (panel or API) its values come from the
environment (OPENAI_*, AI_*); after that the stored config wins.
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
from twilio_chat.settings import Settings, is_e164, is_http_url
from twilio_chat.telemetry.logs import add_secret

AUTO_REPLY_MAX = 640
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
    """The fixed auto-reply."""

    enabled: bool
    message: str


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
    return AutoReply(row.enabled, row.message)


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


def current_mode(session: Session, settings: Settings) -> str:
    """Return the mode that answers now: ai, auto_reply or engine."""
    if get_ai(session, settings).enabled:
        return "ai"
    if get_auto_reply(session).enabled:
        return "auto_reply"
    return "engine"


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
    """Validate and save the auto-reply; enabling it switches AI off."""
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
        row = session.get(AutoReplyConfig, 1)
        if row is None:
            row = AutoReplyConfig(id=1)
            session.add(row)
        if enabled and not row.enabled:
            row.enabled_at = utcnow()
        row.enabled = enabled
        row.message = message
        if enabled:
            _switch_ai_off(session, settings)
        session.flush()
        _note_mode(session, settings)
        return AutoReply(enabled, message)


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
        if enabled and not was_enabled:
            row.enabled_at = utcnow()
        if enabled:
            auto = session.get(AutoReplyConfig, 1)
            if auto is not None:
                auto.enabled = False
        session.flush()
        _note_mode(session, settings)
        return new
