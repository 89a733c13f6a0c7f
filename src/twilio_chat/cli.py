"""The command line: one click group behind `twilio-chat` and `python manage.py`."""

from __future__ import annotations

import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click
import requests
from flask import Flask
from sqlalchemy.exc import InterfaceError, OperationalError

from twilio_chat import create_app, messaging
from twilio_chat.accounts import audit, throttle, users
from twilio_chat.db import migrate
from twilio_chat.db.engine import get_db
from twilio_chat.errors import AppError
from twilio_chat.inbox import sync
from twilio_chat.replies import ai
from twilio_chat.replies import config as reply_config
from twilio_chat.settings import Settings, SettingsError, is_e164, load_settings
from twilio_chat.telemetry import logs
from twilio_chat.twilio.gateway import get_gateway


def _app(ctx: click.Context) -> Flask:
    """Return the app the command works on (built from the environment unless given)."""
    root = ctx.find_root()
    if not isinstance(root.obj, Flask):
        root.obj = create_app(load_settings())
    return root.obj


def _settings(app: Flask) -> Settings:
    settings: Settings = app.extensions["settings"]
    return settings


class CommandError(click.ClickException):
    """A failure shown as one line, `error: …`, with an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        """Print the one-line error to stderr."""
        click.echo(f"error: {self.format_message()}", err=True)


class AppGroup(click.Group):
    """A group that turns the app's errors into one clear line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, translating known errors."""
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise CommandError(f"bad setting: {exc}", 2) from None
        except AppError as exc:
            raise CommandError(
                f"{exc.field}: {exc.message}" if exc.field else exc.message
            ) from None
        except requests.ConnectionError:
            raise CommandError(
                "cannot reach the server; is it running? (twilio-chat run)"
            ) from None
        except (OperationalError, InterfaceError) as exc:  # down, refused, unreadable file
            raise CommandError(_database_error(ctx, exc)) from None
        except OSError as exc:  # e.g. a folder of DB_PATH that cannot be created
            where = f"{exc.filename}: " if exc.filename else ""
            raise CommandError(f"{where}{exc.strerror or exc}") from None


def _database_error(ctx: click.Context, exc: OperationalError | InterfaceError) -> str:
    """Describe a database failure in one line naming the database, its password hidden."""
    root = ctx.find_root().obj
    reason = " ".join(str(exc.orig or exc).split())
    if not isinstance(root, Flask):
        return f"the database failed: {reason}"
    url = get_db(root).url
    if url.password:
        reason = reason.replace(str(url.password), "***")
    return f"cannot use the database {url.render_as_string(hide_password=True)}: {reason}"


