"""The command line: click group `twilio-chat` (also `python manage.py`)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import inspect, select
from support import PHONE, Live, make_settings

from twilio_chat import create_app
from twilio_chat.accounts import throttle
from twilio_chat.accounts.users import authenticate
from twilio_chat.cli import cli
from twilio_chat.db.engine import Database, get_db
from twilio_chat.db.migrate import is_current
from twilio_chat.db.models import AuditEvent, LoginAttempt, Message
from twilio_chat.sandbox import get_sandbox

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (
    "send",
    "simulate",
    "create-user",
    "set-password",
    "create-token",
    "db",
    "run",
    "worker",
)


def _invoke(app: Flask, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), obj=app)


def _error_line(result: Result) -> str:
    """The single `error: …` line a failed command prints to stderr."""
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def app(db_path: Path) -> Iterator[Flask]:
    """An app on a migrated database, without a server."""
    app = create_app(make_settings(db_path))
    yield app
    get_db(app).dispose()


# send ----------------------------------------------------------------------------------------


def test_send_prints_the_sid_and_stores_the_message(live: Live) -> None:
    result = _invoke(live.app, "send", "--to", PHONE, "--body", "Hello from the CLI")
    assert result.exit_code == 0, result.output
    with get_db(live.app).read() as session:
        stored = session.scalars(select(Message)).all()
    assert len(stored) == 1
    message = stored[0]
    assert message.sid is not None
    assert message.sid.startswith("SM")
    assert message.sid in result.stdout
    assert (message.direction, message.contact_number, message.body, message.source) == (
        "outbound",
        PHONE,
        "Hello from the CLI",
        "cli",
    )


def test_send_with_a_bad_to_fails_with_one_error_line(live: Live) -> None:
    result = _invoke(live.app, "send", "--to", "555-1234", "--body", "Hi")
    line = _error_line(result)
    assert line.removeprefix("error: ").split(":")[0] == "to"
    with get_db(live.app).read() as session:
        assert session.scalars(select(Message)).all() == []


def test_send_without_to_is_a_usage_error(app: Flask) -> None:
    result = _invoke(app, "send", "--body", "Hi")
    assert result.exit_code == 2
    assert "--to" in result.output


def test_send_with_a_too_long_body_fails_naming_body(live: Live) -> None:
    result = _invoke(live.app, "send", "--to", PHONE, "--body", "x" * 1601)
    line = _error_line(result)
    assert line.removeprefix("error: ").split(":")[0] == "body"


def test_send_refused_by_twilio_fails_with_one_error_line(live: Live) -> None:
    get_sandbox(live.app).inject_fault(500)
    result = _invoke(live.app, "send", "--to", PHONE, "--body", "Hi")
    line = _error_line(result)
    assert "Twilio" in line
    assert live.settings.auth_token not in result.output
    assert "\x1b" not in result.output


# users and tokens ------------------------------------------------------------------------------


def test_create_user_then_login_works(app: Flask) -> None:
    result = _invoke(app, "create-user", "--username", "alice", "--password", "longpassword")
    assert result.exit_code == 0, result.output
    assert "alice" in result.stdout
    identity = authenticate(get_db(app), "alice", "longpassword")
    assert identity is not None
    assert identity.username == "alice"
    assert not identity.is_admin
    assert authenticate(get_db(app), "alice", "wrongpassword") is None


def test_create_admin_user(app: Flask) -> None:
    result = _invoke(
        app, "create-user", "--username", "boss", "--password", "longpassword", "--admin"
    )
    assert result.exit_code == 0, result.output
    identity = authenticate(get_db(app), "boss", "longpassword")
    assert identity is not None
    assert identity.is_admin


def test_create_user_with_a_short_password_fails(app: Flask) -> None:
    result = _invoke(app, "create-user", "--username", "bob", "--password", "short")
    line = _error_line(result)
    assert "password" in line
    assert authenticate(get_db(app), "bob", "short") is None


def test_create_user_twice_fails(app: Flask) -> None:
    first = _invoke(app, "create-user", "--username", "carol", "--password", "longpassword")
    assert first.exit_code == 0, first.output
    again = _invoke(app, "create-user", "--username", "carol", "--password", "otherpassword")
    line = _error_line(again)
    assert "carol" in line
    # The first password still works; the second was not stored.
    assert authenticate(get_db(app), "carol", "longpassword") is not None
    assert authenticate(get_db(app), "carol", "otherpassword") is None


def test_create_token_prints_a_token_that_authenticates(live: Live) -> None:
    result = _invoke(live.app, "create-token", "--user", "admin", "--name", "script")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token == token.strip()
    assert " " not in token
    answer = live.api("GET", "/api/conversations", token=token)
    assert answer.status_code == 200, answer.text
    assert live.api("GET", "/api/conversations", token=token + "x").status_code == 401


def test_create_token_for_an_unknown_user_fails(app: Flask) -> None:
    result = _invoke(app, "create-token", "--user", "nobody")
    line = _error_line(result)
    assert "nobody" in line


# set-password --------------------------------------------------------------------------------


def _audit_text(app: Flask) -> str:
    with get_db(app).read() as session:
        rows = session.execute(select(AuditEvent.action, AuditEvent.target, AuditEvent.detail))
        return repr(rows.all())


def test_set_password_asks_twice_without_showing_it_and_replaces_the_old_one(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        throttle.record_failure(get_db(app), "203.0.113.9", "admin")
    result = CliRunner().invoke(
        cli,
        ["set-password", "--user", "admin"],
        obj=app,
        input="a-new-password-42\na-new-password-42\n",
    )
    assert result.exit_code == 0, result.output
    assert "a-new-password-42" not in result.output  # never echoed
    assert "New password" in result.output and "password of admin set" in result.output
    assert authenticate(get_db(app), "admin", "a-new-password-42") is not None
    assert authenticate(get_db(app), "admin", "admin-password") is None
    assert "a-new-password-42" not in caplog.text
    audit = _audit_text(app)
    assert "set_password" in audit and "a-new-password-42" not in audit
    # A locked-out account can log in at once with its new password.
    with get_db(app).read() as session:
        assert session.scalars(select(LoginAttempt)).all() == []


def test_set_password_reads_one_line_from_stdin_for_scripts(app: Flask) -> None:
    result = CliRunner().invoke(
        cli,
        ["set-password", "--user", "admin", "--password-stdin"],
        obj=app,
        input="from a script 1\n",
    )
    assert result.exit_code == 0, result.output
    assert "from a script" not in result.output and "New password" not in result.output
    assert authenticate(get_db(app), "admin", "from a script 1") is not None


def test_set_password_keeps_the_old_one_when_the_two_entries_differ(app: Flask) -> None:
    result = CliRunner().invoke(
        cli,
        ["set-password", "--user", "admin"],
        obj=app,
        input="first-password\nsecond-password\n",
    )
    assert result.exit_code != 0
    assert "do not match" in result.output
    assert "first-password" not in result.output and "second-password" not in result.output
    assert authenticate(get_db(app), "admin", "admin-password") is not None


@pytest.mark.parametrize(
    ("user", "password", "field"),
    [("admin", "short", "password"), ("nobody", "long-enough-1", "user")],
)
def test_set_password_refusals_are_one_error_line(
    app: Flask, user: str, password: str, field: str
) -> None:
    result = CliRunner().invoke(
        cli, ["set-password", "--user", user, "--password-stdin"], obj=app, input=password + "\n"
    )
    line = _error_line(result)
    assert line.removeprefix("error: ").split(":")[0] == field
    assert password not in result.output
    assert authenticate(get_db(app), "admin", "admin-password") is not None


# simulate --------------------------------------------------------------------------------------


def test_simulate_stores_an_inbound_message_through_the_server(live: Live) -> None:
    result = _invoke(
        live.app, "simulate", "--from", "+15551230009", "--body", "Hi", "--url", live.url
    )
    assert result.exit_code == 0, result.output
    assert "200" in result.stdout
    answer = live.api("GET", "/api/conversations/+15551230009")
    assert answer.status_code == 200, answer.text
    messages = answer.json()["messages"]
    assert [(m["direction"], m["body"]) for m in messages] == [("inbound", "Hi")]
    assert messages[0]["sid"] in result.stdout


def test_simulate_with_a_bad_from_fails(live: Live) -> None:
    result = _invoke(live.app, "simulate", "--from", "12345", "--body", "Hi", "--url", live.url)
    line = _error_line(result)
    assert "from" in line
    assert live.api("GET", "/api/conversations").json()["conversations"] == []


def test_simulate_without_a_running_server_says_so(app: Flask) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = _invoke(app, "simulate", "--from", PHONE, "--body", "Hi", "--url", url)
    line = _error_line(result)
    assert "cannot reach the server" in line
    assert app.extensions["settings"].auth_token not in result.output


# db upgrade ------------------------------------------------------------------------------------


def test_db_upgrade_creates_the_tables_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    path.touch()
    app = create_app(make_settings(path))
    db = get_db(app)
    assert not is_current(db)

    first = _invoke(app, "db", "upgrade")
    assert first.exit_code == 0, first.output
    assert is_current(db)
    tables = set(inspect(db.engine).get_table_names())
    assert {"messages", "users", "jobs"} <= tables

    again = _invoke(app, "db", "upgrade")
    assert again.exit_code == 0, again.output
    assert is_current(db)
    db.dispose()


def test_db_upgrade_creates_a_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "app.db"
    app = create_app(make_settings(path))
    result = _invoke(app, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert path.is_file()
    check = Database(f"sqlite:///{path}")
    assert is_current(check)
    check.dispose()
    get_db(app).dispose()


# settings from the environment -----------------------------------------------------------------


def test_bad_setting_exits_2_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB_PATH", str(tmp_path / "app.db"))
    monkeypatch.setenv("SECRET_KEY", "test-secret")
    runner = CliRunner(env={"APP_PORT": "abc"})
    result = runner.invoke(cli, ["send", "--to", PHONE, "--body", "Hi"])
    assert result.exit_code == 2, result.output
    line = _error_line(result)
    assert "APP_PORT" in line
    # Nothing was created from the bad configuration.
    assert not (tmp_path / "app.db").exists()


def test_bad_setting_in_dotenv_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB_PATH", str(tmp_path / "app.db"))
    monkeypatch.delenv("CHAT_MODE", raising=False)
    (tmp_path / ".env").write_text("CHAT_MODE=parrot\n")
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 2, result.output
    assert "CHAT_MODE" in _error_line(result)


def test_commands_build_the_app_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB_PATH", str(tmp_path / "data" / "app.db"))
    monkeypatch.setenv("SECRET_KEY", "test-secret")
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    check = Database(f"sqlite:///{tmp_path / 'data' / 'app.db'}")
    assert is_current(check)
    check.dispose()


# entry points ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "manage.py", "--help"],
        [str(ROOT / ".venv" / "bin" / "twilio-chat"), "--help"],
    ],
    ids=["manage.py", "twilio-chat"],
)
def test_entry_points_list_the_commands(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = {
        line.split()[0]
        for line in done.stdout.split("Commands:", 1)[1].splitlines()
        if line.strip()
    }
    assert set(COMMANDS) <= listed


# the database is down ----------------------------------------------------------------------------


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("args", [["db", "upgrade"], ["run", "--no-worker"], ["prepare"]])
def test_a_database_that_is_down_is_one_error_line_naming_it(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    port = _closed_port()
    url = f"postgresql+psycopg://chat:hunter2secret@127.0.0.1:{port}/inbox"
    runner = CliRunner(env={"DATABASE_URL": url, "SECRET_KEY": "test-secret"})
    result = runner.invoke(cli, args)
    line = _error_line(result)
    assert f"postgresql+psycopg://chat:***@127.0.0.1:{port}/inbox" in line
    assert "hunter2secret" not in result.output
    assert result.exit_code == 1


def test_a_sqlite_file_that_cannot_be_made_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file where the folder would go")
    runner = CliRunner(env={"DB_PATH": str(tmp_path / "taken" / "app.db"), "SECRET_KEY": "x"})
    line = _error_line(runner.invoke(cli, ["db", "upgrade"]))
    assert str(tmp_path / "taken") in line
