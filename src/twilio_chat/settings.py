"""One typed, frozen Settings object built from the environment and `.env`.

This module is the only reader of ``os.environ``. Tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import phonenumbers
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from twilio_chat.replies import engines

SANDBOX_ACCOUNT_SID = "AC" + "0" * 32
SANDBOX_DEFAULT_FROM = "+15005550006"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant answering text messages. Keep answers short and friendly."
)


class SettingsError(Exception):
    """A setting is missing or has a bad value; the message names the variable."""


E164_FORM = re.compile(r"\+[1-9][0-9]{6,14}")


def has_e164_form(value: str) -> bool:
    """Return True when `value` is written as an E.164 number: +, then 7 to 15 digits.

    Enough to tell a phone number Twilio delivered a text from (one that can be answered)
    from a short code or a sender's name; `is_e164` also checks the number could exist.
    """
    return E164_FORM.fullmatch(value) is not None


def to_e164(value: str, country: str | None) -> str | None:
    """Return a number typed by a person in E.164 form, or None when it is not a possible one.

    "+48 601 234 567", "0048601234567" and, with `country` PL, "601 234 567" all give
    "+48601234567".
    """
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else country)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@functools.lru_cache(maxsize=65536)  # every inbound webhook asks, mostly about known numbers
def is_e164(value: str) -> bool:
    """Return True when `value` is a possible phone number written in E.164 form."""
    digits = value[1:]
    # ASCII digits only: isdigit() and phonenumbers also take other scripts' digits.
    if not value.startswith("+") or not (digits.isascii() and digits.isdigit()):
        return False
    if not 8 <= len(value) <= 16:
        return False
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_possible_number(parsed))


def is_http_url(value: str) -> bool:
    """Return True when `value` is an http(s) URL with a host that HTTP clients can use.

    Printable ASCII only (an international domain name goes in its xn-- form): a space, a
    control character or a broken host such as ``http://[::1`` makes the HTTP client fail.
    """
    if not value or not all("!" <= ch <= "~" for ch in value):
        return False
    try:
        parts = urlsplit(value)
        _port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class Settings(BaseModel):
    """Every setting of the app; field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    # Twilio
    twilio_account_sid: str | None = Field(None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = Field(None, alias="TWILIO_AUTH_TOKEN")
    twilio_default_from: str | None = Field(None, alias="TWILIO_DEFAULT_FROM")
    # The country of numbers typed without +country code (ISO 3166 code such as PL or US).
    default_country: str | None = Field(None, alias="DEFAULT_COUNTRY")
    twilio_messaging_service_sid: str | None = Field(None, alias="TWILIO_MESSAGING_SERVICE_SID")
    twilio_api_base_url: str | None = Field(None, alias="TWILIO_API_BASE_URL")
    twilio_sandbox: bool | None = Field(None, alias="TWILIO_SANDBOX")
    twilio_validate_signature: bool = Field(True, alias="TWILIO_VALIDATE_SIGNATURE")
    trusted_proxy_count: int = Field(0, ge=0, le=5, alias="TRUSTED_PROXY_COUNT")
    # OpenAI / AI replies
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    openai_model: str = Field("gpt-4o-mini", min_length=1, alias="OPENAI_MODEL")
    openai_temperature: float = Field(0.7, ge=0, le=2, alias="OPENAI_TEMPERATURE")
    openai_base_url: str | None = Field(None, alias="OPENAI_BASE_URL")
    ai_target_number: str | None = Field(None, alias="AI_TARGET_NUMBER")
    ai_system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, alias="AI_SYSTEM_PROMPT")
    ai_enabled: bool = Field(False, alias="AI_ENABLED")
    ai_timeout_seconds: float = Field(20, gt=0, le=120, alias="AI_TIMEOUT_SECONDS")
    # Modules imported first that register chat engines (replies/engines.py), comma-separated.
    chat_engine_modules: tuple[str, ...] = Field((), alias="CHAT_ENGINE_MODULES")
    # Who answers until a mode is chosen in the panel: off or a chat engine (replies.config).
    chat_mode: str | None = Field(None, alias="CHAT_MODE")
    ai_human_pause_minutes: int = Field(60, ge=0, le=10080, alias="AI_HUMAN_PAUSE_MINUTES")
    auto_reply_max_per_hour: int = Field(10, ge=1, le=1000, alias="AUTO_REPLY_MAX_PER_HOUR")
    # App
    app_env: Literal["development", "production", "test"] = Field("development", alias="APP_ENV")
    app_debug: bool = Field(False, alias="APP_DEBUG")
    app_host: str = Field("0.0.0.0", alias="APP_HOST")  # noqa: S104 - a server's usual bind
    app_port: int = Field(3000, ge=1, le=65535, alias="APP_PORT")
    db_path: str = Field("data/app.db", min_length=1, alias="DB_PATH")
    database_url: str | None = Field(None, alias="DATABASE_URL")
    # Where webhooks wait when the database cannot take them (see spool.py); default below.
    spool_dir: str | None = Field(None, alias="SPOOL_DIR")
    public_base_url: str | None = Field(None, alias="PUBLIC_BASE_URL")
    secret_key: SecretStr | None = Field(None, alias="SECRET_KEY")
    admin_username: str = Field("admin", min_length=1, max_length=64, alias="ADMIN_USERNAME")
    admin_password: SecretStr | None = Field(None, alias="ADMIN_PASSWORD")
    # Worker
    worker_enabled: bool = Field(True, alias="WORKER_ENABLED")
    worker_poll_seconds: float = Field(0.2, gt=0, le=60, alias="WORKER_POLL_SECONDS")
    job_lease_seconds: int = Field(60, ge=5, le=3600, alias="JOB_LEASE_SECONDS")
    job_max_attempts: int = Field(5, ge=1, le=50, alias="JOB_MAX_ATTEMPTS")
    job_retry_base_seconds: float = Field(50, ge=0, le=3600, alias="JOB_RETRY_BASE_SECONDS")
    sync_interval_seconds: int = Field(60, ge=0, le=86400, alias="SYNC_INTERVAL_SECONDS")
    sync_in_sandbox: bool = Field(False, alias="SYNC_IN_SANDBOX")
    # Where gunicorn's processes share metrics (prometheus_client reads the same variable).
    prometheus_multiproc_dir: str | None = Field(None, alias="PROMETHEUS_MULTIPROC_DIR")
    # Sandbox behaviour: seconds between the status callbacks it fires.
    sandbox_callback_delay: float = Field(0.05, ge=0, le=10, alias="SANDBOX_CALLBACK_DELAY")
    # The sandbox's own SQLite file (Twilio's side, never the app's database); default below.
    sandbox_db_path: str | None = Field(None, min_length=1, alias="SANDBOX_DB_PATH")

    @field_validator("twilio_default_from", "ai_target_number")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is not None and not is_e164(value):
            raise ValueError(
                f"must be a phone number in E.164 form like +15551234567, got {value!r}"
            )
        return value

    @field_validator("default_country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.strip().upper()
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"must be a two-letter country code such as PL or US, got {value!r}")
        return code

    @field_validator("chat_engine_modules", mode="before")
    @classmethod
    def _engine_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("chat_engine_modules")
    @classmethod
    def _import_engine_modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        engines.import_engine_modules(value)  # they register their engines as they load
        return value

    @field_validator("chat_mode")
    @classmethod
    def _chat_engine(cls, value: str | None) -> str | None:
        names = ["off", *engines.engine_names()]
        if value is not None and value not in names:
            raise ValueError(f"must be off or name a chat engine: {', '.join(names)}")
        return value

    @field_validator("twilio_messaging_service_sid")
    @classmethod
    def _service_sid(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("MG") and len(value) == 34):
            raise ValueError("must be a Messaging Service SID: MG followed by 32 characters")
        return value

    @field_validator("twilio_account_sid")
    @classmethod
    def _account_sid(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("AC") and len(value) == 34):
            raise ValueError("must be an Account SID: AC followed by 32 characters")
        return value

    @field_validator("public_base_url", "twilio_api_base_url", "openai_base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not is_http_url(value):
            raise ValueError(f"must be an http:// or https:// URL with a host, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.app_env == "production":
            if self.secret_key is None:
                raise ValueError("SECRET_KEY: required when APP_ENV=production")
            if not self.twilio_validate_signature:
                raise ValueError(
                    "TWILIO_VALIDATE_SIGNATURE: cannot be false when APP_ENV=production"
                )
        return self

    # Derived values -----------------------------------------------------------------
    @property
    def has_twilio_credentials(self) -> bool:
        """Tell whether both Twilio credentials are configured."""
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def sandbox(self) -> bool:
        """Tell whether the built-in Twilio sandbox stands in for Twilio."""
        if self.twilio_sandbox is not None:
            return self.twilio_sandbox
        return not self.has_twilio_credentials

    @property
    def account_sid(self) -> str:
        """Return the Account SID the app uses (the sandbox's own when none is configured)."""
        if self.sandbox and not self.has_twilio_credentials:
            return SANDBOX_ACCOUNT_SID
        return self.twilio_account_sid or ""

    @property
    def auth_token(self) -> str:
        """Return the auth token that signs and checks webhooks and calls Twilio."""
        if self.sandbox and not self.has_twilio_credentials:
            return hmac.new(self.secret_bytes, b"sandbox-auth-token", hashlib.sha256).hexdigest()[
                :32
            ]
        return self.twilio_auth_token.get_secret_value() if self.twilio_auth_token else ""

    @property
    def default_from(self) -> str | None:
        """Return the From number for sends (the sandbox's test number when none is set)."""
        if self.twilio_default_from:
            return self.twilio_default_from
        return SANDBOX_DEFAULT_FROM if self.sandbox else None

    @property
    def base_url(self) -> str:
        """Return the public base URL Twilio uses to reach this app."""
        return self.public_base_url or f"http://127.0.0.1:{self.app_port}"

    @property
    def api_base_url(self) -> str | None:
        """Return the Twilio REST base URL, or None for Twilio's own."""
        if self.twilio_api_base_url:
            return self.twilio_api_base_url
        if self.sandbox:
            return f"http://127.0.0.1:{self.app_port}/sandbox/twilio"
        return None

    @property
    def sqlalchemy_url(self) -> str:
        """Return the database URL: DATABASE_URL, else SQLite at DB_PATH."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.db_path}"

    @property
    def spool_path(self) -> Path:
        """Return the webhook spool's folder: SPOOL_DIR, else `spool` beside the SQLite file."""
        if self.spool_dir:
            return Path(self.spool_dir)
        return Path(self.db_path).parent / "spool"

    @property
    def sandbox_path(self) -> Path:
        """Return the sandbox's SQLite file: SANDBOX_DB_PATH, else `sandbox.db` beside DB_PATH."""
        if self.sandbox_db_path:
            return Path(self.sandbox_db_path)
        return Path(self.db_path).parent / "sandbox.db"

    @property
    def secret_bytes(self) -> bytes:
        """Return the secret key as bytes."""
        if self.secret_key is None:
            raise SettingsError("SECRET_KEY: not set")
        return self.secret_key.get_secret_value().encode()


def _describe(error: Mapping[str, Any]) -> str:
    loc = error.get("loc") or ()
    name = str(loc[0]) if loc else ""
    msg = str(error.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if name:
        field = Settings.model_fields.get(name)
        alias = field.alias if field and field.alias else name
        got = error.get("input")
        suffix = f" (got {got!r})" if isinstance(got, str) and "got" not in msg else ""
        return f"{alias}: {msg}{suffix}"
    return msg


def build_settings(values: Mapping[str, Any]) -> Settings:
    """Validate raw values keyed by environment variable name; raise SettingsError on bad ones."""
    known = {f.alias for f in Settings.model_fields.values()}
    data = {k: v for k, v in values.items() if k in known and v not in ("", None)}
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(e) for e in exc.errors())) from None


def _dev_secret_key(db_path: str) -> str:
    """Return a random secret kept beside the SQLite file, made on first use (development only)."""
    path = Path(db_path).parent / "secret_key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> Settings:
    """Build Settings from `.env` and the environment (the environment wins)."""
    values: dict[str, Any] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    # Empty counts as unset, so an empty variable (e.g. from compose) does not hide .env's value.
    values.update({k: v for k, v in (os.environ if environ is None else environ).items() if v})
    settings = build_settings(values)
    if settings.secret_key is None and settings.app_env != "production":
        values["SECRET_KEY"] = _dev_secret_key(settings.db_path)
        settings = build_settings(values)
    return settings
