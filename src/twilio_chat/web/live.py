"""Live updates by polling: the database is the source of truth, so any web process answers.

No poll waits for news on a request thread the webhooks need (docs/architecture.md, "Live updates"):

- A panel page asks for its live part twice a second with the cursor of its last answer
  (`answer_poll`): at once, 204 when nothing it shows is new, else the fresh HTML, and the
  next cursor in X-Live-Cursor. A list page's render is shared, for `RENDER_REUSE` seconds, by
  every tab of the process that shows the same list.
- ``GET /api/events?cursor=…&timeout=…`` answers API clients the messages that are new or have
  a new status since `cursor`, and the next cursor. With ``timeout=0`` it answers at once. With
  a timeout it waits for a change, checked every half second, but only `MAX_WAITING` polls of a
  process wait at once; any beyond them is answered at once, like a short poll. A waiting poll
  is also answered at once when the server stops (`stop_long_polls`), so it does not hold the
  stop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app, jsonify, make_response, request
from flask.blueprints import BlueprintSetupState
from flask_babel import get_locale
from flask_openapi3.blueprint import APIBlueprint
from werkzeug.wrappers import Response

from twilio_chat.db.engine import get_db
from twilio_chat.errors import N_, InvalidInput
from twilio_chat.inbox import conversations
from twilio_chat.web.auth import current_identity, requires_scope
from twilio_chat.web.contract import LIVE_TAG, error_answers
from twilio_chat.web.schemas.answers import EventsAnswer
from twilio_chat.web.schemas.requests import EventsQuery
from twilio_chat.web.serialize import message_json

bp = APIBlueprint("live", __name__, url_prefix="/api")
CHECK_EVERY = 0.5
MAX_WAITING = 2  # long polls of one process that may hold a request thread at once
RENDER_REUSE = 0.25  # seconds a list page's live part is shared by the tabs that show it
KEPT_RENDERS = 64  # distinct lists (filters, languages) whose last render a process keeps
POLLS = "live_polls"  # app.extensions key: the app's Polls


@dataclass(frozen=True)
class Render:
    """A live part as rendered: the cursor it covers, its HTML, when (time.monotonic)."""

    cursor: str
    html: str
    at: float


@dataclass
class Polls:
    """The app's polls: a stop signal, the slots of waiting long polls, the recent renders."""

    stopping: threading.Event = field(default_factory=threading.Event)
    slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_WAITING)
    )
    renders: dict[tuple[str, ...], Render] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def recent(self, key: tuple[str, ...], since: tuple[int, int]) -> Render | None:
        """Return the render kept for `key` if it is young enough to share and not older than
        what the asking tab shows (`since`)."""
        with self.lock:
            found = self.renders.get(key)
        if found is None or time.monotonic() - found.at >= RENDER_REUSE:
            return None
        covers = conversations.parse_cursor(found.cursor) or (0, 0)
        return found if covers[0] >= since[0] and covers[1] >= since[1] else None

    def keep(self, key: tuple[str, ...], render: Render) -> None:
        """Keep a render for the next tabs; forget the oldest beyond KEPT_RENDERS lists."""
        with self.lock:
            self.renders.pop(key, None)
            self.renders[key] = render
            while len(self.renders) > KEPT_RENDERS:
                del self.renders[next(iter(self.renders))]


@bp.record_once
def _add_polls(state: BlueprintSetupState) -> None:
    state.app.extensions[POLLS] = Polls()


def stop_long_polls(app: Flask) -> None:
    """Answer every waiting long poll of the app now, and later ones at once (it is stopping)."""
    polls: Polls = app.extensions[POLLS]
    polls.stopping.set()


def answer_poll(render: Callable[[], str], number: str | None = None) -> Response:
    """Answer a panel page's poll: its live part, or 204 when nothing it shows is new.

    The page asks with the cursor of its last answer (`cursor`) and gets the next one in
    X-Live-Cursor. A poll with nothing new costs one read of the newest ids; one with news a
    render, however much happened meanwhile. A chat (`number`) shows only its own messages. A
    list page (no `number`) shows every user of a role the same, so its render is shared by
    the tabs of the process that ask within RENDER_REUSE seconds: under a stream of texts, the
    work of the dashboard and the conversation list does not grow with the number of tabs.
    """
    since = conversations.parse_cursor(request.args.get("cursor", ""))
    cursor, news = conversations.news_since(get_db(), since, number)
    if news and number is None:
        polls: Polls = current_app.extensions[POLLS]
        query = sorted((k, v) for k, v in request.args.items(multi=True) if k != "cursor")
        role = "admin" if current_identity().is_admin else "user"  # in case a part differs
        key = (request.path, repr(query), str(get_locale()), role)
        # Only polls share: a request with no cursor is rendered afresh, so a change that moves
        # no cursor (a redaction, a rename) shows there at once.
        shared = polls.recent(key, since) if since is not None else None
        if shared is None:
            shared = Render(cursor, render(), time.monotonic())
            polls.keep(key, shared)
        cursor, html = shared.cursor, shared.html
        news = conversations.parse_cursor(cursor) != since
    else:
        html = render() if news else ""
    answer = make_response((html, 200) if news else ("", 204))
    answer.headers["X-Live-Cursor"] = cursor
    if news:  # the tab's title counts the conversations with unread texts
        with get_db().read() as session:
            answer.headers["X-Unread"] = str(conversations.unread_conversations(session))
    answer.headers["Cache-Control"] = "no-store"
    return answer


def _answer(cursor: str, changes: conversations.Changes | None) -> Response:
    if changes is None:
        return jsonify({"cursor": cursor, "messages": []})
    return jsonify(
        {"cursor": changes.cursor, "messages": [message_json(m) for m in changes.messages]}
    )


@bp.get(
    "/events",
    tags=LIVE_TAG,
    operation_id="events",
    description="Answers the messages new or with a new status since `cursor`, and the next "
    "cursor. With `timeout` it waits for a change up to that many seconds (a few such waits "
    "per process at once; any beyond are answered at once), and at once when the server stops.",
    responses={200: EventsAnswer, **error_answers(400, 401, 403)},
)
@requires_scope("read")
def events(query: EventsQuery) -> Response:
    """Answer messages new or changed after `cursor` and the next cursor; wait up to `timeout`."""
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
    changes = conversations.changes_since(db, *parsed)
    polls: Polls = current_app.extensions[POLLS]
    if changes is not None or timeout == 0 or not polls.slots.acquire(blocking=False):
        return _answer(raw, changes)
    try:
        deadline = time.monotonic() + timeout
        while changes is None:
            if time.monotonic() >= deadline or polls.stopping.wait(CHECK_EVERY):
                break
            changes = conversations.changes_since(db, *parsed)
    finally:
        polls.slots.release()
    return _answer(raw, changes)
