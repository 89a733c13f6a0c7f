"""Dashboard statistics: counts read from indexes alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

from .db import Database
from .models import Job, Message, OptOut, utcnow

FINAL_OUTBOUND = ("delivered", "undelivered", "failed")
DELIVERED = ("delivered", "read")
NOT_DELIVERED = ("undelivered", "failed")


@dataclass(frozen=True)
class Stats:
    """What the dashboard shows."""

    inbound_today: int
    outbound_today: int
    inbound_7d: int
    outbound_7d: int
    delivered_7d: int
    failed_7d: int
    delivery_rate: float | None  # delivered / settled outbound over 7 days
    opted_out: int
    jobs_waiting: int


def dashboard(db: Database) -> Stats:
    """Compute the dashboard's statistics."""
    now = utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    week = now - timedelta(days=7)  # always before `today`: today's messages are in the week
    inbound = Message.direction == "inbound"
    outbound = Message.direction == "outbound"
    is_today = Message.created_at >= today
    # One pass over the week's entries of ix_messages_direction_created_status, which holds
    # every column read here: no table row is visited (count(*), not count(id), for PostgreSQL).
    week_counts = select(
        func.count().filter(inbound & is_today),
        func.count().filter(outbound & is_today),
        func.count().filter(inbound),
        func.count().filter(outbound),
        func.count().filter(outbound & Message.status.in_(DELIVERED)),
        func.count().filter(outbound & Message.status.in_(NOT_DELIVERED)),
    ).where(Message.direction.in_(("inbound", "outbound")), Message.created_at >= week)
    with db.read() as session:
        counts = session.execute(week_counts).one()
        opted = session.scalar(
            select(func.count(func.distinct(OptOut.number))).where(OptOut.opted_out.is_(True))
        )
        waiting = session.scalar(
            select(func.count()).select_from(Job).where(Job.status.in_(("queued", "running")))
        )
    in_today, out_today, in_week, out_week, delivered, failed = (int(c or 0) for c in counts)
    return Stats(
        inbound_today=in_today,
        outbound_today=out_today,
        inbound_7d=in_week,
        outbound_7d=out_week,
        delivered_7d=delivered,
        failed_7d=failed,
        delivery_rate=delivered / (delivered + failed) if delivered + failed else None,
        opted_out=int(opted or 0),
        jobs_waiting=int(waiting or 0),
    )
