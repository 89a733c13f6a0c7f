"""Languages: English and Polish, from a cookie set by the navbar switch or Accept-Language."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, redirect, request
from flask_babel import Babel, get_locale
from werkzeug.wrappers import Response

from twilio_chat.web.auth import public

LANGUAGES = {"en": "English", "pl": "Polski"}
COOKIE = "lang"
babel = Babel()
bp = Blueprint("i18n", __name__)


def select_locale() -> str:
    """Pick the language: the user's choice, else the browser's preference, else English."""
    chosen = request.cookies.get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(list(LANGUAGES)) or "en"


def current_language() -> str:
    """Return the language code of this request."""
    locale = get_locale()
    return locale.language if locale else "en"


@bp.get("/lang/<code>")
@public("only sets a language cookie")
def switch(code: str) -> Response:
    """Remember the chosen language and go back."""
    from twilio_chat.web.panel import safe_next

    answer = redirect(safe_next(request.args.get("next")))
    if code in LANGUAGES:
        answer.set_cookie(COOKIE, code, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
    return answer


def init_app(app: Flask) -> None:
    """Set up Flask-Babel and the language switch."""
    babel.init_app(
        app,
        locale_selector=select_locale,
        default_translation_directories=str(Path(__file__).parent / "translations"),
    )
    app.register_blueprint(bp)
    app.jinja_env.globals["LANGUAGES"] = LANGUAGES
    app.jinja_env.globals["current_language"] = current_language
