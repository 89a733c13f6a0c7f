"""Settings: validation names the bad variable, defaults, .env, the dev secret, no leaks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from twilio_chat.settings import (
    SANDBOX_ACCOUNT_SID,
    SettingsError,
    build_settings,
    load_settings,
)

SID = "AC" + "ab" * 16
TOKEN = "f" * 32


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_PORT", "abc"),
        ("APP_PORT", "70000"),
        ("APP_PORT", "0"),
        ("OPENAI_TEMPERATURE", "2.5"),
        ("TWILIO_DEFAULT_FROM", "555-1234"),
        ("AI_TARGET_NUMBER", "12345"),
        ("CHAT_MODE", "parrot"),
        ("TWILIO_VALIDATE_SIGNATURE", "maybe"),
        ("PUBLIC_BASE_URL", "ftp://x"),
        ("TWILIO_API_BASE_URL", "127.0.0.1:3000"),
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_MESSAGING_SERVICE_SID", "XX" + "0" * 32),
        ("APP_ENV", "staging"),
    ],
)
def test_bad_value_raises_one_line_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        build_settings({name: value, "SECRET_KEY": "s"})
    message = str(info.value)
    assert message.startswith(f"{name}:"), message
    assert "\n" not in message


def test_several_bad_values_are_all_named_on_one_line() -> None:
    with pytest.raises(SettingsError) as info:
        build_settings({"APP_PORT": "abc", "CHAT_MODE": "parrot"})
    message = str(info.value)
    assert "APP_PORT" in message
    assert "CHAT_MODE" in message
    assert "\n" not in message


def test_production_requires_secret_key() -> None:
    with pytest.raises(SettingsError) as info:
        build_settings({"APP_ENV": "production"})
    assert "SECRET_KEY" in str(info.value)
    assert "\n" not in str(info.value)


def test_production_refuses_switching_off_signature_checks() -> None:
    with pytest.raises(SettingsError) as info:
        build_settings(
            {"APP_ENV": "production", "SECRET_KEY": "s" * 40, "TWILIO_VALIDATE_SIGNATURE": "false"}
        )
    assert "TWILIO_VALIDATE_SIGNATURE" in str(info.value)


def test_production_with_secret_and_signatures_is_accepted() -> None:
    settings = build_settings({"APP_ENV": "production", "SECRET_KEY": "s" * 40})
    assert settings.app_env == "production"
    assert settings.twilio_validate_signature is True


def test_load_settings_in_production_without_secret_key_fails(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        load_settings(
            environ={"APP_ENV": "production", "DB_PATH": str(tmp_path / "app.db")}, env_file=None
        )
    assert not (tmp_path / "secret_key").exists()


def test_defaults() -> None:
    settings = build_settings({})
    assert settings.app_port == 3000
    assert settings.app_host == "0.0.0.0"  # noqa: S104 - the default bind, asserted
    assert settings.db_path == "data/app.db"
    assert settings.sqlalchemy_url == "sqlite:///data/app.db"
    assert settings.app_env == "development"
    assert settings.chat_mode is None  # the mode then follows the sandbox: replies.config
    assert settings.twilio_validate_signature is True
    assert settings.base_url == "http://127.0.0.1:3000"


def test_db_path_sets_the_sqlite_url() -> None:
    settings = build_settings({"DB_PATH": "/srv/chat/app.db"})
    assert settings.sqlalchemy_url == "sqlite:////srv/chat/app.db"


def test_database_url_wins_over_db_path() -> None:
    url = "postgresql+psycopg://u:p@db.internal/chat"
    settings = build_settings({"DB_PATH": "/srv/chat/app.db", "DATABASE_URL": url})
    assert settings.sqlalchemy_url == url


def test_sandbox_is_on_without_credentials() -> None:
    settings = build_settings({"SECRET_KEY": "s"})
    assert settings.sandbox is True
    assert settings.account_sid == SANDBOX_ACCOUNT_SID
    assert settings.api_base_url == "http://127.0.0.1:3000/sandbox/twilio"
    assert settings.default_from == "+15005550006"
    # The sandbox's token is derived from the secret key: stable, and secret-dependent.
    assert len(settings.auth_token) == 32
    assert settings.auth_token == build_settings({"SECRET_KEY": "s"}).auth_token
    assert settings.auth_token != build_settings({"SECRET_KEY": "t"}).auth_token


def test_sandbox_is_off_with_credentials() -> None:
    settings = build_settings({"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN})
    assert settings.sandbox is False
    assert settings.account_sid == SID
    assert settings.auth_token == TOKEN
    assert settings.api_base_url is None  # Twilio's own API
    assert settings.default_from is None


def test_one_credential_alone_keeps_the_sandbox_on() -> None:
    assert build_settings({"TWILIO_ACCOUNT_SID": SID, "SECRET_KEY": "s"}).sandbox is True


def test_twilio_sandbox_true_forces_the_sandbox_with_configured_credentials() -> None:
    settings = build_settings(
        {"TWILIO_SANDBOX": "true", "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN}
    )
    assert settings.sandbox is True
    assert settings.account_sid == SID
    assert settings.auth_token == TOKEN
    assert settings.api_base_url == "http://127.0.0.1:3000/sandbox/twilio"


def test_twilio_sandbox_false_forces_it_off() -> None:
    settings = build_settings({"TWILIO_SANDBOX": "false", "SECRET_KEY": "s"})
    assert settings.sandbox is False
    assert settings.api_base_url is None


def test_explicit_api_base_url_wins() -> None:
    settings = build_settings(
        {"TWILIO_API_BASE_URL": "http://127.0.0.1:9/mock/", "SECRET_KEY": "s"}
    )
    assert settings.api_base_url == "http://127.0.0.1:9/mock"


def test_empty_strings_count_as_unset() -> None:
    settings = build_settings(
        {
            "APP_PORT": "",
            "TWILIO_ACCOUNT_SID": "",
            "TWILIO_AUTH_TOKEN": "",
            "TWILIO_DEFAULT_FROM": "",
            "TWILIO_SANDBOX": "",
            "PUBLIC_BASE_URL": "",
            "CHAT_MODE": "",
            "SECRET_KEY": "s",
        }
    )
    assert settings.app_port == 3000
    assert settings.sandbox is True
    assert settings.default_from == "+15005550006"
    assert settings.public_base_url is None
    assert settings.chat_mode is None


def test_unknown_variables_are_ignored() -> None:
    settings = build_settings({"PATH": "/usr/bin", "HOME": "/root", "APP_PORT": "8080"})
    assert settings.app_port == 8080


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "APP_PORT=4000\nCHAT_MODE=keywords\nPUBLIC_BASE_URL=https://chat.example.com/\n"
    )
    settings = load_settings(
        environ={"APP_PORT": "5000", "DB_PATH": str(tmp_path / "app.db"), "SECRET_KEY": "s"},
        env_file=env_file,
    )
    assert settings.app_port == 5000  # the environment wins
    assert settings.chat_mode == "keywords"  # from .env
    assert settings.public_base_url == "https://chat.example.com"


def test_empty_environment_variable_does_not_mask_the_dotenv_value(tmp_path: Path) -> None:
    # docker compose's `TWILIO_AUTH_TOKEN=${TWILIO_AUTH_TOKEN}` passes "" when the host lacks it:
    # an empty value is "not set", so it must not hide the credentials kept in .env.
    env_file = tmp_path / ".env"
    env_file.write_text(f"TWILIO_ACCOUNT_SID={SID}\nTWILIO_AUTH_TOKEN={TOKEN}\nAPP_PORT=4000\n")
    settings = load_settings(
        environ={
            "TWILIO_ACCOUNT_SID": "",
            "TWILIO_AUTH_TOKEN": "",
            "APP_PORT": "",
            "DB_PATH": str(tmp_path / "app.db"),
            "SECRET_KEY": "s",
        },
        env_file=env_file,
    )
    assert settings.app_port == 4000
    assert settings.account_sid == SID
    assert settings.sandbox is False


def test_bad_value_in_dotenv_is_named(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_TEMPERATURE=9\n")
    with pytest.raises(SettingsError, match="OPENAI_TEMPERATURE"):
        load_settings(environ={"DB_PATH": str(tmp_path / "app.db")}, env_file=env_file)


def test_missing_dotenv_file_is_fine(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"DB_PATH": str(tmp_path / "app.db"), "SECRET_KEY": "s"},
        env_file=tmp_path / "nope.env",
    )
    assert settings.app_port == 3000


def test_development_secret_key_is_created_private_and_reused(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "app.db"
    environ = {"DB_PATH": str(db_path)}
    first = load_settings(environ=environ, env_file=None)
    key_file = tmp_path / "data" / "secret_key"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.secret_key is not None
    key = first.secret_key.get_secret_value()
    assert len(key) >= 32
    assert key_file.read_text().strip() == key

    second = load_settings(environ=environ, env_file=None)
    assert second.secret_key is not None
    assert second.secret_key.get_secret_value() == key
    # The sandbox's derived auth token survives a restart too.
    assert second.auth_token == first.auth_token


def test_configured_secret_key_writes_no_file(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"DB_PATH": str(tmp_path / "app.db"), "SECRET_KEY": "mine"}, env_file=None
    )
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == "mine"
    assert not (tmp_path / "secret_key").exists()


def test_secrets_are_not_shown_in_repr_or_str() -> None:
    secrets = {
        "TWILIO_AUTH_TOKEN": "authtoken-" + "9" * 22,
        "SECRET_KEY": "secretkey-very-private-value",
        "ADMIN_PASSWORD": "adminpassword-hunter2",
        "OPENAI_API_KEY": "sk-openai-private-key-value",
    }
    settings = build_settings({"TWILIO_ACCOUNT_SID": SID, **secrets})
    shown = repr(settings) + str(settings)
    for name, value in secrets.items():
        assert value not in shown, name
    # The values are still there for the code that needs them.
    assert settings.auth_token == secrets["TWILIO_AUTH_TOKEN"]


def test_derived_sandbox_token_is_not_shown_in_repr() -> None:
    settings = build_settings({"SECRET_KEY": "some-secret"})
    assert settings.auth_token not in repr(settings) + str(settings)


def test_settings_are_frozen() -> None:
    settings = build_settings({})
    with pytest.raises(ValueError, match="frozen"):
        settings.app_port = 1  # type: ignore[misc]
