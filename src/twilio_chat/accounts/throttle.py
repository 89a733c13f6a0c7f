"""Login throttling: at most 5 failures per 5 minutes per IP, 10 per 15 minutes per account.

Failures are kept in the database, so every web process sees the same counts. Twilio's
webhooks never pass through here.
"""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import delete, func, select

from twilio_chat.db.engine import Database
from twilio_chat.db.models import LoginAttempt, utcnow

PER_IP = (5, timedelta(minutes=5))
PER_ACCOUNT = (10, timedelta(minutes=15))


def wait_seconds(db: Database, ip: str, username: str) -> int:
    """Return how long this IP or account must wait before trying again (0: go ahead)."""
    now = utcnow()
    waits = []
    with db.read() as session:
        for column, value, (limit, window) in (
            (LoginAttempt.ip, ip, PER_IP),
            (LoginAttempt.username, username.strip().lower(), PER_ACCOUNT),
        ):
            since = now - window
            count, oldest = session.execute(
                select(func.count(LoginAttempt.id), func.min(LoginAttempt.at)).where(
                    column == value, LoginAttempt.at >= since
                )
            ).one()
            if count >= limit and oldest is not None:
                waits.append((oldest + window - now).total_seconds())
    return max((math.ceil(w) for w in waits), default=0)


def record_failure(db: Database, ip: str, username: str) -> None:
    """Remember a failed login (and forget ones older than a day)."""
    now = utcnow()
    with db.session() as session:
        session.add(LoginAttempt(ip=ip[:64], username=username.strip().lower()[:64], at=now))
        session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - timedelta(days=1)))


def forget_account_failures(db: Database, username: str) -> None:
    """Forget an account's failed logins (its password was just set anew)."""
    with db.session() as session:
        session.execute(
            delete(LoginAttempt).where(LoginAttempt.username == username.strip().lower())
        )
