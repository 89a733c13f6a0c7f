"""The worker loop: woken by new jobs, a cheap idle poll, one transaction between jobs, leases."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from support import PHONE, Live, inbound_sid, sandbox_sends, wait_for

from twilio_chat.db.models import Job, utcnow
from twilio_chat.jobs import queue as jobs
from twilio_chat.jobs.worker import Worker
from twilio_chat.replies.tasks import reply


@contextmanager
def subscribed() -> Iterator[threading.Event]:
    """An event set whenever this process commits a new job."""
    wake = threading.Event()
    jobs.subscribe(wake)
    try:
        yield wake
    finally:
        jobs.unsubscribe(wake)


def enqueue_sync(live: Live) -> None:
    """Commit one new (sync) job."""
    with live.db.session() as session:
        assert jobs.enqueue(session, "sync", {}, unique_key=f"test:{uuid.uuid4().hex}")


def statuses(live: Live) -> list[str]:
    """Return every job's status, oldest first."""
    with live.db.read() as session:
        return list(session.scalars(select(Job.status).order_by(Job.id)))


@contextmanager
def running(worker: Worker) -> Iterator[threading.Event]:
    """Run the worker's loop in a thread; yield an event set each time it starts to idle."""
    idle = threading.Event()
    wait = worker._idle

    def idling(stop: threading.Event, seconds: float) -> bool:
        idle.set()
        return wait(stop, seconds)

    worker._idle = idling  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield idle
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


# Waking ------------------------------------------------------------------------------------------


def test_committing_a_new_job_wakes_the_subscribed_workers(live: Live) -> None:
    with subscribed() as wake:
        with live.db.session() as session:
            assert jobs.enqueue(session, "sync", {}, unique_key="sync:wake")
            assert not wake.is_set()  # not before the commit: the worker would find nothing
        assert wake.is_set()


def test_a_rolled_back_or_duplicate_job_wakes_nobody(live: Live) -> None:
    with live.db.session() as session:
        jobs.enqueue(session, "sync", {}, unique_key="sync:once")
    with subscribed() as wake:
        with pytest.raises(RuntimeError), live.db.session() as session:
            jobs.enqueue(session, "sync", {}, unique_key="sync:rolled-back")
            raise RuntimeError("rolled back")
        with live.db.session() as session:  # the same key again: nothing new
            assert not jobs.enqueue(session, "sync", {}, unique_key="sync:once")
        with live.db.session() as session:  # a transaction with no job at all
            session.execute(update(Job).values(last_error=None))
        assert not wake.is_set()


def test_notify_enqueued_sets_every_subscriber_until_it_unsubscribes() -> None:
    with subscribed() as first, subscribed() as second:
        jobs.notify_enqueued()
        assert first.is_set() and second.is_set()
    first.clear()
    jobs.notify_enqueued()
    assert not first.is_set()


def test_an_idle_worker_answers_a_text_at_once_not_at_its_next_poll(
    live_factory: Callable[..., Live],
) -> None:
    live = live_factory(WORKER_POLL_SECONDS="60")
    worker = Worker(live.app, name="woken")
    with running(worker) as idle:
        assert idle.wait(10)  # nothing to do: it waits, for up to a minute
        inbound_sid(live, "wake up")
        # Committing the reply job woke it: the answer comes long before the next poll.
        wait_for(lambda: sandbox_sends(live), timeout=20)
    assert [m["body"] for m in sandbox_sends(live)] == ["Echo: wake up"]
    assert statuses(live) == ["done"]


def test_a_stopped_idle_worker_ends_without_waiting_for_its_poll(
    live_factory: Callable[..., Live],
) -> None:
    live = live_factory(WORKER_POLL_SECONDS="60")
    worker = Worker(live.app, name="stopped")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    time.sleep(0.2)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


# The idle poll -----------------------------------------------------------------------------------


def test_has_runnable_sees_due_jobs_and_expired_leases_only(live: Live) -> None:
    assert not jobs.has_runnable(live.db)
    enqueue_sync(live)
    assert jobs.has_runnable(live.db)
    claimed = jobs.claim(live.db, "holder", lease_seconds=60)
    assert claimed is not None
    assert not jobs.has_runnable(live.db)  # leased to a live worker
    with live.db.session() as session:
        session.execute(update(Job).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert jobs.has_runnable(live.db)  # its worker died
    with live.db.session() as session:
        session.execute(
            update(Job).values(status="queued", run_at=utcnow() + timedelta(seconds=60))
        )
    assert not jobs.has_runnable(live.db)  # a retry not yet due


def test_a_worker_loop_runs_every_queued_text_and_leaves_none_claimed(live: Live) -> None:
    for i in range(3):
        live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": f"text {i}"})
    worker = Worker(live.app, name="looping")
    with running(worker):
        wait_for(lambda: statuses(live) == ["done"] * 3, timeout=20)
    assert sorted(m["body"] for m in sandbox_sends(live)) == [f"Echo: text {i}" for i in range(3)]


# Leases ------------------------------------------------------------------------------------------


def test_a_reply_claimed_moments_ago_is_sent_without_renewing_its_lease(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    renewed: list[int] = []
    renew = jobs.renew

    def counting(*args: object, **kw: object) -> bool:
        renewed.append(1)
        return renew(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs, "renew", counting)
    inbound_sid(live)
    assert live.run_jobs() == 1
    assert renewed == []
    assert len(sandbox_sends(live)) == 1


def test_a_reply_claimed_long_ago_renews_its_lease_before_sending(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    renewed: list[int] = []
    renew = jobs.renew

    def counting(*args: object, **kw: object) -> bool:
        renewed.append(1)
        return renew(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs, "renew", counting)
    inbound_sid(live)
    worker = Worker(live.app, name="slow")
    claimed = jobs.claim(live.db, worker.id, lease_seconds=60)
    assert claimed is not None
    worker._claimed = (claimed.id, time.monotonic() - 40)  # e.g. a slow AI answer since
    reply(worker, claimed)
    assert renewed == [1]
    assert len(sandbox_sends(live)) == 1
