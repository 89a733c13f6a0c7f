"""`twilio-chat doctor`: every check against the sandbox of a live server on 127.0.0.1."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from flask import Flask
from support import SECRET, Live, make_settings
from support.fake_openai import API_KEY

from twilio_chat import create_app
from twilio_chat.cli import cli
from twilio_chat.db.engine import get_db
from twilio_chat.ops.doctor import (
    check_inbound_webhook,
    check_status_callback,
)
from twilio_chat.settings import SANDBOX_ACCOUNT_SID, SANDBOX_DEFAULT_FROM, Settings
from twilio_chat.twilio.gateway import RemoteNumber, RemoteService, TwilioError, get_gateway

NAMES = (
    "settings",
    "database",
    "twilio credentials",
    "twilio number",
    "messaging service",
    "inbound webhook",
    "status callback",
    "public url",
    "openai",
)
LINE = re.compile(r"^(PASS|WARN|FAIL|SKIP)  (.{18})  (.+)$")
SERVICE_SID = "MG" + "1" * 32
REAL_LOOKING_SID = "AC" + "1" * 32
REAL_LOOKING_TOKEN = "t0ken" + "x" * 27
WRONG_TOKEN = "wr0ng" + "y" * 27
WRONG_KEY = "sk-wrong-0123456789abcdef"


def _port(live: Live) -> str:
    return live.url.rsplit(":", 1)[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _secrets(settings: Settings) -> list[str]:
    values = [settings.auth_token, SECRET, API_KEY, WRONG_KEY, REAL_LOOKING_TOKEN, WRONG_TOKEN]
    if settings.openai_api_key:
        values.append(settings.openai_api_key.get_secret_value())
    return [v for v in values if v]


def _parse(result: Result) -> dict[str, tuple[str, str]]:
    """Map each check's name to (status, rest of the line); assert the output's shape."""
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == len(NAMES) + 1, result.output
    checks: dict[str, tuple[str, str]] = {}
    for line in lines[:-1]:
        match = LINE.match(line)
        assert match, line
        checks[match.group(2).strip()] = (match.group(1), match.group(3))
    assert tuple(checks) == NAMES
    counts = {s: sum(st == s for st, _ in checks.values()) for s in ("PASS", "FAIL")}
    assert lines[-1].startswith("doctor: ")
    for status, word in (("PASS", "passed"), ("FAIL", "failed")):
        if counts[status]:
            assert f"{counts[status]} {word}" in lines[-1]
    return checks


def _doctor(app: Flask) -> tuple[Result, dict[str, tuple[str, str]]]:
    """Run `twilio-chat doctor` on an app; secrets never appear in what it prints."""
    result = CliRunner().invoke(cli, ["doctor"], obj=app)
    for secret in _secrets(app.extensions["settings"]):
        assert secret not in result.output
    return result, _parse(result)


@contextmanager
def _app(db_path: Path, **overrides: Any) -> Iterator[Flask]:
    """An app (no server) whose doctor looks at the live sandbox these settings point to."""
    app = create_app(make_settings(db_path, **overrides))
    try:
        yield app
    finally:
        get_db(app).dispose()


def _statuses(checks: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {name: status for name, (status, _) in checks.items()}


# Everything in order ---------------------------------------------------------------------------


def test_every_check_passes_in_sandbox_mode(live: Live) -> None:
    result, checks = _doctor(live.app)
    assert result.exit_code == 0, result.output
    assert _statuses(checks) == {
        **dict.fromkeys(NAMES, "PASS"),
        "messaging service": "SKIP",  # none configured
        "openai": "SKIP",  # AI off, no key
    }
    assert checks["settings"][1] == "loaded (sandbox mode, APP_ENV=test)"
    assert checks["twilio credentials"][1] == f"account {SANDBOX_ACCOUNT_SID} (Sandbox)"
    assert checks["twilio number"][1].startswith(f"{SANDBOX_DEFAULT_FROM} is this account's number")
    assert checks["inbound webhook"][1] == (
        f"{SANDBOX_DEFAULT_FROM} posts to {live.url}/twilio/inbound"
    )
    assert checks["public url"][1] == f"{live.url}/healthz answered 200"
    assert "migrations current" in checks["database"][1]
    assert "Fix:" not in result.output


def test_ai_and_a_messaging_service_pass_too(
    live_factory: Callable[..., Live], fake_openai: Any
) -> None:
    live = live_factory(
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=fake_openai.base_url,
        AI_ENABLED="true",
        TWILIO_MESSAGING_SERVICE_SID=SERVICE_SID,
    )
    result, checks = _doctor(live.app)
    assert result.exit_code == 0, result.output
    assert _statuses(checks) == dict.fromkeys(NAMES, "PASS")
    assert checks["messaging service"][1] == f"{SERVICE_SID} (Sandbox Messaging Service)"
    # The sandbox's service does not defer to the number: its own request URL is what counts.
    assert checks["inbound webhook"][1] == (
        f"Messaging Service {SERVICE_SID} posts to {live.url}/twilio/inbound"
    )
    assert "answered (AI replies on)" in checks["openai"][1]
    assert len(fake_openai.requests) == 1  # one tiny completion, with the configured key
    assert fake_openai.requests[0]["authorization"] == f"Bearer {API_KEY}"
    assert fake_openai.requests[0]["body"]["model"] == "gpt-4o-mini"


def test_the_cli_builds_its_settings_from_the_environment(
    live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_environment(monkeypatch, tmp_path)
    env = {
        "DATABASE_URL": live.settings.sqlalchemy_url,
        "SECRET_KEY": SECRET,
        "APP_ENV": "test",
        "APP_PORT": _port(live),
    }
    result = CliRunner(env=env).invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    checks = _parse(result)
    assert checks["twilio credentials"] == ("PASS", f"account {SANDBOX_ACCOUNT_SID} (Sandbox)")
    assert checks["public url"] == ("PASS", f"{live.url}/healthz answered 200")
    assert live.settings.auth_token not in result.output


def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the environment or a .env file."""
    monkeypatch.chdir(tmp_path)
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)


