"""The JSON REST API: routes declare their contract, authorize, call one service, and answer.

Each route's query string, path, body and answers are the models of `web.schemas`; the
OpenAPI document at /api/openapi.json is generated from them, and Swagger UI at /api/docs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from flask import current_app, jsonify, render_template, session
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.openapi import OpenAPI
from werkzeug.wrappers import Response

from twilio_chat import messaging
from twilio_chat.accounts import audit
from twilio_chat.db.engine import get_db
from twilio_chat.inbox import conversations, stats, sync
from twilio_chat.sandbox import get_sandbox
from twilio_chat.settings import Settings
from twilio_chat.twilio.gateway import get_gateway
from twilio_chat.web.auth import (
    csrf_token,
    current_identity,
    public,
    requires_admin,
    requires_scope,
)
from twilio_chat.web.contract import (
    ADMIN_TAG,
    CONVERSATIONS_TAG,
    MESSAGES_TAG,
    error_answers,
)
from twilio_chat.web.schemas.answers import (
    AuditPage,
    ContactAnswer,
    ConversationPage,
    DeleteAnswer,
    MessageAnswer,
    MessageDetail,
    MessagePage,
    RedactAnswer,
    RemoteMessageList,
    SimulateAnswer,
    Stats,
    StatsAnswer,
    StoredCounts,
    Thread,
)
from twilio_chat.web.schemas.requests import (
    AuditQuery,
    ContactBody,
    ConversationsQuery,
    MessagesQuery,
    ParticipantPath,
    RemoteMessagesQuery,
    SendBody,
    SidPath,
    SimulateBody,
    ThreadQuery,
)
from twilio_chat.web.serialize import (
    answer,
    audit_event_out,
    conversation_out,
    message_out,
    remote_message_out,
    stored_message,
)

bp = APIBlueprint("api", __name__, url_prefix="/api")
# Registered in sandbox mode only: without the sandbox the route does not exist.
sandbox_bp = APIBlueprint("api_sandbox", __name__, url_prefix="/api")
PUBLIC: dict[str, Any] = {"security": []}  # an operation anyone may call


def _settings() -> Settings:
    settings: Settings = current_app.extensions["settings"]
    return settings


# Messages ---------------------------------------------------------------------------------


@bp.post(
    "/send-message",
    tags=MESSAGES_TAG,
    operation_id="sendMessage",
    responses={201: MessageAnswer, **error_answers(400, 401, 403, 409, 502)},
)
@requires_scope("send")
def send_message(body: SendBody) -> Response:
    """Send an SMS or MMS."""
    req = messaging.SendRequest(
        to=body.to,
        body=body.body,
        media_urls=body.media_urls,
        content_sid=body.content_sid,
        messaging_service_sid=body.messaging_service_sid,
        use_messaging_service=body.use_messaging_service,
        source="panel" if current_identity().via == "session" else "api",
    )
    message = messaging.send(get_db(), get_gateway(), _settings(), req)
    audit.record(get_db(), "send", req.to, {"sid": message.sid, "source": req.source})
    return answer(MessageAnswer(message=message_out(message)), 201)


@bp.get(
    "/messages",
    tags=MESSAGES_TAG,
    operation_id="listMessages",
    responses={200: MessagePage, **error_answers(400, 401, 403)},
)
@requires_scope("read")
def messages(query: MessagesQuery) -> Response:
    """List stored messages, newest first, filtered as the dashboard filters them."""
    page = conversations.list_messages(
        get_db(),
        query.limit,
        query.direction,
        query.before,
        status=query.status,
        number=query.number,
        text=query.text or None,
    )
    return answer(
        MessagePage(messages=[message_out(m) for m in page.items], next_cursor=page.next_cursor)
    )


@bp.get(
    "/stats",
    tags=MESSAGES_TAG,
    operation_id="getStats",
    responses={200: StatsAnswer, **error_answers(401, 403)},
)
@requires_scope("read")
def dashboard_stats() -> Response:
    """Return the dashboard's statistics: counts of today and of the last 7 days."""
    counts = dataclasses.asdict(stats.dashboard(get_db()))
    return answer(StatsAnswer(stats=Stats.model_validate(counts)))


@bp.get(
    "/messages/remote",
    tags=MESSAGES_TAG,
    operation_id="listRemoteMessages",
    responses={200: RemoteMessageList, **error_answers(400, 401, 403, 502)},
)
@requires_scope("read")
def remote_messages(query: RemoteMessagesQuery) -> Response:
    """List messages as Twilio has them (newest first), storing any we did not have."""
    result = sync.sync(
        get_db(),
        get_gateway(),
        _settings(),
        to=query.to,
        from_=query.from_,
        date_sent=query.date_sent,
        date_sent_before=query.date_sent_before,
        date_sent_after=query.date_sent_after,
        limit=query.limit,
    )
    return answer(
        RemoteMessageList(
            messages=[remote_message_out(m) for m in result.messages],
            stored=StoredCounts(
                inserted=result.inserted,
                updated=result.updated,
                replies_enqueued=result.replies_enqueued,
            ),
        )
    )


@bp.get(
    "/messages/<sid>",
    tags=MESSAGES_TAG,
    operation_id="getMessage",
    responses={200: MessageDetail, **error_answers(400, 401, 403, 404, 502)},
)
@requires_scope("read")
def message_detail(path: SidPath) -> Response:
    """Return one message with its status events (or Twilio's record of it)."""
    detail = conversations.get_message(get_db(), get_gateway(), path.sid)
    if detail.local is not None:
        return answer(
            MessageDetail(message=stored_message(detail.local, detail.events), stored=True)
        )
    assert detail.remote is not None
    return answer(MessageDetail(message=remote_message_out(detail.remote), stored=False))


