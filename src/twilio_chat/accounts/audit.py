"""The audit log: who changed a config, sent, redacted, deleted, or logged in, and when."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import g, has_request_context, request
from sqlalchemy import delete, select

from twilio_chat.db.engine import Database
from twilio_chat.db.models import AuditEvent, utcnow

KEEP_DAYS = 365
HIDDEN = "•••"  # a secret's old and new value, which the log never holds


def changes(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    fields: Iterable[str],
    secrets: Mapping[str, str] | None = None,
) -> dict[str, list[Any]]:
    """Return the fields whose value changed, as {field: [old, new]}.

    `secrets` maps a field that only hints at a secret (a masked key) to the secret's name: its
    change is recorded under that name with both values hidden.
    """
    found = {name: [before.get(name), after.get(name)] for name in fields}
    changed = {name: values for name, values in found.items() if values[0] != values[1]}
    for hint, name in (secrets or {}).items():
        if before.get(hint) != after.get(hint):
            changed[name] = [HIDDEN, HIDDEN]
    return changed


def current_actor(default: str = "system") -> tuple[str, str | None]:
    """Return who is acting (the logged-in user, or `default`) and from which address."""
    if not has_request_context():
        return default, None
    identity = getattr(g, "identity", None)
    name = identity.username if identity is not None else default
    return name, request.remote_addr


def record(
    db: Database,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    actor: str | None = None,
) -> None:
    """Write one audit event (in its own transaction)."""
    who, ip = current_actor()
    with db.session() as session:
        session.add(
            AuditEvent(
                actor=(actor or who)[:100],
                action=action,
                target=(target or "")[:120] or None,
                detail=detail or {},
                ip=ip,
                at=utcnow(),
            )
        )


def latest(db: Database, limit: int, before: int | None = None) -> list[AuditEvent]:
    """Return the newest events, older than a cursor."""
    query = select(AuditEvent)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    with db.read() as session:
        return list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))


def prune(db: Database) -> None:
    """Drop events older than a year."""
    from datetime import timedelta

    with db.session() as session:
        session.execute(
            delete(AuditEvent).where(AuditEvent.at < utcnow() - timedelta(days=KEEP_DAYS))
        )
