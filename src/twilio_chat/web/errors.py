"""Error handlers: JSON for the API and webhooks, a page in the panel's look for the panel."""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify, render_template, request
from flask_babel import gettext
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from twilio_chat.errors import N_, AppError, Upstream
from twilio_chat.web.i18n import current_language

log = logging.getLogger(__name__)
# What an HTTP error says in the API's error answer (werkzeug's own texts are English only).
HTTP_MESSAGES = {
    400: N_("The request could not be understood."),
    404: N_("There is no such page or API route."),
    405: N_("This route does not take the %(method)s method."),
    413: N_("The request body is larger than 1 MiB."),
    415: N_("The request's content type is not supported here."),
}


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/twilio/")) or request.is_json


def error_response(status: int, code: str | int, message: str, field: str | None) -> Response:
    """Build the API's error JSON."""
    answer = jsonify({"error": {"code": code, "message": message, "field": field}})
    answer.status_code = status
    return answer


def _app_error(exc: AppError) -> Response:
    message = exc.message
    if current_language() != "en":
        message = exc.localized(gettext)
    answer = error_response(exc.status, exc.code, message, exc.field)
    if isinstance(exc, Upstream) and exc.twilio_status:
        answer.headers["X-Twilio-Status"] = str(exc.twilio_status)
    return answer


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    text = exc.description or exc.name
    if text == type(exc).description:  # werkzeug's own English text: say it in ours
        template = HTTP_MESSAGES.get(status, N_("The request failed: %(status)d %(name)s."))
        text = gettext(template, method=request.method, status=status, name=exc.name)
    if _wants_json():
        return error_response(status, exc.name.lower().replace(" ", "_"), text, None)
    return error_page(status, text)


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    if _wants_json():
        message = gettext("Internal error; see the server log.")
        return error_response(500, "internal", message, None)
    return error_page(500, gettext("Something went wrong on our side; it is in the server log."))


def error_page(status: int, text: str) -> Response:
    """Render the panel's page for an HTTP error, in the user's language and the panel's look."""
    headings = {
        403: gettext("You may not open this page"),
        404: gettext("There is no such page"),
        500: gettext("Something went wrong"),
    }
    heading = headings.get(status, gettext("The request failed"))
    try:
        from twilio_chat.web.auth import csrf_token

        html = render_template(
            "error.html",
            status=status,
            heading=heading,
            text=text,
            user=g.get("identity"),
            csrf=csrf_token(),
            sandbox=False,
            answering=None,
        )
    except Exception:  # the error page must never fail: plain text then
        log.exception("the error page could not be rendered")
        html = f"{status} {heading}: {text}\n"
        return Response(html, status=status, mimetype="text/plain")
    return Response(html, status=status, mimetype="text/html")


def init_app(app: Flask) -> None:
    """Register the error handlers."""
    app.register_error_handler(AppError, _app_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