# Failures, each with a hint --------------------------------------------------------------------


def test_wrong_credentials_fail_and_skip_what_depends_on_them(
    live_factory: Callable[..., Live], db_path: Path
) -> None:
    live = live_factory(
        TWILIO_SANDBOX="true",
        TWILIO_ACCOUNT_SID=REAL_LOOKING_SID,
        TWILIO_AUTH_TOKEN=REAL_LOOKING_TOKEN,
    )
    pointed_at_it = {
        "TWILIO_SANDBOX": "true",
        "TWILIO_ACCOUNT_SID": REAL_LOOKING_SID,
        "TWILIO_API_BASE_URL": f"{live.url}/sandbox/twilio",
        "PUBLIC_BASE_URL": live.url,
    }
    with _app(db_path, TWILIO_AUTH_TOKEN=WRONG_TOKEN, **pointed_at_it) as app:
        result, checks = _doctor(app)
    assert result.exit_code == 1, result.output
    status, line = checks["twilio credentials"]
    assert status == "FAIL"
    assert "Twilio refused the credentials (HTTP 401, error 20003)" in line
    assert "Fix: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in line
    for name in ("twilio number", "messaging service", "inbound webhook", "status callback"):
        assert checks[name] == ("SKIP", "the Twilio credentials check failed")
    assert checks["public url"][0] == "PASS"  # the rest is still checked

    # The same construction with the right token passes: the token was the only fault.
    with _app(db_path, TWILIO_AUTH_TOKEN=REAL_LOOKING_TOKEN, **pointed_at_it) as app:
        result, checks = _doctor(app)
    assert result.exit_code == 0, result.output
    assert checks["twilio credentials"] == ("PASS", f"account {REAL_LOOKING_SID} (Sandbox)")
    assert checks["inbound webhook"][0] == "PASS"


