"""`twilio-chat doctor`: check the set-up end to end, one line per check with a fix hint.

Each check is a small function returning a `Check`. Fetching from Twilio (through the gateway,
the only module that imports the SDK) is kept apart from judging what came back, so the
judging functions are pure. A check whose prerequisite failed is SKIP, never a crash.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests

from twilio_chat.db import migrate
from twilio_chat.db.engine import Database
from twilio_chat.replies import ai
from twilio_chat.replies import config as reply_config
from twilio_chat.settings import Settings, SettingsError, load_settings
from twilio_chat.twilio.gateway import (
    RemoteAccount,
    RemoteNumber,
    RemoteService,
    TwilioError,
    TwilioGateway,
)

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]
HTTP_TIMEOUT_SECONDS = 10
INBOUND_PATH = "/twilio/inbound"
STATUS_PATH = "/twilio/status"
T = TypeVar("T")


@dataclass(frozen=True)
class Check:
    """The outcome of one check: its name, PASS/WARN/FAIL/SKIP, what was found, how to fix it."""

    name: str
    status: Status
    detail: str
    hint: str = ""

    def line(self) -> str:
        """Render the check as one line: status, name, detail, and the fix hint if it failed."""
        text = f"{self.status:<4}  {self.name:<18}  {self.detail}"
        if self.hint and self.status in ("FAIL", "WARN"):
            text += f". Fix: {self.hint}"
        return text


def _skip(name: str, why: str) -> Check:
    return Check(name, "SKIP", why)


def safe_url(url: str) -> str:
    """Return a URL without any user:password part and without its query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _attempt(fetch: Callable[[], T]) -> T | TwilioError:
    try:
        return fetch()
    except TwilioError as exc:
        return exc


# 1. Settings -------------------------------------------------------------------------------


def check_settings(load: Callable[[], Settings]) -> tuple[Check, Settings | None]:
    """Load the settings; a bad value is a FAIL line naming the variable."""
    try:
        settings = load()
    except SettingsError as exc:
        hint = "correct the variable in the environment or .env (see .env.example)"
        return Check("settings", "FAIL", str(exc), hint), None
    mode = "sandbox" if settings.sandbox else "Twilio"
    return Check("settings", "PASS", f"loaded ({mode} mode, APP_ENV={settings.app_env})"), settings


# 2. Database ---------------------------------------------------------------------------------


def check_database(db: Database) -> Check:
    """Check the database can be opened and its migrations are at the newest revision."""
    where = db.url.render_as_string(hide_password=True)
    upgrade = "run `twilio-chat db upgrade` (or `make run`)"
    database = db.url.database or ""
    if db.is_sqlite and database not in ("", ":memory:") and not Path(database).is_file():
        return Check("database", "FAIL", f"no SQLite file at {database}", upgrade)
    try:
        current = migrate.is_current(db)
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        detail = f"cannot open {where} ({type(exc).__name__}: {reason[0][:160] if reason else ''})"
        return Check("database", "FAIL", detail, "check DATABASE_URL or DB_PATH")
    if not current:
        return Check("database", "FAIL", f"{where}: migrations are not current", upgrade)
    return Check("database", "PASS", f"{where}, migrations current")


# 3. Twilio credentials -------------------------------------------------------------------


def _twilio_failure(name: str, exc: TwilioError, settings: Settings) -> Check:
    code = f" ({exc.code})" if exc.code else ""
    if exc.status is None:
        if settings.sandbox and settings.api_base_url:
            detail = f"cannot reach the sandbox at {safe_url(settings.api_base_url)}"
            hint = "the sandbox is served by the app itself: start it (`twilio-chat run`)"
            if settings.twilio_api_base_url:
                hint += " or correct TWILIO_API_BASE_URL"
            return Check(name, "FAIL", detail, hint)
        hint = "check the network, and TWILIO_API_BASE_URL if set"
        return Check(name, "FAIL", exc.message, hint)
    if exc.status == 401 or exc.code == 20003:
        hint = "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (Twilio console, Account info)"
        detail = f"Twilio refused the credentials (HTTP {exc.status}, error {exc.code})"
        return Check(name, "FAIL", detail, hint)
    detail = f"Twilio answered HTTP {exc.status}: {exc.message}{code}"
    return Check(name, "FAIL", detail, "try again; if it persists, see status.twilio.com")


