"""Jobs in the database: enqueued in the caller's transaction, claimed with a lease.

SQLite serializes claims with BEGIN IMMEDIATE; PostgreSQL uses FOR UPDATE SKIP LOCKED. A job
whose worker died is claimed again once its lease runs out.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from twilio_chat.db.engine import (
    Database,
    upsert_into,
)
from twilio_chat.db.models import Job, utcnow

BACKOFF_MAX_SECONDS = 3600.0
_ENQUEUED = (
    "twilio_chat.jobs.queue.enqueued"  # session.info flag: wake the workers after the commit
)


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    unique_key: str | None = None,
    max_attempts: int = 5,
) -> bool:
    """Add a job in the caller's transaction; tell False if one with this key exists already."""
    return enqueue_many(session, kind, [(payload, unique_key)], max_attempts) == 1


def enqueue_many(
    session: Session,
    kind: str,
    items: Sequence[tuple[dict[str, Any], str | None]],
    max_attempts: int = 5,
) -> int:
    """Add jobs (payload, unique key) in the caller's transaction; return how many were new.

    A job whose unique key exists already is left out (ON CONFLICT, no savepoint). This
    process's workers are woken once the caller commits.
    """
    if not items:
        return 0
    now = utcnow()
    rows = [
        {
            "kind": kind,
            "payload": payload,
            "unique_key": unique_key,
            "max_attempts": max_attempts,
            "status": "queued",
            "attempts": 0,
            "run_at": now,
            "created_at": now,
        }
        for payload, unique_key in items
    ]
    conn = session.connection()
    insert = _insert_job(conn.dialect.name)
    added = len(conn.execute(insert, rows).all())  # one statement; a row per job added
    if added:
        wake_after_commit(session)
    return added


@functools.cache
def _insert_job(dialect: str) -> Executable:
    """The insert of a job that skips one whose unique key exists (built once per dialect)."""
    table = cast(Table, Job.__table__)
    insert = upsert_into(dialect, table).on_conflict_do_nothing(index_elements=["unique_key"])
    return insert.returning(table.c.id)


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker holds: its id, kind, payload and which try this is."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int


def _runnable(now: datetime) -> ColumnElement[bool]:
    """The condition of a job a worker may claim: queued and due, or its lease expired."""
    return or_(
        and_(Job.status == "queued", Job.run_at <= now),
        and_(Job.status == "running", Job.lease_until < now),
    )


def has_runnable(db: Database) -> bool:
    """Tell whether any job can be claimed now, with a read that takes no write lock."""
    with db.read() as session:
        found = session.scalar(select(Job.id).where(_runnable(utcnow())).limit(1))
    return found is not None


def claim(db: Database, worker_id: str, lease_seconds: int) -> ClaimedJob | None:
    """Claim the oldest runnable job (queued and due, or running with an expired lease)."""
    with db.session() as session:
        return _claim(session, worker_id, lease_seconds)


def _claim(session: Session, worker_id: str, lease_seconds: int) -> ClaimedJob | None:
    """Claim the oldest runnable job with one UPDATE ... RETURNING in the session's transaction.

    The job is picked by a subquery (FOR UPDATE SKIP LOCKED on PostgreSQL, so concurrent
    workers pass over each other's pick; SQLite holds the write lock already).
    """
    now = utcnow()
    conn = session.connection()
    row = conn.execute(
        _claim_statement(conn.dialect.name),
        {
            "now": now,
            "worker_id": worker_id,
            "lease_until": now + timedelta(seconds=lease_seconds),
        },
    ).first()
    if row is None:
        return None
    return ClaimedJob(row.id, row.kind, dict(row.payload or {}), row.attempts, row.max_attempts)


@functools.cache
def _claim_statement(dialect: str) -> Executable:
    """The UPDATE that claims the oldest runnable job (built once per dialect)."""
    table = cast(Table, Job.__table__)
    c, o = table.c, table.alias("other").c  # the subquery reads its own copy of the table
    now = bindparam("now", type_=c.run_at.type)
    pick = (
        select(o.id)
        .where(
            or_(
                and_(o.status == "queued", o.run_at <= now),
                and_(o.status == "running", o.lease_until < now),
            )
        )
        .order_by(o.run_at, o.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(table)
        .where(c.id == pick)
        .values(
            status="running",
            attempts=c.attempts + 1,
            locked_by=bindparam("worker_id"),
            lease_until=bindparam("lease_until", type_=c.lease_until.type),
        )
        .returning(c.id, c.kind, c.payload, c.attempts, c.max_attempts)
    )


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
        _complete(session, job_id, worker_id)


def _complete(session: Session, job_id: int, worker_id: str) -> None:
    """Mark a job done in the session's transaction, if this worker still holds it."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id)
        .values(status="done", finished_at=utcnow(), lease_until=None)
    )


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


# Waking workers ------------------------------------------------------------------------------
# When a transaction that enqueued a job commits, every worker of this process that waits for
# work is woken at once, so a reply does not wait for the next poll. Workers in other processes
# find the job at their next poll (WORKER_POLL_SECONDS), a cheap read (`has_runnable`).

_listeners: set[threading.Event] = set()
_listeners_lock = threading.Lock()


def subscribe(wake: threading.Event) -> None:
    """Have `wake` set whenever a job is enqueued and committed in this process."""
    with _listeners_lock:
        _listeners.add(wake)


def unsubscribe(wake: threading.Event) -> None:
    """Stop setting `wake` on new jobs."""
    with _listeners_lock:
        _listeners.discard(wake)


def notify_enqueued() -> None:
    """Wake this process's waiting workers: a job was just committed."""
    with _listeners_lock:
        listeners = list(_listeners)
    for wake in listeners:
        wake.set()


def wake_after_commit(session: Session) -> None:
    """Wake this process's workers once the session's outermost transaction has committed."""
    session.info[_ENQUEUED] = True


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    """Wake the workers once the outermost transaction that enqueued a job has committed."""
    if not session.in_nested_transaction() and session.info.pop(_ENQUEUED, False):
        notify_enqueued()