def test_outside_sandbox_mode_a_loopback_public_url_warns_but_does_not_fail(
    live_factory: Callable[..., Live], db_path: Path
) -> None:
    live = live_factory(
        TWILIO_SANDBOX="true",
        TWILIO_ACCOUNT_SID=REAL_LOOKING_SID,
        TWILIO_AUTH_TOKEN=REAL_LOOKING_TOKEN,
    )
    with _app(
        db_path,
        TWILIO_SANDBOX="false",  # as with real Twilio, only TWILIO_API_BASE_URL points here
        TWILIO_ACCOUNT_SID=REAL_LOOKING_SID,
        TWILIO_AUTH_TOKEN=REAL_LOOKING_TOKEN,
        TWILIO_API_BASE_URL=f"{live.url}/sandbox/twilio",
        TWILIO_DEFAULT_FROM=SANDBOX_DEFAULT_FROM,
        PUBLIC_BASE_URL=live.url,
    ) as app:
        result, checks = _doctor(app)
    assert result.exit_code == 0, result.output
    assert checks["settings"] == ("PASS", "loaded (Twilio mode, APP_ENV=test)")
    status, line = checks["public url"]
    assert status == "WARN"
    assert "Twilio cannot reach 127.0.0.1" in line
    assert "Fix: set PUBLIC_BASE_URL" in line
    assert checks["inbound webhook"][0] == "PASS"


def test_a_default_from_that_is_not_the_accounts_number_fails(live: Live, db_path: Path) -> None:
    with _app(db_path, APP_PORT=_port(live), TWILIO_DEFAULT_FROM="+15551239999") as app:
        result, checks = _doctor(app)
    assert result.exit_code == 1, result.output
    status, line = checks["twilio number"]
    assert status == "FAIL"
    assert "+15551239999 is not a number of this account" in line
    assert "Fix: set TWILIO_DEFAULT_FROM to a number of this account" in line
    assert checks["inbound webhook"] == ("SKIP", "no number or Messaging Service to check")
    assert checks["twilio credentials"][0] == "PASS"


def test_a_messaging_service_the_account_does_not_have_fails(live: Live, db_path: Path) -> None:
    with _app(db_path, APP_PORT=_port(live), TWILIO_MESSAGING_SERVICE_SID=SERVICE_SID) as app:
        result, checks = _doctor(app)
    assert result.exit_code == 1, result.output
    status, line = checks["messaging service"]
    assert status == "FAIL"
    assert f"{SERVICE_SID} does not exist in this account" in line
    assert "Fix: set TWILIO_MESSAGING_SERVICE_SID" in line
    assert checks["inbound webhook"][0] == "PASS"  # the number is still checked


def test_a_public_url_other_than_the_numbers_webhook_fails(
    live_factory: Callable[..., Live], db_path: Path
) -> None:
    sandbox = live_factory()  # its number posts to sandbox.url/twilio/inbound
    elsewhere = live_factory()  # a second server, so only the webhook differs
    with _app(db_path, APP_PORT=_port(sandbox), PUBLIC_BASE_URL=elsewhere.url) as app:
        result, checks = _doctor(app)
    assert result.exit_code == 1, result.output
    status, line = checks["inbound webhook"]
    assert status == "FAIL"
    expected = f"{elsewhere.url}/twilio/inbound"
    assert f"posts to {sandbox.url}/twilio/inbound, not {expected}" in line
    assert f"'A message comes in' webhook {expected} (HTTP POST)" in line
    assert "or correct PUBLIC_BASE_URL" in line
    assert checks["public url"] == ("PASS", f"{elsewhere.url}/healthz answered 200")
    assert checks["status callback"][0] == "PASS"


def test_an_unreachable_public_url_fails(live: Live, db_path: Path) -> None:
    closed = f"http://127.0.0.1:{_closed_port()}"
    with _app(db_path, APP_PORT=_port(live), PUBLIC_BASE_URL=closed) as app:
        result, checks = _doctor(app)
    assert result.exit_code == 1, result.output
    status, line = checks["public url"]
    assert status == "FAIL"
    assert f"cannot reach {closed}/healthz (ConnectionError)" in line
    assert "Fix: start the app (`twilio-chat run`) and make PUBLIC_BASE_URL reach it" in line
    assert checks["twilio credentials"][0] == "PASS"