@click.group(cls=AppGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Twilio Chat: a self-hosted SMS inbox and auto-responder on Twilio.

    Settings come from the environment and .env (see .env.example).
    """


# Server and worker --------------------------------------------------------------------------


@cli.command()
@click.option("--host", default=None, help="Address to bind (default APP_HOST, 0.0.0.0).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default APP_PORT, 3000)."
)
@click.option("--no-worker", is_flag=True, help="Do not run the reply worker in this process.")
@click.pass_context
def run(ctx: click.Context, host: str | None, port: int | None, no_worker: bool) -> None:
    """Apply migrations, then serve the inbox with the reply worker in the same process."""
    from werkzeug.serving import make_server

    from twilio_chat.jobs.worker import start_thread

    app = _app(ctx)
    configured = _settings(app)
    if port is not None and port != configured.app_port:
        # The sandbox's address and the default public URL follow the port actually served.
        app = ctx.find_root().obj = create_app(configured.model_copy(update={"app_port": port}))
    settings = _settings(app)
    logs.setup_logging(settings)
    admin = _prepare(app)
    host = host or settings.app_host
    port = settings.app_port
    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {_host_port(host, port)}: {exc.strerror or exc}"
            " (another server there? choose a port with --port or APP_PORT)"
        ) from None
    stop: threading.Event | None = None
    if settings.worker_enabled and not no_worker:
        _thread, stop = start_thread(app)
    local = _local_url(host, port)
    # A command printed here must work as printed in another terminal, from this folder; one
    # started there reads the settings from this folder's .env, which knows no --port.
    url_option = f" --url {local}" if configured.base_url != settings.base_url else ""
    for line in banner(settings, admin, host, local, _command(), url_option):
        click.echo(line)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if stop is not None:
            stop.set()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _local_url(host: str, port: int) -> str:
    """Return the URL this machine reaches a server bound to `host` at."""
    if host == "0.0.0.0":  # noqa: S104
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{_host_port(host, port)}"


def _command() -> str:
    """Return how a shell here runs `twilio-chat`: its name when PATH finds this one."""
    script = Path(sys.executable).with_name("twilio-chat")
    found = shutil.which("twilio-chat")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "twilio-chat"
    if not script.exists():  # not installed with its console script: the module runs it
        return f"{shlex.quote(sys.executable)} -m twilio_chat"
    try:
        shown = str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        shown = str(script.absolute())
    return shlex.quote(shown)


@dataclass(frozen=True)
class AdminLogin:
    """How the first admin logs in, as `_prepare` found or made it."""

    created: bool
    generated: str | None


def banner(
    settings: Settings, admin: AdminLogin, host: str, local: str, command: str, url_option: str
) -> list[str]:
    """Return the lines `run` prints: where it listens, how to log in, commands to try."""
    everywhere = host in ("0.0.0.0", "::")  # noqa: S104
    where = "every network interface" if everywhere else "this address only"
    port = settings.app_port
    lines = [
        f"Twilio Chat is listening on {_host_port(host, port)} ({where}): open {local}/",
    ]
    if settings.sandbox:
        lines.append(
            "Sandbox mode: the built-in Twilio sandbox stands in for Twilio; no real SMS is sent."
        )
    lines += _login_lines(settings, admin)
    user = shlex.quote(settings.admin_username)
    lines.append("Try it from another terminal, in this folder:")
    if settings.sandbox:
        lines.append(f"  {command} simulate --from +15551230001 --body 'Hello'{url_option}")
    lines += [
        f"  TOKEN=$({command} create-token --user {user} | tail -n 1)",
        f'  curl -H "Authorization: Bearer $TOKEN" {local}/api/conversations',
        "Forgot a password? Set a new one (it asks for it):",
        f"  {command} set-password --user {user}",
    ]
    return lines


def _login_lines(settings: Settings, admin: AdminLogin) -> list[str]:
    name = settings.admin_username
    if admin.generated:
        return [
            f"Log in as '{name}' with the password {admin.generated}",
            "(made now and shown only this once)",
        ]
    if admin.created:
        return [f"Log in as '{name}' with the password in ADMIN_PASSWORD."]
    lines = ["Log in with your user name and password."]
    if settings.admin_password is not None:
        lines.append("(ADMIN_PASSWORD was read only when the first admin was created.)")
    return lines


def _prepare(app: Flask) -> AdminLogin:
    """Apply migrations, note the reply mode, create the first admin if there is no user."""
    settings = _settings(app)
    migrate.upgrade(get_db(app))
    reply_config.note_start(get_db(app), settings)
    had_users = users.any_user(get_db(app))
    generated = users.ensure_admin(
        get_db(app), settings.admin_username, _secret(settings.admin_password)
    )
    return AdminLogin(created=not had_users, generated=generated)


@cli.command()
@click.pass_context
def prepare(ctx: click.Context) -> None:
    """Apply migrations and create the first admin: what a server runs before it starts."""
    app = _app(ctx)
    admin = _prepare(app)
    click.echo("database is up to date")
    for line in _login_lines(_settings(app), admin):
        click.echo(line)


@cli.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a reply worker in the foreground until SIGINT/SIGTERM."""
    from twilio_chat.jobs.worker import Worker

    app = _app(ctx)
    logs.setup_logging(_settings(app))
    reply_config.note_start(get_db(app), _settings(app))
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    w = Worker(app)
    click.echo(f"worker {w.id} running; Ctrl+C to stop")
    w.run(stop)


@cli.group(cls=AppGroup)
def db() -> None:
    """Database commands."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every pending migration."""
    app = _app(ctx)
    migrate.upgrade(get_db(app))
    click.echo("database is up to date")


# Messages -------------------------------------------------------------------------------


@cli.command()
@click.option("--to", required=True, help="Recipient, E.164 (+15551234567).")
@click.option("--body", default="", help="Text of the message.")
@click.option("--media-url", "media_urls", multiple=True, help="Media URL (repeat for several).")
@click.option(
    "--use-messaging-service", is_flag=True, help="Send through TWILIO_MESSAGING_SERVICE_SID."
)
@click.pass_context
def send(
    ctx: click.Context, to: str, body: str, media_urls: Sequence[str], use_messaging_service: bool
) -> None:
    """Send an SMS/MMS and print its SID and status."""
    app = _app(ctx)
    req = messaging.SendRequest(
        to=to,
        body=body,
        media_urls=list(media_urls),
        use_messaging_service=use_messaging_service,
        source="cli",
    )
    message = messaging.send(get_db(app), get_gateway(app), _settings(app), req)
    audit.record(get_db(app), "send", to, {"sid": message.sid, "source": "cli"}, actor="cli")
    click.echo(f"sent {message.sid} to {message.contact_number}: {message.status}")


@cli.command("ai-send")
@click.option("--to", required=True, help="Recipient, E.164; their stored history is the context.")
@click.option("--latest", default="", help="The latest text to answer (added after the history).")
@click.option(
    "--history-limit",
    type=click.IntRange(0, 200),
    default=None,
    help="How many stored messages to include (default: the AI config's history_limit).",
)
@click.option("--dry-run", is_flag=True, help="Print the answer without sending it.")
@click.pass_context
def ai_send(
    ctx: click.Context, to: str, latest: str, history_limit: int | None, dry_run: bool
) -> None:
    """Generate an AI answer from the stored history plus the latest text, and send it."""
    app = _app(ctx)
    settings = _settings(app)
    if not is_e164(to):
        raise AppError(f"--to must be an E.164 number like +15551230001, got {to!r}", "to")
    with get_db(app).read() as session:
        config = reply_config.get_ai(session, settings)
        limit = config.history_limit if history_limit is None else history_limit
        try:
            text = ai.answer_latest(session, config, to, latest, limit, settings.ai_timeout_seconds)
        except ai.AIError as exc:
            raise CommandError(f"AI: {exc.message}") from None
    click.echo(text)
    if dry_run:
        return
    req = messaging.SendRequest(to=to, body=text, source="ai")
    message = messaging.send(get_db(app), get_gateway(app), settings, req)
    click.echo(f"sent {message.sid} to {to}: {message.status}")


@cli.command("sync")
@click.option("--days", type=click.IntRange(1, 400), default=1, help="Look back this many days.")
@click.option("--limit", type=click.IntRange(1, 100000), default=None, help="At most this many.")
@click.pass_context
def sync_command(ctx: click.Context, days: int, limit: int | None) -> None:
    """Pull Twilio's message list, store what is missing, and answer texts missed while down."""
    from datetime import timedelta

    from twilio_chat.db.models import utcnow

    app = _app(ctx)
    result = sync.sync(
        get_db(app),
        get_gateway(app),
        _settings(app),
        date_sent_after=utcnow() - timedelta(days=days),
        limit=limit,
    )
    click.echo(
        f"fetched {result.fetched}, stored {result.inserted} new, updated {result.updated}, "
        f"enqueued {result.replies_enqueued} replies"
    )


@cli.command()
@click.option("--from", "from_", required=True, help="The simulated handset's number, E.164.")
@click.option("--body", default="", help="What the handset texts.")
@click.option("--media-url", "media_urls", multiple=True, help="Media URL (repeat for several).")
@click.option("--to", default=None, help="Our number it texts (default TWILIO_DEFAULT_FROM).")
@click.option("--url", default=None, help="The running server (default PUBLIC_BASE_URL).")
@click.pass_context
def simulate(
    ctx: click.Context,
    from_: str,
    body: str,
    media_urls: Sequence[str],
    to: str | None,
    url: str | None,
) -> None:
    """Text the running server from a simulated phone: a signed inbound webhook, as Twilio sends."""
    from twilio_chat.sandbox.state import inbound_form, new_sid

    app = _app(ctx)
    settings = _settings(app)
    base = (url or settings.base_url).rstrip("/")
    if not is_e164(from_):
        raise AppError(f"--from must be an E.164 number like +15551230001, got {from_!r}", "from")
    to = to or settings.default_from
    if not to:
        raise AppError("--to is required when TWILIO_DEFAULT_FROM is not set", "to")
    if settings.sandbox:
        # Through the sandbox, so it also sees STOP/START as Twilio would.
        account = settings.account_sid
        endpoint = f"{base}/sandbox/twilio/2010-04-01/Accounts/{account}/SimulatedInbound.json"
        data: list[tuple[str, str]] = [("From", from_), ("Body", body), ("To", to)]
        data += [("MediaUrl", m) for m in media_urls]
        answer = requests.post(
            endpoint, data=data, auth=(settings.account_sid, settings.auth_token), timeout=30
        )
        if answer.status_code != 201:
            raise CommandError(f"the server answered {answer.status_code}: {_error_text(answer)}")
        result = answer.json()
        status = result["webhook_status"]
        click.echo(f"texted {result['sid']} from {from_} to {to}; webhook answered {status}")
        return
    sid = new_sid("MM" if media_urls else "SM")
    form = inbound_form(settings.account_sid, sid, from_, to, body, list(media_urls))
    target = f"{base}/twilio/inbound"
    signature = get_gateway(app).sign(f"{settings.base_url}/twilio/inbound", form)
    answer = requests.post(target, data=form, headers={"X-Twilio-Signature": signature}, timeout=30)
    click.echo(f"texted {sid} from {from_} to {to}; webhook answered {answer.status_code}")
    if answer.status_code != 200:
        raise CommandError(f"the webhook answered {answer.status_code}: {answer.text[:200]}")


def _error_text(answer: requests.Response) -> str:
    try:
        data: Any = answer.json()
    except ValueError:
        return answer.text[:200]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message", err))
    return str(data)[:200]


# Users and tokens ----------------------------------------------------------------------------


@cli.command("create-user")
@click.option("--username", required=True, help="Login name.")
@click.option("--password", default=None, help="Password (asked for when omitted).")
@click.option("--admin", is_flag=True, help="Make the user an admin.")
@click.pass_context
def create_user(ctx: click.Context, username: str, password: str | None, admin: bool) -> None:
    """Create a panel user."""
    app = _app(ctx)
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = users.create_user(get_db(app), username, password, is_admin=admin)
    audit.record(get_db(app), "create_user", user.username, {"admin": admin}, actor="cli")
    click.echo(f"created user {user.username}{' (admin)' if admin else ''}")


@cli.command("set-password")
@click.option("--user", "username", required=True, help="The user whose password is set.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (for scripts) instead of asking for it.",
)
@click.pass_context
def set_password(ctx: click.Context, username: str, password_stdin: bool) -> None:
    """Set a user's password, e.g. a forgotten one; it is asked for twice and never shown."""
    app = _app(ctx)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    users.set_password(get_db(app), username, password)
    throttle.forget_account_failures(get_db(app), username)
    audit.record(get_db(app), "set_password", username, {}, actor="cli")
    click.echo(f"password of {username} set")


@cli.command("create-token")
@click.option("--user", "username", required=True, help="The user the token acts as.")
@click.option("--name", default="", help="A label to recognise the token by.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(users.SCOPES),
    help="Scope (repeat; default all: read, send, admin).",
)
@click.pass_context
def create_token(ctx: click.Context, username: str, name: str, scopes: Sequence[str]) -> None:
    """Create an API bearer token; the token alone is printed on the last line."""
    app = _app(ctx)
    row, token = users.create_token(get_db(app), username, name, tuple(scopes) or users.SCOPES)
    audit.record(get_db(app), "create_token", username, {"token_id": row.id}, actor="cli")
    click.echo(f"token {row.id} for {username} (scopes: {row.scopes}); it is shown only once:")
    click.echo(token)


@cli.command("revoke-token")
@click.argument("token_id", type=int)
@click.pass_context
def revoke_token(ctx: click.Context, token_id: int) -> None:
    """Revoke an API token by its id."""
    users.revoke_token(get_db(_app(ctx)), token_id)
    click.echo(f"token {token_id} revoked")


# Set-up check ----------------------------------------------------------------------------------


@cli.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check the set-up: settings, database, Twilio, webhooks, public URL and OpenAI."""
    from twilio_chat.ops import doctor as checks

    root = ctx.find_root()
    if isinstance(root.obj, Flask):
        app = root.obj
        settings = _settings(app)
        results = checks.run_checks(lambda: settings, get_db(app), get_gateway(app))
    else:  # a bad setting must be a FAIL line, not `error: bad setting`
        results = checks.run_checks(load_settings)
    for check in results:
        click.echo(check.line())
    click.echo(checks.summary(results))
    if checks.failed(results):
        ctx.exit(1)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def main(args: Sequence[str] | None = None) -> None:
    """Run the CLI (the `twilio-chat` console script)."""
    cli.main(args=list(args) if args is not None else None, prog_name="twilio-chat")
