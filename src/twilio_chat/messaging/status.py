"""Delivery status callbacks: move a message's status forward, never back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection, Dialect

from twilio_chat.db.engine import Database, DriverStatement, per_driver
from twilio_chat.db.models import utcnow
from twilio_chat.messaging.shared import MESSAGES, STATUS_EVENTS, moves_forward, to_int
from twilio_chat.twilio.errors import describe_error


@dataclass(frozen=True)
class _StatusStatements:
    by_sid: DriverStatement
    by_id: DriverStatement
    set_sid: DriverStatement
    advance: DriverStatement
    advance_with_error: DriverStatement
    event: DriverStatement


@per_driver
def _status_statements(dialect: Dialect) -> _StatusStatements:
    """Build and compile the status callback's statements (once per database driver)."""
    m, e = MESSAGES.c, STATUS_EVENTS
    found = select(m.id, m.sid, m.status)
    # Compare and set: a status moves on only from the one this callback read, so two
    # callbacks racing on another database never move a message backwards.
    moved = m.id == bindparam("id")
    advance = (
        update(MESSAGES)
        .where(moved, m.status == bindparam("current"))
        .values(status=bindparam("status"), updated_at=bindparam("now"))
        .returning(m.id)
    )
    advance_with_error = advance.values(
        error_code=bindparam("error_code"), error_message=bindparam("error_message")
    )
    set_sid = (
        update(MESSAGES)
        .where(moved, m.sid.is_(None))
        .values(sid=bindparam("sid"), updated_at=bindparam("now"))
    )
    event_keys = ["message_id", "message_sid", "status", "error_code", "payload", "received_at"]
    return _StatusStatements(
        by_sid=DriverStatement(found.where(m.sid == bindparam("sid")), dialect, []),
        by_id=DriverStatement(found.where(moved), dialect, []),
        set_sid=DriverStatement(set_sid, dialect, []),
        advance=DriverStatement(advance, dialect, []),
        advance_with_error=DriverStatement(advance_with_error, dialect, []),
        event=DriverStatement(e.insert().returning(e.c.id), dialect, event_keys),
    )


def record_status(
    db: Database, form: Mapping[str, str], message_id_hint: int | None = None
) -> bool:
    """Keep a status callback as an event and advance its message; tell if the message is known.

    Two callbacks per text, each a write transaction: Core statements on the driver's cursor
    (`DriverStatement`) instead of the ORM's unit of work.
    """
    sid = form["MessageSid"]
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    error_code = to_int(form.get("ErrorCode"), 0) or None
    now = utcnow()
    with db.session() as session:
        conn = session.connection()
        st = _status_statements(conn.dialect)
        found = st.by_sid.run(conn, {"sid": sid})
        if not found and message_id_hint is not None:
            found = st.by_id.run(conn, {"id": message_id_hint})
            if found and found[0][1] not in (None, sid):
                found = []  # the hint names another message
            elif found and found[0][1] is None:
                st.set_sid.run(conn, {"sid": sid, "id": message_id_hint, "now": now})
        message_id = found[0][0] if found else None
        st.event.run(
            conn,
            {
                "message_id": message_id,
                "message_sid": sid,
                "status": status,
                "error_code": error_code,
                "payload": dict(form),
                "received_at": now,
            },
        )
        if found:
            _advance_row(conn, st, found[0][0], found[0][2], status, error_code, now)
        return message_id is not None


def _advance_row(
    conn: Connection,
    st: _StatusStatements,
    message_id: int,
    current: str | None,
    status: str,
    error_code: int | None,
    now: datetime,
) -> None:
    """Move a stored message to `status` unless that would move it backwards (advance_status)."""
    values: dict[str, Any] = {"id": message_id, "status": status, "now": now}
    statement = st.advance
    if error_code is not None:
        statement = st.advance_with_error
        values.update(error_code=error_code, error_message=describe_error(error_code))
    while current is not None and moves_forward(current, status):
        if statement.run(conn, {**values, "current": current}):
            return
        # Another transaction moved it meanwhile (not on SQLite, whose writers take turns).
        found = st.by_id.run(conn, {"id": message_id})
        current = found[0][2] if found else None