@bp.post(
    "/messages/<sid>/retry",
    tags=MESSAGES_TAG,
    operation_id="retryMessage",
    responses={201: MessageAnswer, **error_answers(400, 401, 403, 404, 409, 502)},
)
@requires_scope("send")
def retry_message(path: SidPath) -> Response:
    """Send a failed message again: a new message with the same text and media."""
    source = "panel" if current_identity().via == "session" else "api"
    message = messaging.retry(get_db(), get_gateway(), _settings(), path.sid, source)
    detail = {"sid": message.sid, "source": source, "retry_of": path.sid}
    audit.record(get_db(), "send", message.contact_number, detail)
    return answer(MessageAnswer(message=message_out(message)), 201)


@bp.post(
    "/messages/<sid>/redact",
    tags=MESSAGES_TAG,
    operation_id="redactMessage",
    responses={200: RedactAnswer, **error_answers(400, 401, 403, 404, 502)},
)
@requires_scope("admin")
def redact(path: SidPath) -> Response:
    """Erase a message's body at Twilio and here."""
    local = conversations.redact_message(get_db(), get_gateway(), path.sid)
    audit.record(get_db(), "redact", path.sid)
    return answer(
        RedactAnswer(redacted=True, sid=path.sid, message=message_out(local) if local else None)
    )


@bp.delete(
    "/messages/<sid>",
    tags=MESSAGES_TAG,
    operation_id="deleteMessage",
    responses={200: DeleteAnswer, **error_answers(400, 401, 403, 404, 502)},
)
@requires_scope("admin")
def delete(path: SidPath) -> Response:
    """Delete a message at Twilio and here."""
    conversations.delete_message(get_db(), get_gateway(), path.sid)
    audit.record(get_db(), "delete", path.sid)
    return answer(DeleteAnswer(deleted=True, sid=path.sid))


# Conversations ----------------------------------------------------------------------------


@bp.get(
    "/conversations",
    tags=CONVERSATIONS_TAG,
    operation_id="listConversations",
    responses={200: ConversationPage, **error_answers(400, 401, 403)},
)
@requires_scope("read")
def conversation_list(query: ConversationsQuery) -> Response:
    """List conversations, latest activity first."""
    page = conversations.list_conversations(get_db(), query.limit, query.before)
    return answer(
        ConversationPage(
            conversations=[conversation_out(c) for c in page.items],
            next_cursor=page.next_cursor,
        )
    )


@bp.get(
    "/conversations/<participant>",
    tags=CONVERSATIONS_TAG,
    operation_id="getConversation",
    responses={200: Thread, **error_answers(400, 401, 403, 404)},
)
@requires_scope("read")
def conversation(path: ParticipantPath, query: ThreadQuery) -> Response:
    """Return one conversation's latest messages, oldest first."""
    thread = conversations.get_thread(get_db(), path.participant, query.limit, query.before)
    return answer(
        Thread(
            conversation=conversation_out(thread.summary),
            messages=[message_out(m) for m in thread.messages],
            next_cursor=thread.next_cursor,
        )
    )


@bp.post(
    "/conversations/<participant>/contact",
    tags=CONVERSATIONS_TAG,
    operation_id="nameContact",
    responses={200: ContactAnswer, **error_answers(400, 401, 403)},
)
@requires_scope("send")
def contact(path: ParticipantPath, body: ContactBody) -> Response:
    """Name (or unname, with an empty name) the contact of a conversation."""
    row = conversations.set_name(get_db(), path.participant, body.name or None)
    audit.record(get_db(), "contact_name", path.participant, {"name": row.name})
    return answer(ContactAnswer(participant=path.participant, name=row.name))


# Sandbox, audit, this contract ------------------------------------------------------------


@sandbox_bp.post(
    "/sandbox/simulate",
    tags=ADMIN_TAG,
    operation_id="simulateInbound",
    responses={201: SimulateAnswer, **error_answers(400, 401, 403)},
)
@requires_scope("send")
def simulate(body: SimulateBody) -> Response:
    """Text the app from the sandbox's simulated handset (sandbox mode only)."""
    result = get_sandbox().simulate_inbound(body.from_, body.body, body.media_urls, body.to)
    return answer(SimulateAnswer.model_validate(result), 201)


@bp.get(
    "/audit",
    tags=ADMIN_TAG,
    operation_id="auditLog",
    responses={200: AuditPage, **error_answers(400, 401, 403)},
)
@requires_admin
def audit_log(query: AuditQuery) -> Response:
    """The audit log, newest first (admins; a token needs the admin scope)."""
    events = audit.latest(get_db(), query.limit, query.before)
    return answer(
        AuditPage(
            events=[audit_event_out(e) for e in events],
            next_cursor=events[-1].id if len(events) == query.limit else None,
        )
    )


@bp.get(
    "/openapi.json",
    tags=ADMIN_TAG,
    operation_id="openapi",
    openapi_extensions=PUBLIC,
    responses={
        200: {
            "description": "This document",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
@public("describes the API; holds no data")
def openapi() -> Response:
    """The OpenAPI description of this API."""
    return jsonify(cast(OpenAPI, current_app).api_doc)


@bp.get(
    "/docs",
    tags=ADMIN_TAG,
    operation_id="docs",
    openapi_extensions=PUBLIC,
    responses={
        200: {
            "description": "Swagger UI",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    },
)
@public("the API's documentation page; holds no data")
def docs() -> str:
    """Interactive documentation of this API (Swagger UI)."""
    # A logged-in user's "Try it out" calls carry the session's CSRF token.
    csrf = csrf_token() if isinstance(session.get("user_id"), int) else None
    return render_template("api_docs.html", csrf=csrf)
