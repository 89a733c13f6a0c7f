"""Dashboard statistics: today, the last 7 days, delivery rate, opt-outs, jobs waiting."""

from __future__ import annotations

from datetime import timedelta

import pytest

from twilio_chat.db.engine import Database
from twilio_chat.db.models import Job, Message, OptOut, utcnow
from twilio_chat.inbox.stats import dashboard


def test_the_dashboard_counts_today_the_week_and_deliveries(db: Database) -> None:
    now = utcnow()
    rows = [
        # (direction, status, age)
        ("inbound", "received", timedelta(0)),
        ("inbound", "received", timedelta(0)),
        ("outbound", "delivered", timedelta(0)),
        ("inbound", "received", timedelta(days=2)),
        ("outbound", "delivered", timedelta(days=2)),
        ("outbound", "read", timedelta(days=3)),
        ("outbound", "undelivered", timedelta(days=3)),
        ("outbound", "failed", timedelta(days=6)),
        ("outbound", "sent", timedelta(days=6)),
        ("inbound", "received", timedelta(days=8)),  # older than a week
        ("outbound", "delivered", timedelta(days=30)),
    ]
    with db.session() as session:
        for i, (direction, status, age) in enumerate(rows):
            session.add(
                Message(
                    direction=direction,
                    contact_number=f"+1555123{i:04d}",
                    body="x",
                    status=status,
                    media=[],
                    created_at=now - age,
                )
            )
        session.add(
            OptOut(sender="+15005550006", number="+15551230001", opted_out=True, reason="x")
        )
        session.add(OptOut(sender="MG1", number="+15551230001", opted_out=True, reason="x"))
        session.add(
            OptOut(sender="+15005550006", number="+15551230002", opted_out=False, reason="y")
        )
        session.add(Job(kind="reply", payload={}, status="queued"))
        session.add(Job(kind="reply", payload={}, status="running"))
        session.add(Job(kind="reply", payload={}, status="done"))
    stats = dashboard(db)
    assert (stats.inbound_today, stats.outbound_today) == (2, 1)
    assert (stats.inbound_7d, stats.outbound_7d) == (3, 6)
    assert (stats.delivered_7d, stats.failed_7d) == (3, 2)
    assert stats.delivery_rate == pytest.approx(3 / 5)
    assert (stats.opted_out, stats.jobs_waiting) == (1, 2)


def test_an_empty_inbox_has_zero_counts_and_no_delivery_rate(db: Database) -> None:
    stats = dashboard(db)
    assert stats.inbound_7d == stats.outbound_today == stats.jobs_waiting == 0
    assert stats.delivery_rate is None