def test_a_rejected_openai_key_fails_when_ai_is_on_and_warns_when_off(
    live: Live, db_path: Path, fake_openai: Any
) -> None:
    ai = {"OPENAI_API_KEY": WRONG_KEY, "OPENAI_BASE_URL": fake_openai.base_url}
    with _app(db_path, APP_PORT=_port(live), AI_ENABLED="true", **ai) as app:
        result, checks = _doctor(app)
    assert result.exit_code == 1, result.output
    status, line = checks["openai"]
    assert status == "FAIL"
    assert f"the API key was rejected by {fake_openai.base_url} (401)" in line
    assert "Fix: check OPENAI_API_KEY, or the key saved in the AI tab" in line
    assert fake_openai.requests[-1]["authorization"] == f"Bearer {WRONG_KEY}"

    # A key nothing automatic uses (AI replies off) only warns: the exit code stays 0.
    with _app(db_path, APP_PORT=_port(live), **ai) as app:
        result, checks = _doctor(app)
    assert result.exit_code == 0, result.output
    assert checks["openai"][0] == "WARN"
    assert len(fake_openai.requests) == 2


def test_ai_on_without_a_key_fails(live: Live, db_path: Path) -> None:
    with _app(db_path, APP_PORT=_port(live), AI_ENABLED="true") as app:
        result, checks = _doctor(app)
    assert result.exit_code == 1, result.output
    assert checks["openai"][0] == "FAIL"
    assert "AI replies are on but no API key is set. Fix: set OPENAI_API_KEY" in checks["openai"][1]


