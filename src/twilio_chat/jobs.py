"""Jobs in the database: enqueued in the caller's transaction, claimed with a lease.

SQLite serializes claims with BEGIN IMMEDIATE; PostgreSQL uses FOR UPDATE SKIP LOCKED. A job
whose worker died is claimed again once its lease runs out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import Database
from .models import Job, utcnow

BACKOFF_MAX_SECONDS = 3600.0


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    unique_key: str | None = None,
    max_attempts: int = 5,
) -> bool:
    """Add a job in the caller's transaction; tell False if one with this key exists already."""
    if unique_key is not None:
        exists = session.scalar(select(Job.id).where(Job.unique_key == unique_key))
        if exists is not None:
            return False
    try:
        with session.begin_nested():
            session.add(
                Job(kind=kind, payload=payload, unique_key=unique_key, max_attempts=max_attempts)
            )
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker holds: its id, kind, payload and which try this is."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int


def claim(db: Database, worker_id: str, lease_seconds: int) -> ClaimedJob | None:
    """Claim the oldest runnable job (queued and due, or running with an expired lease)."""
    now = utcnow()
    with db.session() as session:
        job = session.scalars(
            select(Job)
            .where(
                or_(
                    and_(Job.status == "queued", Job.run_at <= now),
                    and_(Job.status == "running", Job.lease_until < now),
                )
            )
            .order_by(Job.run_at, Job.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if job is None:
            return None
        job.status = "running"
        job.attempts += 1
        job.locked_by = worker_id
        job.lease_until = now + timedelta(seconds=lease_seconds)
        return ClaimedJob(job.id, job.kind, dict(job.payload), job.attempts, job.max_attempts)


def renew(db: Database, job_id: int, worker_id: str, lease_seconds: int) -> bool:
    """Extend this worker's lease on a job; False if the job is no longer this worker's."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.locked_by != worker_id or job.status != "running":
            return False
        job.lease_until = utcnow() + timedelta(seconds=lease_seconds)
        return True


def complete(db: Database, job_id: int, worker_id: str) -> None:
    """Mark a job done (only if this worker still holds it)."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is not None and job.locked_by == worker_id:
            job.status = "done"
            job.finished_at = utcnow()
            job.lease_until = None


def backoff_seconds(attempt: int, base: float) -> float:
    """Return the wait after try `attempt`: base * 2^(attempt-1), jittered to 50-100 %."""
    ceiling = min(BACKOFF_MAX_SECONDS, base * 2 ** max(attempt - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


def fail(
    db: Database, job_id: int, worker_id: str, error: str, retry: bool, base_delay: float
) -> None:
    """Record a failure: schedule another try with backoff, or give up for good."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.locked_by != worker_id:
            return
        job.last_error = error[:2000]
        job.lease_until = None
        if retry and job.attempts < job.max_attempts:
            job.status = "queued"
            job.run_at = utcnow() + timedelta(seconds=backoff_seconds(job.attempts, base_delay))
        else:
            job.status = "failed"
            job.finished_at = utcnow()


def count_waiting(session: Session) -> int:
    """Count jobs queued or running."""
    return int(
        session.scalar(select(func.count(Job.id)).where(Job.status.in_(("queued", "running")))) or 0
    )