def check_credentials(settings: Settings, found: RemoteAccount | TwilioError) -> Check:
    """Judge the account fetched with the credentials: it must exist and be active."""
    name = "twilio credentials"
    if isinstance(found, TwilioError):
        return _twilio_failure(name, found, settings)
    detail = f"account {found.sid} ({found.friendly_name})"
    if found.status != "active":
        hint = "reactivate the account in the Twilio console, or use another account's credentials"
        return Check(name, "FAIL", f"{detail} is {found.status}", hint)
    if found.type == "Trial":
        hint = "upgrade the account to text any number"
        return Check(
            name, "WARN", f"{detail} is a trial account: it texts verified numbers only", hint
        )
    return Check(name, "PASS", detail)


# 4. Our number and Messaging Service ----------------------------------------------------------


def check_number(settings: Settings, found: RemoteNumber | TwilioError | None) -> Check:
    """Judge the lookup of TWILIO_DEFAULT_FROM among the account's phone numbers."""
    name = "twilio number"
    number = settings.default_from
    if number is None:
        if settings.twilio_messaging_service_sid:
            return _skip(name, "TWILIO_DEFAULT_FROM is not set; sends use the Messaging Service")
        hint = "set TWILIO_DEFAULT_FROM to one of the account's numbers (E.164)"
        return Check(
            name, "FAIL", "neither TWILIO_DEFAULT_FROM nor a Messaging Service is set", hint
        )
    if isinstance(found, TwilioError):
        return _twilio_failure(name, found, settings)
    if found is None:
        hint = "set TWILIO_DEFAULT_FROM to a number of this account (Phone Numbers in the console)"
        return Check(name, "FAIL", f"{number} is not a number of this account", hint)
    return Check(name, "PASS", f"{number} is this account's number {found.sid}")


def check_messaging_service(settings: Settings, found: RemoteService | TwilioError | None) -> Check:
    """Judge the fetch of TWILIO_MESSAGING_SERVICE_SID (SKIP when none is configured)."""
    name = "messaging service"
    sid = settings.twilio_messaging_service_sid
    if sid is None:
        return _skip(name, "TWILIO_MESSAGING_SERVICE_SID is not set")
    if isinstance(found, TwilioError):
        if found.not_found:
            hint = "set TWILIO_MESSAGING_SERVICE_SID to a service of this account, or unset it"
            return Check(name, "FAIL", f"{sid} does not exist in this account", hint)
        return _twilio_failure(name, found, settings)
    if found is None:
        return _skip(name, "not fetched")
    return Check(name, "PASS", f"{sid} ({found.friendly_name})")


# 5. Webhooks -------------------------------------------------------------------------------


def _same_url(configured: str, expected: str) -> bool:
    # Twilio's retry fragments (#rc=…) never reach the server, so they do not count.
    return configured.split("#", 1)[0] == expected


def check_inbound_webhook(
    settings: Settings, number: RemoteNumber | None, service: RemoteService | None
) -> Check:
    """Check Twilio posts inbound texts to PUBLIC_BASE_URL/twilio/inbound with POST."""
    name = "inbound webhook"
    expected = settings.base_url + INBOUND_PATH
    if service is not None and not service.use_inbound_webhook_on_number:
        # The service's integration setting wins over its numbers' own webhooks.
        where = f"Messaging Service {service.sid}"
        url, method = service.inbound_request_url, service.inbound_method
        console = "the service's Integration: 'Send a webhook' to"
        if not url:
            hint = f"in {console} {expected} (HTTP POST), or 'Defer to sender's webhook'"
            return Check(name, "FAIL", f"{where} drops inbound messages (no request URL)", hint)
    elif number is not None:
        where = f"{number.phone_number}"
        url, method = number.sms_url, number.sms_method
        console = "the number's Messaging Configuration: 'A message comes in' webhook"
    else:
        return _skip(name, "no number or Messaging Service to check")
    if not _same_url(url, expected):
        shown = safe_url(url) if url else "nothing"
        hint = f"set {console} {expected} (HTTP POST), or correct PUBLIC_BASE_URL"
        return Check(name, "FAIL", f"{where} posts to {shown}, not {expected}", hint)
    if method != "POST":
        hint = f"set {console} {expected} with HTTP POST"
        return Check(name, "FAIL", f"{where} calls {expected} with {method}, not POST", hint)
    return Check(name, "PASS", f"{where} posts to {expected}")


