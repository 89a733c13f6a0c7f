"""Who answers an inbound message, and with what: decided here and nowhere else.

Exactly one of, in this order: nobody (keyword, opted out, not E.164, our own number, paused,
loop guard); AI when enabled (and the sender matches AI_TARGET_NUMBER if set); the fixed
auto-reply when enabled; otherwise the CHAT_MODE engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, cast

from sqlalchemy import Table, bindparam, func, literal, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from twilio_chat.db.engine import DriverStatement, per_driver
from twilio_chat.db.models import AIConfig, AutoReplyConfig, Contact, Message, utcnow
from twilio_chat.replies.config import AISettings, ai_enabled, get_ai
from twilio_chat.replies.engines import build_chat_engine
from twilio_chat.settings import Settings, is_e164

AUTOMATIC_SOURCES = ("auto_reply", "ai", "engine")


@dataclass(frozen=True)
class Decision:
    """Who answers: mode is none, ai, auto_reply or engine; text for the fixed modes."""

    mode: str
    reason: str
    text: str | None = None
    ai: AISettings | None = None


class Inbound(Protocol):
    """What the decision reads of an inbound message (a stored Message, or one being stored)."""

    @property
    def contact_number(self) -> str:
        """Return the sender's number."""

    @property
    def our_number(self) -> str | None:
        """Return the number it was sent to."""

    @property
    def messaging_service_sid(self) -> str | None:
        """Return the Messaging Service it came through, if any."""


def nobody_reason(
    session: Session, settings: Settings, message: Inbound, keyword: str | None
) -> str | None:
    """Return why nobody may answer this inbound message, or None when someone must."""
    from twilio_chat.messaging import is_opted_out  # local: messaging imports this module

    number = message.contact_number
    conn = session.connection()
    opted = is_opted_out(session, opt_out_senders(message), number)
    found = _statements(conn.dialect).paused.run(conn, {"number": number})
    paused = found[0][0] if found else None
    return reason_not_to_answer(settings, message, keyword, opted, paused)


@dataclass(frozen=True)
class _Statements:
    paused: DriverStatement
    automatic_replies: DriverStatement
    ai_switch: DriverStatement
    auto_reply: DriverStatement


@per_driver
def _statements(dialect: Dialect) -> _Statements:
    """Build and compile the decision's reads (once per database driver).

    Every reply job makes them: on the driver's cursor (`DriverStatement`), they cost a
    fraction of the ORM's per-statement work.
    """
    c = cast(Table, Contact.__table__).c
    m = cast(Table, Message.__table__).c
    a = cast(Table, AIConfig.__table__).c
    r = cast(Table, AutoReplyConfig.__table__).c

    automatic = select(func.count(m.id)).where(
        m.contact_number == bindparam("number"),
        m.direction == "outbound",
        m.source.in_([literal(s, m.source.type) for s in AUTOMATIC_SOURCES]),  # not expanding
        m.created_at >= bindparam("since", type_=m.created_at.type),
    )
    return _Statements(
        paused=DriverStatement(
            select(c.replies_paused_until).where(c.number == bindparam("number")), dialect, []
        ),
        automatic_replies=DriverStatement(automatic, dialect, []),
        ai_switch=DriverStatement(select(a.saved, a.enabled).where(a.id == 1), dialect, []),
        auto_reply=DriverStatement(select(r.enabled, r.message).where(r.id == 1), dialect, []),
    )


def opt_out_senders(message: Inbound) -> list[str]:
    """Return the ledger keys an opt-out to this message's sender is kept under."""
    return [s for s in (message.our_number, message.messaging_service_sid) if s]


def reason_not_to_answer(
    settings: Settings,
    message: Inbound,
    keyword: str | None,
    opted_out: bool,
    paused_until: datetime | None,
    sender_is_phone: bool | None = None,
) -> str | None:
    """Return why nobody may answer, given the sender's opt-out and the conversation's pause.

    The rules themselves, apart from reading the database: the inbound path reads both for a
    whole batch of messages at once. `sender_is_phone`: is_e164 of the sender, when known.
    """
    if keyword is not None:
        return f"keyword ({keyword})"
    number = message.contact_number
    if not (is_e164(number) if sender_is_phone is None else sender_is_phone):
        return "sender is not an E.164 number"
    if number in {settings.default_from, message.our_number}:
        return "sender is one of our own numbers"
    if opted_out:
        return "sender opted out"
    if paused_until is not None and paused_until > utcnow():
        return "automatic replies are paused for this conversation"
    return None


def _loop_guard_hit(session: Session, settings: Settings, number: str) -> bool:
    conn = session.connection()
    since = utcnow() - timedelta(hours=1)
    ((count,),) = _statements(conn.dialect).automatic_replies.run(
        conn, {"number": number, "since": since}
    )
    return (count or 0) >= settings.auto_reply_max_per_hour


def decide(session: Session, settings: Settings, message: Message) -> Decision:
    """Decide who answers this inbound message, and with what text for the fixed modes."""
    from twilio_chat.messaging import keyword_of  # local: messaging imports this module

    reason = nobody_reason(session, settings, message, keyword_of(message.body))
    if reason is not None:
        return Decision("none", reason)
    if _loop_guard_hit(session, settings, message.contact_number):
        return Decision(
            "none", f"loop guard: {settings.auto_reply_max_per_hour} automatic replies this hour"
        )
    conn = session.connection()
    st = _statements(conn.dialect)
    # The switches first, on the driver's cursor; the whole AI config only when it is on.
    ((saved, enabled),) = st.ai_switch.run(conn, {}) or [(None, None)]
    if ai_enabled(saved, enabled, settings):
        ai = get_ai(session, settings)
        if ai.enabled and (not ai.target_number or ai.target_number == message.contact_number):
            return Decision("ai", "AI is enabled", ai=ai)
    ((auto_enabled, auto_message),) = st.auto_reply.run(conn, {}) or [(False, "")]
    if auto_enabled and auto_message:
        return Decision("auto_reply", "auto-reply is enabled", text=auto_message)
    text = build_chat_engine(settings.chat_mode).reply(message.body)
    if not text:
        return Decision("none", f"the {settings.chat_mode} engine has no answer")
    return Decision("engine", f"chat engine {settings.chat_mode}", text=text)
