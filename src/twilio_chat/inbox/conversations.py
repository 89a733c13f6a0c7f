"""Reading the inbox: message lists, conversations, threads, one message, redact, delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from sqlalchemy import (
    Integer,
    Select,
    Text,
    column,
    delete,
    func,
    literal,
    select,
    table,
    tuple_,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from twilio_chat.db.engine import Database
from twilio_chat.db.models import Contact, Message, OptOut, StatusEvent, UTCDateTime, utcnow
from twilio_chat.errors import N_, NotFound, Upstream
from twilio_chat.inbox.search import indexed_through
from twilio_chat.twilio.gateway import RemoteMessage, TwilioError, TwilioGateway

T = TypeVar("T")

MAX_SEARCH = 200  # the longest text a search takes, in characters


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of items and the cursor for the next (older) page."""

    items: list[T]
    next_cursor: int | None


# SQLite's full-text index of message bodies (migrations 0004 and 0005): an FTS5 table with the
# trigram tokenizer; its rowid is the message id. It holds messages up to
# search_index.indexed_through; the worker adds newer ones (search.py).
MESSAGES_FTS = table("messages_fts", column("rowid", Integer), column("body", Text))
# The trigram index finds substrings of at least this many characters.
TRIGRAM = 3
# On PostgreSQL a search first reads this many of the newest ids directly (see _search_postgresql).
RECENT_IDS = 20_000


def fts_phrase(text: str) -> str:
    """Quote text as one FTS5 phrase: with trigrams, it matches any body holding it."""
    return '"' + text.replace('"', '""') + '"'


def list_messages(
    db: Database,
    limit: int,
    direction: str | None = None,
    before: int | None = None,
    status: str | None = None,
    number: str | None = None,
    text: str | None = None,
) -> Page[Message]:
    """Return the newest messages, filtered, older than a cursor; text matches a substring."""
    query = select(Message)
    if direction:
        query = query.where(Message.direction == direction)
    if status:
        query = query.where(Message.status == status)
    if number:
        query = query.where(Message.contact_number == number)
    if text and len(text) >= TRIGRAM and not number:
        search = _search_sqlite if db.is_sqlite else _search_postgresql
        return search(db, query, limit, text, before)
    if text:
        # One conversation (its index), or a text shorter than a trigram: read newest first.
        query = query.where(_contains(text))
    if before is not None:
        query = query.where(Message.id < before)
    query = query.order_by(Message.id.desc()).limit(limit + 1)
    with db.read() as session:
        rows = list(session.scalars(query))
    return _message_page(rows, limit)


def _message_page(rows: list[Message], limit: int) -> Page[Message]:
    """Return the first `limit` of up to `limit + 1` rows read, and the cursor if more were."""
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].id if more and rows else None)