def test_a_database_without_migrations_fails_until_upgraded(live: Live, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with _app(empty, DATABASE_URL=f"sqlite:///{empty}", APP_PORT=_port(live)) as app:
        result, checks = _doctor(app)
        assert result.exit_code == 1, result.output
        status, line = checks["database"]
        assert status == "FAIL"
        assert "migrations are not current" in line
        assert "Fix: run `twilio-chat db upgrade`" in line
        assert checks["openai"] == (
            "SKIP",
            "the AI config is in the database, which is not ready",
        )
        assert checks["twilio credentials"][0] == "PASS"  # the sandbox keeps its own database

        upgraded = CliRunner().invoke(cli, ["db", "upgrade"], obj=app)
        assert upgraded.exit_code == 0, upgraded.output
        result, checks = _doctor(app)
        assert result.exit_code == 0, result.output
        assert checks["database"][0] == "PASS"


def test_a_missing_database_file_fails_and_is_not_created(live: Live, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "app.db"
    with _app(missing, DATABASE_URL=f"sqlite:///{missing}", APP_PORT=_port(live)) as app:
        result, checks = _doctor(app)
    assert result.exit_code == 1, result.output
    assert checks["database"][0] == "FAIL"
    assert f"no SQLite file at {missing}" in checks["database"][1]
    assert not missing.exists()


def test_a_bad_setting_is_a_fail_line_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_environment(monkeypatch, tmp_path)
    env = {"APP_PORT": "abc", "DB_PATH": str(tmp_path / "app.db"), "SECRET_KEY": SECRET}
    result = CliRunner(env=env).invoke(cli, ["doctor"])
    assert result.exit_code == 1, result.output
    checks = _parse(result)
    status, line = checks["settings"]
    assert status == "FAIL"
    assert line.startswith("APP_PORT: ")
    assert "(got 'abc')" in line
    assert "Fix: correct the variable in the environment or .env" in line
    for name in NAMES[1:]:
        assert checks[name] == ("SKIP", "the settings did not load")
    assert "error:" not in result.output
    assert SECRET not in result.output
    assert not (tmp_path / "app.db").exists()


def test_a_sandbox_that_is_not_running_is_named(db_path: Path) -> None:
    with _app(db_path, APP_PORT=str(_closed_port())) as app:
        result, checks = _doctor(app)
    assert result.exit_code == 1, result.output
    status, line = checks["twilio credentials"]
    assert status == "FAIL"
    assert "cannot reach the sandbox at http://127.0.0.1:" in line
    assert "start it (`twilio-chat run`)" in line


# The sandbox's new resources, through the SDK -----------------------------------------------------


def test_the_sandbox_serves_account_numbers_and_service_as_twilio(
    live_factory: Callable[..., Live],
) -> None:
    live = live_factory(TWILIO_MESSAGING_SERVICE_SID=SERVICE_SID)
    gateway = get_gateway(live.app)
    account = gateway.fetch_account()
    assert (account.sid, account.friendly_name, account.status, account.type) == (
        SANDBOX_ACCOUNT_SID,
        "Sandbox",
        "active",
        "Full",
    )
    number = gateway.find_number(SANDBOX_DEFAULT_FROM)
    assert number is not None
    assert number.sid.startswith("PN") and len(number.sid) == 34
    assert (number.sms_url, number.sms_method, number.status_callback) == (
        f"{live.url}/twilio/inbound",
        "POST",
        "",
    )
    assert gateway.find_number("+15551239999") is None
    service = gateway.fetch_messaging_service(SERVICE_SID)
    assert service.inbound_request_url == f"{live.url}/twilio/inbound"
    assert not service.use_inbound_webhook_on_number
    with pytest.raises(TwilioError) as info:
        gateway.fetch_messaging_service("MG" + "2" * 32)
    assert info.value.not_found

    base = f"{live.url}/sandbox/twilio/2010-04-01/Accounts/{SANDBOX_ACCOUNT_SID}"
    auth = (live.settings.account_sid, live.settings.auth_token)
    partial = requests.get(
        f"{base}/IncomingPhoneNumbers.json",
        params={"PhoneNumber": "555000*"},
        auth=auth,
        timeout=10,
    )
    assert [n["phone_number"] for n in partial.json()["incoming_phone_numbers"]] == [
        SANDBOX_DEFAULT_FROM
    ]
    for url in (
        f"{base}.json",
        f"{base}/IncomingPhoneNumbers.json",
        f"{live.url}/sandbox/twilio/messaging/v1/Services/{SERVICE_SID}",
    ):
        refused = requests.get(url, auth=(SANDBOX_ACCOUNT_SID, "not-the-token"), timeout=10)
        assert refused.status_code == 401, url
        assert refused.json()["code"] == 20003


# Judging what Twilio answered --------------------------------------------------------------------


def _number(sms_url: str, method: str = "POST", status_callback: str = "") -> RemoteNumber:
    return RemoteNumber("PN" + "0" * 32, SANDBOX_DEFAULT_FROM, sms_url, method, status_callback)


def _service(url: str, defer: bool, status_callback: str = "") -> RemoteService:
    return RemoteService(SERVICE_SID, "Shop", url, "POST", status_callback, defer)


def test_the_webhook_checks_judge_method_fragments_deferral_and_callbacks(
    db_path: Path,
) -> None:
    settings = make_settings(db_path, PUBLIC_BASE_URL="https://chat.example.org")
    inbound = "https://chat.example.org/twilio/inbound"
    ours = "https://chat.example.org/twilio/status"

    assert check_inbound_webhook(settings, _number(inbound + "#rc=3"), None).status == "PASS"
    get = check_inbound_webhook(settings, _number(inbound, method="GET"), None)
    assert (get.status, get.detail) == (
        "FAIL",
        f"{SANDBOX_DEFAULT_FROM} calls {inbound} with GET, not POST",
    )
    # A service that defers to its numbers: the number's own webhook counts.
    deferring = check_inbound_webhook(settings, _number(inbound), _service("", defer=True))
    assert deferring.status == "PASS"
    # A service that does not defer and has no request URL drops inbound texts.
    drops = check_inbound_webhook(settings, _number(inbound), _service("", defer=False))
    assert drops.status == "FAIL"
    assert "drops inbound messages" in drops.detail
    assert "'Defer to sender's webhook'" in drops.hint
    userinfo = check_inbound_webhook(
        settings, _number("https://u:s3cretpw@old.example.org/x"), None
    )
    assert userinfo.status == "FAIL"
    assert "s3cretpw" not in userinfo.line() and "https://old.example.org/x" in userinfo.detail

    assert check_status_callback(settings, _number(inbound), None).status == "PASS"
    with_ours = check_status_callback(settings, _number(inbound, status_callback=ours), None)
    assert with_ours.status == "PASS"
    other = check_status_callback(
        settings, _number(inbound), _service(inbound, False, "https://old.example.org/cb")
    )
    assert other.status == "WARN"
    assert other.detail == f"{SERVICE_SID} sends them to https://old.example.org/cb"
    assert other.hint.startswith(f"clear it or set it to {ours}")
    assert check_status_callback(settings, None, None).status == "SKIP"
