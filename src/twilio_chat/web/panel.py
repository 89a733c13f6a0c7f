"""The web panel: login, logout and the inbox."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session
from werkzeug.wrappers import Response

from .. import conversations
from ..db import get_db
from ..users import authenticate
from .auth import csrf_ok, csrf_token, current_identity, public

bp = Blueprint("panel", __name__)


def _safe_next(target: str | None) -> str:
    """Return `target` if it is a plain local path, else "/" (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if any(ord(ch) < 32 or ord(ch) == 127 or ch == "\\" for ch in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


@bp.route("/login", methods=["GET", "POST"])
@public("the login form itself")
def login() -> str | Response | tuple[str, int]:
    """Show the login form and log a user in."""
    error = None
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "")
        if not csrf_ok():
            error = "Your session expired; please try again."
        else:
            identity = authenticate(get_db(), username, request.form.get("password", ""))
            if identity is not None:
                session.clear()
                session["user_id"] = identity.user_id
                csrf_token()
                return redirect(_safe_next(request.args.get("next")))
            error = "Wrong username or password."
        return (
            render_template("login.html", error=error, username=username, csrf=csrf_token()),
            401,
        )
    return render_template("login.html", error=error, username=username, csrf=csrf_token())


@bp.post("/logout")
def logout() -> Response:
    """Log out."""
    session.clear()
    return redirect("/login")


@bp.get("/")
def index() -> str:
    """Show the conversations."""
    page = conversations.list_conversations(get_db(), 50)
    return render_template(
        "index.html",
        conversations=page.items,
        user=current_identity(),
        csrf=csrf_token(),
        sandbox=current_app.extensions["settings"].sandbox,
    )