def _contains(text: str) -> ColumnElement[bool]:
    """The condition "the body holds `text`, in any case", with LIKE's wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return Message.body.ilike(f"%{escaped}%", escape="\\")


def _search_sqlite(
    db: Database, query: Select[Message], limit: int, text: str, before: int | None
) -> Page[Message]:
    """Search on SQLite: the messages the worker has not indexed yet, then the trigram index.

    Ids only grow, so the unindexed messages are the newest: they are read directly (a range of
    the primary key, a few rows) and come first; the index hands over the older matches newest
    first, so the query stops at the limit.
    """
    fts = MESSAGES_FTS
    with db.read() as session:
        through = indexed_through(session)
        newest = query.where(Message.id > through, _contains(text))
        if before is not None:
            newest = newest.where(Message.id < before)
        rows = list(session.scalars(newest.order_by(Message.id.desc()).limit(limit + 1)))
        if len(rows) <= limit:
            indexed = (
                query.join(fts, fts.c.rowid == Message.id)
                .where(fts.c.body.match(fts_phrase(text)), fts.c.rowid <= through)
                .order_by(fts.c.rowid.desc())  # an order FTS5 gives itself
                .limit(limit + 1 - len(rows))
            )
            if before is not None:
                indexed = indexed.where(fts.c.rowid < before)
            rows += session.scalars(indexed)
    return _message_page(rows, limit)


def _search_postgresql(
    db: Database, query: Select[Message], limit: int, text: str, before: int | None
) -> Page[Message]:
    """Search on PostgreSQL: the newest RECENT_IDS ids directly, then the trigram index.

    Left to itself, the planner picks between walking the primary key newest first (fast when
    the text is common: the page fills at once) and the trigram index (fast when it is rare),
    by an estimate of how many bodies hold the text that ANALYZE's sample can be far off, and a
    rare text estimated as common walks a large part of the table. So the newest ids are read
    directly, a bounded walk that fills the page for any text that is not rare; only when they
    hold less than a page does the rest come from the trigram index, bounded and ordered by an
    expression the primary key cannot serve, so the planner never walks the whole table for a
    rare text. (A text common only
    among older messages then costs a read of all its older matches: the rarer case.)
    """
    with db.read() as session:
        top = before - 1 if before is not None else session.scalar(select(func.max(Message.id)))
        if top is None:
            return Page([], None)
        floor = top - RECENT_IDS  # the newest ids are those above it
        query = query.where(_contains(text))
        recent = query.where(Message.id > floor, Message.id <= top)
        rows = list(session.scalars(recent.order_by(Message.id.desc()).limit(limit + 1)))
        if len(rows) <= limit and floor > 0:
            unkeyed = Message.id + 0  # not the primary key: only the trigram index is left
            older = (
                query.where(unkeyed <= floor).order_by(unkeyed.desc()).limit(limit + 1 - len(rows))
            )
            rows += session.scalars(older)
    return _message_page(rows, limit)


@dataclass(frozen=True)
class ConversationSummary:
    """One conversation in the list."""

    contact: Contact
    last_message: Message | None
    opted_out: bool
    paused: bool


def _opted_out_numbers(session: Session, numbers: list[str]) -> set[str]:
    rows = session.scalars(
        select(OptOut.number).where(OptOut.number.in_(numbers), OptOut.opted_out.is_(True))
    )
    return set(rows)


def list_conversations(
    db: Database, limit: int, before: int | None = None
) -> Page[ConversationSummary]:
    """Return conversations with the latest activity first (cursor: last message id)."""
    query = select(Contact).where(Contact.last_message_id.is_not(None))
    if before is not None:
        query = query.where(Contact.last_message_id < before)
    query = query.order_by(Contact.last_message_id.desc()).limit(limit + 1)
    now = utcnow()
    with db.read() as session:
        contacts = list(session.scalars(query))
        more = len(contacts) > limit
        contacts = contacts[:limit]
        ids = [c.last_message_id for c in contacts if c.last_message_id]
        last = {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(ids)))}
        opted = _opted_out_numbers(session, [c.number for c in contacts])
    items = [
        ConversationSummary(
            contact=c,
            last_message=last.get(c.last_message_id or 0),
            opted_out=c.number in opted,
            paused=bool(c.replies_paused_until and c.replies_paused_until > now),
        )
        for c in contacts
    ]
    cursor = contacts[-1].last_message_id if more and contacts else None
    return Page(items, cursor)


@dataclass(frozen=True)
class Thread:
    """A conversation: the contact and a page of its messages, oldest first."""

    summary: ConversationSummary
    messages: list[Message]
    next_cursor: int | None


def before_in_thread(session: Session, before: int) -> ColumnElement[bool]:
    """Return the condition "comes before message `before` in its thread".

    A thread is in the order its messages were sent or received (created_at, then id), not the
    order they were stored: a text found by a sync after newer ones takes its place by time.
    The cursor stays a message id; a message deleted since is placed by its id alone.
    """
    at = session.scalar(select(Message.created_at).where(Message.id == before))
    if at is None:
        return Message.id < before
    return tuple_(Message.created_at, Message.id) < tuple_(literal(at, UTCDateTime()), before)


def get_thread(
    db: Database, number: str, limit: int, before: int | None = None, or_empty: bool = False
) -> Thread:
    """Return the latest `limit` messages with one number by time, oldest first.

    `or_empty`: a number we never texted with is an empty thread (its contact not stored yet),
    not NotFound.
    """
    with db.read() as session:
        contact = session.scalar(select(Contact).where(Contact.number == number))
        if contact is None and or_empty:
            opted = bool(_opted_out_numbers(session, [number]))
            new = Contact(number=number, unread_count=0)
            return Thread(ConversationSummary(new, None, opted, paused=False), [], None)
        if contact is None:
            raise NotFound(
                N_("There is no conversation with %(number)s."), "participant", number=number
            )
        query = select(Message).where(Message.contact_number == number)
        if before is not None:
            query = query.where(before_in_thread(session, before))
        newest_first = query.order_by(Message.created_at.desc(), Message.id.desc())
        rows = list(session.scalars(newest_first.limit(limit + 1)))
        opted = bool(_opted_out_numbers(session, [number]))
    more = len(rows) > limit
    rows = rows[:limit]
    now = utcnow()
    summary = ConversationSummary(
        contact=contact,
        last_message=rows[0] if rows else None,
        opted_out=opted,
        paused=bool(contact.replies_paused_until and contact.replies_paused_until > now),
    )
    return Thread(summary, list(reversed(rows)), rows[-1].id if more and rows else None)


@dataclass(frozen=True)
class MessageDetail:
    """A message we store, with its status events, or Twilio's record of one we do not."""

    local: Message | None
    events: list[StatusEvent]
    remote: RemoteMessage | None


