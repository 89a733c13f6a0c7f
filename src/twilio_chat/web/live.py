"""Live updates by long polling: the database is the source of truth, so any web process works.

The panel asks ``GET /api/events?cursor=…``; the answer comes as soon as a message is new or
has a new status (checked every half second), or after ``timeout`` seconds with no change, or at
once when the server stops (`stop_long_polls`): a poll left waiting would keep a request thread,
and its database connections, busy for up to 30 s after the server was told to stop.
"""

from __future__ import annotations

import threading
import time

from flask import Flask, current_app, jsonify
from flask.blueprints import BlueprintSetupState
from flask_openapi3.blueprint import APIBlueprint
from werkzeug.wrappers import Response

from twilio_chat.db.engine import get_db
from twilio_chat.errors import N_, InvalidInput
from twilio_chat.inbox import conversations
from twilio_chat.web.auth import requires_scope
from twilio_chat.web.contract import LIVE_TAG, error_answers
from twilio_chat.web.schemas.answers import EventsAnswer
from twilio_chat.web.schemas.requests import EventsQuery
from twilio_chat.web.serialize import message_json

bp = APIBlueprint("live", __name__, url_prefix="/api")
CHECK_EVERY = 0.5
STOPPING = "live_polls_stopping"  # app.extensions key: a threading.Event


@bp.record_once
def _add_stop_event(state: BlueprintSetupState) -> None:
    state.app.extensions[STOPPING] = threading.Event()


def stop_long_polls(app: Flask) -> None:
    """Answer every waiting long poll of the app now, and later ones at once (it is stopping)."""
    app.extensions[STOPPING].set()


@bp.get(
    "/events",
    tags=LIVE_TAG,
    operation_id="events",
    description="Answers as soon as a message is new or has a new status; with none and the "
    "same cursor after `timeout` seconds, or at once when the server stops.",
    responses={200: EventsAnswer, **error_answers(400, 401, 403)},
)
@requires_scope("read")
def events(query: EventsQuery) -> Response:
    """Wait for new or changed messages after `cursor`; answer them and the next cursor."""
    db = get_db()
    timeout = query.timeout
    raw = query.cursor or ""
    if not raw:
        with db.read() as session:
            mid, eid = conversations.current_cursor(session)
        return jsonify({"cursor": conversations.format_cursor(mid, eid), "messages": []})
    parsed = conversations.parse_cursor(raw)
    if parsed is None:
        raise InvalidInput(
            N_("%(field_name)s must come from a previous answer."), "cursor", field_name="cursor"
        )
    stopping: threading.Event = current_app.extensions[STOPPING]
    deadline = time.monotonic() + timeout
    while True:
        changes = conversations.changes_since(db, *parsed)
        if changes is not None:
            return jsonify(
                {"cursor": changes.cursor, "messages": [message_json(m) for m in changes.messages]}
            )
        if time.monotonic() >= deadline or stopping.wait(CHECK_EVERY):
            return jsonify({"cursor": raw, "messages": []})