def check_status_callback(
    settings: Settings, number: RemoteNumber | None, service: RemoteService | None
) -> Check:
    """Check the number's and service's status callbacks are empty or ours (WARN otherwise)."""
    name = "status callback"
    ours = settings.base_url + STATUS_PATH
    found = [
        (label, url)
        for label, url in (
            (number.phone_number if number else "", number.status_callback if number else ""),
            (service.sid if service else "", service.status_callback if service else ""),
        )
        if label
    ]
    if not found:
        return _skip(name, "no number or Messaging Service to check")
    elsewhere = [(label, url) for label, url in found if url and not url.startswith(ours)]
    if elsewhere:
        listed = ", ".join(f"{label} sends them to {safe_url(url)}" for label, url in elsewhere)
        hint = f"clear it or set it to {ours} (the app sets StatusCallback on every message)"
        return Check(name, "WARN", listed, hint)
    return Check(name, "PASS", "empty or ours; the app sets StatusCallback on every message")


# 6. Public URL -------------------------------------------------------------------------------


def _local_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def check_public_url(settings: Settings, session: requests.Session | None = None) -> Check:
    """GET PUBLIC_BASE_URL/healthz: it must answer 200 as this app does."""
    name = "public url"
    url = settings.base_url + "/healthz"
    shown = safe_url(url)
    fix = "start the app (`twilio-chat run`) and make PUBLIC_BASE_URL reach it"
    http = session or requests.Session()
    try:
        answer = http.get(url, timeout=HTTP_TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as exc:
        return Check(name, "FAIL", f"cannot reach {shown} ({type(exc).__name__})", fix)
    finally:
        if session is None:
            http.close()
    if answer.status_code != 200:
        return Check(name, "FAIL", f"{shown} answered HTTP {answer.status_code}", fix)
    try:
        ok = answer.json() == {"status": "ok"}
    except ValueError:
        ok = False
    if not ok:
        return Check(name, "FAIL", f"{shown} answered 200 but not as Twilio Chat does", fix)
    host = urlsplit(url).hostname or ""
    if not settings.sandbox and _local_host(host):
        hint = "set PUBLIC_BASE_URL to the https URL Twilio reaches the app at (a proxy or tunnel)"
        return Check(name, "WARN", f"{shown} answers, but Twilio cannot reach {host}", hint)
    return Check(name, "PASS", f"{shown} answered 200")


# 7. OpenAI -----------------------------------------------------------------------------------

AI_HINTS = {
    "bad_key": "check OPENAI_API_KEY, or the key saved in the AI tab",
    "bad_base_url": "check OPENAI_BASE_URL, or the base URL saved in the AI tab",
    "auth": "check OPENAI_API_KEY, or the key saved in the AI tab",
    "timeout": "check OPENAI_BASE_URL and the network, or raise AI_TIMEOUT_SECONDS",
    "unreachable": "check OPENAI_BASE_URL and the network",
    "server": "check OPENAI_MODEL and OPENAI_BASE_URL",
    "empty": "check OPENAI_MODEL",
}


def check_openai(config: reply_config.AISettings, timeout: float) -> Check:
    """Ask the model for a tiny completion when AI is on or a key is set (SKIP otherwise)."""
    name = "openai"
    if not config.api_key:
        if not config.enabled:
            return _skip(name, "AI replies are off and no API key is set")
        hint = "set OPENAI_API_KEY, or save a key in the AI tab"
        return Check(name, "FAIL", "AI replies are on but no API key is set", hint)
    try:
        ai.complete(config, [ai.ChatTurn("user", "Reply with the single word OK.")], timeout)
    except ai.AIError as exc:
        # A key nothing automatic uses yet only warns; with AI replies on, texts go unanswered.
        status: Status = "FAIL" if config.enabled else "WARN"
        return Check(name, status, exc.message, AI_HINTS.get(exc.kind, ""))
    where = safe_url(config.base_url) if config.base_url else "the OpenAI API"
    state = "on" if config.enabled else "off"
    return Check(name, "PASS", f"{config.model} at {where} answered (AI replies {state})")


# Running them all ----------------------------------------------------------------------------


def _ai_config(db: Database, settings: Settings) -> reply_config.AISettings:
    with db.read() as session:
        return reply_config.get_ai(session, settings)


def run_checks(
    load: Callable[[], Settings] = load_settings,
    db: Database | None = None,
    gateway: TwilioGateway | None = None,
) -> list[Check]:
    """Run every check in order; those whose prerequisite failed are SKIP."""
    first, settings = check_settings(load)
    if settings is None:
        names = ("database", *TWILIO_CHECKS, "public url", "openai")
        return [first, *(_skip(n, "the settings did not load") for n in names)]
    own_db = db is None
    try:
        if db is None:
            db = Database(settings.sqlalchemy_url)
        database = check_database(db)
    except Exception as exc:  # e.g. a DATABASE_URL whose driver is not installed
        hint = "check DATABASE_URL or DB_PATH"
        database = Check("database", "FAIL", f"cannot use it ({type(exc).__name__})", hint)
    try:
        checks = [first, database, *_twilio_checks(settings, gateway or TwilioGateway(settings))]
        checks.append(check_public_url(settings))
        if db is not None and database.status == "PASS":
            config = _ai_config(db, settings)
            checks.append(check_openai(config, settings.ai_timeout_seconds))
        else:
            checks.append(_skip("openai", "the AI config is in the database, which is not ready"))
    finally:
        if own_db and db is not None:
            db.dispose()
    return scrub(checks, _secrets(settings))


TWILIO_CHECKS = (
    "twilio credentials",
    "twilio number",
    "messaging service",
    "inbound webhook",
    "status callback",
)


def _twilio_checks(settings: Settings, gateway: TwilioGateway) -> list[Check]:
    credentials = check_credentials(settings, _attempt(gateway.fetch_account))
    if credentials.status == "FAIL":
        why = "the Twilio credentials check failed"
        return [credentials, *(_skip(n, why) for n in TWILIO_CHECKS[1:])]
    number: RemoteNumber | TwilioError | None = None
    if settings.default_from:
        default_from = settings.default_from
        number = _attempt(lambda: gateway.find_number(default_from))
    service: RemoteService | TwilioError | None = None
    if settings.twilio_messaging_service_sid:
        sid = settings.twilio_messaging_service_sid
        service = _attempt(lambda: gateway.fetch_messaging_service(sid))
    found_number = number if isinstance(number, RemoteNumber) else None
    found_service = service if isinstance(service, RemoteService) else None
    return [
        credentials,
        check_number(settings, number),
        check_messaging_service(settings, service),
        check_inbound_webhook(settings, found_number, found_service),
        check_status_callback(settings, found_number, found_service),
    ]


def _secrets(settings: Settings) -> list[str]:
    values = [settings.auth_token]
    for secret in (settings.openai_api_key, settings.secret_key, settings.admin_password):
        if secret is not None:
            values.append(secret.get_secret_value())
    return [v for v in values if len(v) >= 6]


def scrub(checks: Iterable[Check], secrets: Iterable[str]) -> list[Check]:
    """Replace any secret that found its way into a detail or hint with `****`."""
    secrets = list(secrets)

    def clean(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "****")
        return text

    return [Check(c.name, c.status, clean(c.detail), clean(c.hint)) for c in checks]


def failed(checks: Iterable[Check]) -> bool:
    """Tell whether any check failed (the doctor then exits 1)."""
    return any(c.status == "FAIL" for c in checks)


def summary(checks: Iterable[Check]) -> str:
    """Return one closing line counting the checks by status."""
    checks = list(checks)
    counts = {s: sum(c.status == s for c in checks) for s in ("PASS", "WARN", "FAIL", "SKIP")}
    words = {"PASS": "passed", "WARN": "warned", "FAIL": "failed", "SKIP": "skipped"}
    parts = [f"{n} {words[s]}" for s, n in counts.items() if n]
    return "doctor: " + ", ".join(parts)