def get_message(db: Database, gateway: TwilioGateway, sid: str) -> MessageDetail:
    """Return a message by sid: ours with its timeline, else Twilio's record; 404 if neither."""
    with db.read() as session:
        local = session.scalar(select(Message).where(Message.sid == sid))
        if local is not None:
            events = list(
                session.scalars(
                    select(StatusEvent)
                    .where(StatusEvent.message_sid == sid)
                    .order_by(StatusEvent.id)
                )
            )
            return MessageDetail(local, events, None)
    try:
        return MessageDetail(None, [], gateway.fetch(sid))
    except TwilioError as exc:
        raise _upstream_or_404(exc, sid) from None


def _upstream_or_404(exc: TwilioError, sid: str) -> Exception:
    if exc.not_found:
        return NotFound(N_("There is no message with SID %(sid)s."), "sid", sid=sid)
    return Upstream(N_("Twilio refused: %(reason)s"), exc.code, exc.status, reason=exc.message)


def redact_message(db: Database, gateway: TwilioGateway, sid: str) -> Message | None:
    """Erase a message's body at Twilio, then here; return our updated row if we have one."""
    try:
        gateway.redact(sid)
    except TwilioError as exc:
        raise _upstream_or_404(exc, sid) from None
    with db.session() as session:
        local = session.scalar(select(Message).where(Message.sid == sid))
        if local is not None:
            local.body = ""
            local.media = []
            local.redacted = True
        return local


def delete_message(db: Database, gateway: TwilioGateway, sid: str) -> None:
    """Delete a message at Twilio and here (a message Twilio no longer has is deleted here)."""
    with db.read() as session:
        known_here = session.scalar(select(Message.id).where(Message.sid == sid)) is not None
    try:
        gateway.delete(sid)
    except TwilioError as exc:
        if not (exc.not_found and known_here):
            raise _upstream_or_404(exc, sid) from None
    with db.session() as session:
        local = session.scalar(select(Message).where(Message.sid == sid))
        if local is None:
            return
        number = local.contact_number
        session.execute(delete(StatusEvent).where(StatusEvent.message_sid == sid))
        session.delete(local)
        session.flush()
        contact = session.scalar(select(Contact).where(Contact.number == number))
        if contact is not None and contact.last_message_id == local.id:
            latest = (
                session.scalars(  # the thread's last message, by time, as count_on_conversation
                    select(Message)
                    .where(Message.contact_number == number)
                    .order_by(Message.created_at.desc(), Message.id.desc())
                    .limit(1)
                ).first()
            )
            contact.last_message_id = latest.id if latest else None
            contact.last_message_at = latest.created_at if latest else None


