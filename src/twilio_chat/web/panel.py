"""The web panel: pages render services' data; forms save through the JSON API."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext
from werkzeug.wrappers import Response

from twilio_chat import messaging
from twilio_chat.accounts import audit, throttle
from twilio_chat.accounts.users import authenticate
from twilio_chat.db.engine import get_db
from twilio_chat.errors import NotFound
from twilio_chat.inbox import conversations, stats
from twilio_chat.replies import config as reply_config
from twilio_chat.settings import Settings, is_e164, to_e164
from twilio_chat.twilio.errors import describe_error, fix_hint
from twilio_chat.twilio.gateway import MediaRefused, get_gateway
from twilio_chat.web.auth import csrf_ok, csrf_token, current_identity, public, start_session
from twilio_chat.web.live import answer_poll

bp = Blueprint("panel", __name__)
SIMULATOR_PHONE = "+15551230001"
# Offered for business hours (any IANA zone is accepted).
COMMON_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Warsaw",
    "Europe/Berlin",
    "Europe/Paris",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
)


def safe_next(target: str | None) -> str:
    """Return `target` if it is a plain local path, else "/" (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if any(ord(ch) < 32 or ord(ch) == 127 or ch == "\\" for ch in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _settings() -> Settings:
    settings: Settings = current_app.extensions["settings"]
    return settings


def _part(template: str, **context: Any) -> str:
    """Render a page's live part (no navbar) with who asks and the form token."""
    return render_template(
        template, user=current_identity(), csrf=csrf_token(), sandbox=_settings().sandbox, **context
    )


def _page(template: str, **context: Any) -> str:
    """Render a whole panel page: its navbar says who answers texts, its title the unread."""
    mode, unread = None, 0
    if current_identity() is not None:
        with get_db().read() as session:
            mode = reply_config.current_mode(session, _settings())
            unread = conversations.unread_conversations(session)
    return _part(template, answering=mode, unread=unread, **context)


@bp.app_template_global()
def mode_label(mode: str) -> str:
    """Return the name of an automation mode, translated."""
    labels = {
        reply_config.OFF: gettext("Off"),
        reply_config.AUTO_REPLY: gettext("Auto-reply"),
        reply_config.AI: gettext("AI"),
        "echo": gettext("Echo"),
        "keywords": gettext("Keywords"),
    }
    return str(labels.get(mode, mode))


@bp.app_template_global()
def fix_hint_for(code: int | None) -> str | None:
    """Return what a person can do about a message that failed with this code, translated."""
    hint = fix_hint(code)
    return str(gettext(hint)) if hint else None


@bp.app_template_global()
def audit_action(action: str) -> str:
    """Return what an audit entry's action did, in the user's language."""
    actions = {
        "login": gettext("Logged in"),
        "login_failed": gettext("Failed to log in"),
        "send": gettext("Sent a text"),
        "redact": gettext("Redacted a text"),
        "delete": gettext("Deleted a text"),
        "contact_name": gettext("Renamed a contact"),
        "pause": gettext("Paused automatic replies"),
        "resume": gettext("Resumed automatic replies"),
        "config_auto_reply": gettext("Changed the auto-reply"),
        "config_ai": gettext("Changed the AI settings"),
        "automation_mode": gettext("Chose who answers"),
        "create_user": gettext("Created a user"),
        "set_password": gettext("Set a password"),
        "create_token": gettext("Created an API token"),
    }
    return str(actions.get(action, action))


@bp.app_template_global()
def audit_field(field: str) -> str:
    """Return a setting's name as the panel shows it, in the user's language."""
    fields = {
        "enabled": gettext("On"),
        "message": gettext("Message"),
        "window_hours": gettext("Once per conversation within (hours)"),
        "outside_hours_only": gettext("Only outside business hours"),
        "business_hours": gettext("Business hours"),
        "api_key": gettext("API key"),
        "model": gettext("Model"),
        "temperature": gettext("Temperature (0–2)"),  # noqa: RUF001 - the form's own label
        "system_prompt": gettext("System prompt"),
        "target_number": gettext("Only for this number (empty: everyone)"),
        "history_limit": gettext("History (messages)"),
        "max_segments": gettext("Max SMS segments"),
        "base_url": gettext("Base URL (OpenAI-compatible server; empty: OpenAI)"),
        "fallback_text": gettext("Fallback text when the model fails"),
    }
    return str(fields.get(field, field))


@bp.app_template_global()
def mode_help(mode: str) -> str:
    """Return what an automation mode does, translated."""
    helps = {
        reply_config.OFF: gettext("Nobody answers automatically: the inbox only."),
        reply_config.AUTO_REPLY: gettext("A fixed message (set below)."),
        reply_config.AI: gettext("An AI model answers (set below)."),
        "echo": gettext("Answers with the text it got (“Echo: …”): for trying things out."),
        "keywords": gettext("Answers a few keywords such as hours or price."),
    }
    return str(helps.get(mode, gettext("A chat engine installed on this server.")))


@bp.app_template_global()
def error_text_for(code: int | None, fallback: str | None) -> str:
    """Return a readable, translated text for a Twilio error code."""
    return str(gettext(describe_error(code, fallback or "")))


def _cursor() -> str:
    with get_db().read() as s:
        return conversations.format_cursor(*conversations.current_cursor(s))


# Login ----------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
@public("the login form itself")
def login() -> str | Response | tuple[str, int]:
    """Show the login form and log a user in (throttled per IP and per account)."""
    error = None
    username = ""
    status = 200
    if request.method == "POST":
        username = request.form.get("username", "")
        ip = request.remote_addr or "-"
        wait = throttle.wait_seconds(get_db(), ip, username)
        if not csrf_ok():
            error, status = gettext("Your session expired; please try again."), 401
        elif wait:
            minutes = max(1, -(-wait // 60))
            error = gettext(
                "Too many failed logins. Try again in %(minutes)d minutes.", minutes=minutes
            )
            status = 429
        else:
            identity = authenticate(get_db(), username, request.form.get("password", ""))
            if identity is not None:
                session.clear()
                session["user_id"] = identity.user_id
                start_session()
                csrf_token()
                audit.record(get_db(), "login", identity.username, actor=identity.username)
                return redirect(safe_next(request.args.get("next")))
            throttle.record_failure(get_db(), ip, username)
            audit.record(get_db(), "login_failed", username[:64], actor=username[:64] or "-")
            error, status = gettext("Wrong username or password."), 401
    page = render_template(
        "login.html", error=error, username=username, csrf=csrf_token(), user=None
    )
    return (page, status) if status != 200 else page


@bp.post("/logout")
def logout() -> Response:
    """Log out."""
    session.clear()
    return redirect("/login")


# Dashboard ------------------------------------------------------------------------------


def _filters() -> dict[str, str]:
    keys = ("direction", "status", "number", "text")
    return {k: request.args[k].strip() for k in keys if request.args.get(k, "").strip()}


def _dashboard_context() -> dict[str, Any]:
    filters = _filters()
    direction = filters.get("direction")
    page = conversations.list_messages(
        get_db(),
        50,
        direction if direction in ("inbound", "outbound") else None,
        status=filters.get("status"),
        number=filters.get("number"),
        text=filters.get("text"),
    )
    return {"stats": stats.dashboard(get_db()), "messages": page.items, "filters": filters}


@bp.get("/")
def dashboard() -> str:
    """Show statistics, the send form and the latest messages."""
    return _page("dashboard.html", cursor=_cursor(), **_dashboard_context())


@bp.get("/partials/dashboard")
def dashboard_partial() -> Response:
    """Render the live parts of the dashboard, if anything is new."""
    return answer_poll(lambda: _part("partials/dashboard_live.html", **_dashboard_context()))


# Conversations --------------------------------------------------------------------------


@bp.get("/conversations", endpoint="conversations")
def conversations_page() -> str:
    """List conversations."""
    page = conversations.list_conversations(get_db(), 100)
    return _page("conversations.html", conversations=page.items, cursor=_cursor())


@bp.get("/partials/conversations")
def conversations_partial() -> Response:
    """Render the live conversation list, if anything is new."""
    return answer_poll(
        lambda: _part(
            "partials/conversations_live.html",
            conversations=conversations.list_conversations(get_db(), 100).items,
        )
    )


def _thread(number: str) -> conversations.Thread:
    if not is_e164(number):
        abort(404)
    return conversations.get_thread(get_db(), number, 200, or_empty=True)


@bp.get("/chat/new")
def new_chat() -> Response | str:
    """Open the thread with a number typed by a person (national forms in DEFAULT_COUNTRY)."""
    typed = request.args.get("number", "")
    number = to_e164(typed, _settings().default_country)
    if number is None:
        page = conversations.list_conversations(get_db(), 100)
        error = gettext(
            "%(number)s is not a phone number. Write it with its country code, like %(example)s.",
            number=typed.strip() or "—",
            example="+48601234567",
        )
        html = _page(
            "conversations.html",
            conversations=page.items,
            cursor=_cursor(),
            new_error=error,
            typed=typed,
        )
        return Response(html, status=400)
    return redirect(url_for("panel.chat", number=number))


@bp.get("/chat/<number>")
def chat(number: str) -> str:
    """Show one conversation as bubbles, with the reply form."""
    thread = _thread(number)
    messaging.mark_read(get_db(), number)
    return _page(
        "chat.html",
        number=number,
        summary=thread.summary,
        messages=thread.messages,
        cursor=_cursor(),
    )


@bp.get("/partials/chat/<number>")
def chat_partial(number: str) -> Response:
    """Render the live thread, if anything in it is new; it is read then."""

    def render() -> str:
        thread = _thread(number)
        if thread.summary.contact.unread_count:
            messaging.mark_read(get_db(), number)
        return _part("partials/chat_live.html", messages=thread.messages, summary=thread.summary)

    if not is_e164(number):
        abort(404)
    return answer_poll(render, number)


# Configuration pages -------------------------------------------------------------------


@bp.get("/automation")
def automation() -> str:
    """Show who answers texts automatically, the auto-reply and the AI settings."""
    with get_db().read() as s:
        auto = reply_config.get_auto_reply(s)
        config = reply_config.get_ai(s, _settings()).public_json()
        chosen = reply_config.is_chosen(s)
    schedule = auto.business_hours or {"timezone": "UTC", "days": {}}
    days = [
        ("mon", gettext("Monday")),
        ("tue", gettext("Tuesday")),
        ("wed", gettext("Wednesday")),
        ("thu", gettext("Thursday")),
        ("fri", gettext("Friday")),
        ("sat", gettext("Saturday")),
        ("sun", gettext("Sunday")),
    ]
    return _page(
        "automation.html",
        auto=auto,
        ai=config,
        modes=reply_config.available_modes(),
        chosen=chosen,
        hours=schedule,
        days=days,
        zones=COMMON_ZONES,
    )


@bp.get("/auto-reply")
def auto_reply() -> Response:
    """The auto-reply's old address: its part of the Automation page."""
    return redirect(url_for("panel.automation", _anchor="auto-reply"))


@bp.get("/ai")
def ai() -> Response:
    """The AI tab's old address: its part of the Automation page."""
    return redirect(url_for("panel.automation", _anchor="ai"))


# Sandbox phone simulator ---------------------------------------------------------------


def _simulator_context(number: str) -> dict[str, Any]:
    try:
        messages = conversations.get_thread(get_db(), number, 100).messages
    except NotFound:
        messages = []
    return {"messages": messages, "phone": number}


@bp.get("/simulator")
def simulator() -> str:
    """Show the phone simulator (sandbox mode only)."""
    if not _settings().sandbox:
        abort(404)
    number = request.args.get("number", "").strip() or SIMULATOR_PHONE
    if not is_e164(number):
        number = SIMULATOR_PHONE
    known = [c.contact.number for c in conversations.list_conversations(get_db(), 20).items]
    sample = f"{_settings().api_base_url}/media/sample.png"
    return _page(
        "simulator.html",
        cursor=_cursor(),
        known=known,
        sample_media=sample,
        **_simulator_context(number),
    )


@bp.get("/partials/simulator/<number>")
def simulator_partial(number: str) -> Response:
    """Render the simulated phone's screen."""
    if not _settings().sandbox or not is_e164(number):
        abort(404)
    return answer_poll(
        lambda: _part("partials/simulator_live.html", **_simulator_context(number)), number
    )


# Media proxy ---------------------------------------------------------------------------


@bp.get("/media")
def media() -> Response:
    """Fetch an MMS attachment with the account's credentials and pass it on.

    Only Twilio's media hosts (or the sandbox) are fetched, so the credentials go nowhere
    else, and only images, audio, video and PDF are passed on.
    """
    url = request.args.get("url", "")
    try:
        content_type, body = get_gateway().fetch_media(url)
    except MediaRefused as exc:
        abort(exc.status, exc.reason)
    answer = Response(body, mimetype=content_type)
    answer.headers["Cache-Control"] = "private, max-age=3600"
    answer.headers["Content-Disposition"] = "inline"
    return answer


@bp.get("/audit")
def audit_page() -> str:
    """Show the audit log (admins only)."""
    if not current_identity().is_admin:
        abort(403)
    return _page("audit.html", events=audit.latest(get_db(), 200))