def set_pause(db: Database, number: str, minutes: int | None) -> datetime | None:
    """Pause automatic replies with a number for `minutes`, or resume them (None)."""
    from twilio_chat.messaging import get_or_create_contact

    until = utcnow() + timedelta(minutes=minutes) if minutes else None
    with db.session() as session:
        contact = get_or_create_contact(session, number)
        contact.replies_paused_until = until
    return until


def set_name(db: Database, number: str, name: str | None) -> Contact:
    """Name (or unname) a contact."""
    from twilio_chat.messaging import get_or_create_contact

    with db.session() as session:
        contact = get_or_create_contact(session, number)
        contact.name = name or None
        return contact


CHANGES_LIMIT = 500  # new messages, and status events, one answer of /api/events reads at most


@dataclass(frozen=True)
class Changes:
    """Messages that are new or changed since a cursor, and the next cursor."""

    cursor: str
    messages: list[Message]


def unread_conversations(session: Session) -> int:
    """Return how many conversations have texts nobody read yet."""
    count = session.scalar(select(func.count()).where(Contact.unread_count > 0))
    return int(count or 0)


def current_cursor(session: Session) -> tuple[int, int]:
    """Return the newest message id and status event id."""
    mid, eid = session.execute(
        select(
            select(func.max(Message.id)).scalar_subquery(),
            select(func.max(StatusEvent.id)).scalar_subquery(),
        )
    ).one()
    return int(mid or 0), int(eid or 0)


def format_cursor(mid: int, eid: int) -> str:
    """Encode a live-updates cursor."""
    return f"{mid}.{eid}"


def parse_cursor(value: str) -> tuple[int, int] | None:
    """Decode a live-updates cursor, or None when malformed."""
    parts = value.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def changes_since(db: Database, mid: int, eid: int) -> Changes | None:
    """Return messages new or with a new status event since (mid, eid); None if nothing.

    At most CHANGES_LIMIT new messages and as many status events are read, the oldest first;
    when there are more, the cursor stops after the last one read, so the next call goes on
    from there and a client far behind misses nothing.
    """
    with db.read() as session:
        new_mid, new_eid = current_cursor(session)
        if (new_mid, new_eid) == (mid, eid):
            return None
        new_ids = list(
            session.scalars(
                select(Message.id).where(Message.id > mid).order_by(Message.id).limit(CHANGES_LIMIT)
            )
        )
        events = session.execute(
            select(StatusEvent.id, StatusEvent.message_id)
            .where(StatusEvent.id > eid)
            .order_by(StatusEvent.id)
            .limit(CHANGES_LIMIT)
        ).all()
        if len(new_ids) == CHANGES_LIMIT:
            new_mid = new_ids[-1]
        if len(events) == CHANGES_LIMIT:
            new_eid = events[-1].id
        changed_ids = set(new_ids) | {e.message_id for e in events if e.message_id is not None}
        rows = list(
            session.scalars(select(Message).where(Message.id.in_(changed_ids)).order_by(Message.id))
        )
    return Changes(format_cursor(new_mid, new_eid), rows)


def news_since(db: Database, since: tuple[int, int] | None, number: str | None) -> tuple[str, bool]:
    """Return the current cursor and whether a page shows news since `since` (None: it does).

    A page with a `number` (a chat) shows only that number's messages; any other shows all.
    """
    with db.read() as session:
        mid, eid = current_cursor(session)
        cursor = format_cursor(mid, eid)
        if since is None or number is None or since == (mid, eid):
            return cursor, since != (mid, eid)
        old_mid, old_eid = since
        news = session.scalar(
            select(Message.id)
            .where(Message.contact_number == number, Message.id > old_mid)
            .limit(1)
        ) or session.scalar(
            select(StatusEvent.id)
            .join(Message, Message.id == StatusEvent.message_id)
            .where(StatusEvent.id > old_eid, Message.contact_number == number)
            .limit(1)
        )
        return cursor, news is not None
