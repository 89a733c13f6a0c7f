"""Jobs in the database: retries with backoff, no retry on permanent errors, leases, uniqueness."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from support import PHONE, Live, inbound_sid, sandbox_sends

from twilio_chat.db.models import Job, Message, OptOut, utcnow
from twilio_chat.jobs import queue as jobs
from twilio_chat.sandbox import get_sandbox


def the_job(live: Live) -> Job:
    """Return the only job."""
    with live.db.read() as session:
        return session.scalars(select(Job)).one()


def make_due(live: Live) -> None:
    """Pretend the backoff has passed."""
    with live.db.session() as session:
        session.execute(update(Job).values(run_at=utcnow() - timedelta(seconds=1)))


def reply_row(live: Live, sid: str) -> Message | None:
    """Return the reply to an inbound sid."""
    with live.db.read() as session:
        return session.scalar(select(Message).where(Message.reply_to_sid == sid))


def test_429_and_500_are_retried_with_backoff_then_sent_once(live: Live) -> None:
    sid = inbound_sid(live)
    get_sandbox(live.app).inject_fault(429, 1)
    get_sandbox(live.app).inject_fault(500, 1)
    before = utcnow()

    assert live.run_jobs() == 1
    job = the_job(live)
    assert (job.status, job.attempts) == ("queued", 1)
    assert job.run_at > before + timedelta(seconds=20)  # backoff: about 50 s, jittered
    assert "Too Many Requests" in (job.last_error or "")
    row = reply_row(live, sid)
    assert row is not None and row.status == "pending" and row.sid is None

    assert live.run_jobs() == 0  # not due yet
    make_due(live)
    assert live.run_jobs() == 1
    assert (the_job(live).status, the_job(live).attempts) == ("queued", 2)

    make_due(live)
    assert live.run_jobs() == 1
    assert the_job(live).status == "done"
    assert [m["body"] for m in sandbox_sends(live)] == ["Echo: hello"]
    row = reply_row(live, sid)
    assert row is not None and row.sid is not None


def test_gives_up_after_max_attempts(live_factory: object) -> None:
    live = live_factory(JOB_MAX_ATTEMPTS="2")  # type: ignore[operator]
    sid = inbound_sid(live)
    get_sandbox(live.app).inject_fault(503, 5)
    live.run_jobs()
    make_due(live)
    live.run_jobs()
    job = the_job(live)
    assert (job.status, job.attempts) == ("failed", 2)
    row = reply_row(live, sid)
    assert row is not None and row.status == "failed"
    assert sandbox_sends(live) == []


def test_21610_is_not_retried_and_opts_the_number_out(live: Live) -> None:
    sid = inbound_sid(live)
    get_sandbox(live.app).inject_fault(400, 1, error_code=21610)
    assert live.run_jobs() == 1
    job = the_job(live)
    assert (job.status, job.attempts) == ("failed", 1)
    row = reply_row(live, sid)
    assert row is not None
    assert (row.status, row.error_code) == ("failed", 21610)
    assert row.error_message
    with live.db.read() as session:
        opt = session.scalars(select(OptOut).where(OptOut.number == PHONE)).one()
    assert opt.opted_out and opt.reason == "twilio 21610"


def test_21211_is_not_retried(live: Live) -> None:
    sid = inbound_sid(live)
    get_sandbox(live.app).inject_fault(400, 1, error_code=21211)
    live.run_jobs()
    assert the_job(live).status == "failed"
    row = reply_row(live, sid)
    assert row is not None and row.error_code == 21211


def test_a_job_whose_worker_died_is_claimed_again_after_its_lease(live: Live) -> None:
    inbound_sid(live)
    claimed = jobs.claim(live.db, "dead-worker", lease_seconds=60)
    assert claimed is not None
    assert jobs.claim(live.db, "other", lease_seconds=60) is None  # leased: nobody else
    with live.db.session() as session:
        session.execute(update(Job).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert live.run_jobs() == 1
    job = the_job(live)
    assert (job.status, job.attempts, job.locked_by) == ("done", 2, "test-worker")
    # The dead worker's late completion cannot touch a job it no longer holds.
    jobs.fail(live.db, job.id, "dead-worker", "late", retry=True, base_delay=1)
    assert the_job(live).status == "done"
    assert len(sandbox_sends(live)) == 1


def test_a_reply_job_run_twice_sends_once(live: Live) -> None:
    sid = inbound_sid(live)
    assert live.run_jobs() == 1
    with live.db.session() as session:
        session.execute(update(Job).values(status="queued", run_at=utcnow()))
    assert live.run_jobs() == 1
    assert len(sandbox_sends(live)) == 1
    with live.db.read() as session:
        replies = session.scalars(select(Message).where(Message.reply_to_sid == sid)).all()
    assert len(replies) == 1


def test_enqueue_with_the_same_key_writes_one_job(live: Live) -> None:
    with live.db.session() as session:
        assert jobs.enqueue(session, "reply", {"message_id": 1}, unique_key="reply:SMx")
        assert not jobs.enqueue(session, "reply", {"message_id": 1}, unique_key="reply:SMx")
    with live.db.read() as session:
        assert len(session.scalars(select(Job)).all()) == 1


def test_backoff_doubles_with_jitter() -> None:
    for attempt, ceiling in ((1, 50), (2, 100), (3, 200), (4, 400)):
        waits = [jobs.backoff_seconds(attempt, 50) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1


def test_a_send_whose_worker_died_after_twilio_accepted_it_is_not_sent_again(live: Live) -> None:
    sid = inbound_sid(live, "are you there")
    # An earlier try wrote its reply row, reached Twilio, and died before recording the answer.
    from twilio_chat.twilio.gateway import get_gateway

    with live.db.session() as session:
        session.add(
            Message(
                direction="outbound",
                contact_number=PHONE,
                our_number=live.settings.default_from,
                body="Echo: are you there",
                status="pending",
                source="engine",
                reply_to_sid=sid,
            )
        )
    accepted = get_gateway(live.app).send(
        to=PHONE,
        from_=live.settings.default_from,
        body="Echo: are you there",
        status_callback=live.url + "/twilio/status",
    )
    assert live.run_jobs() == 1
    assert len(sandbox_sends(live)) == 1
    row = reply_row(live, sid)
    assert row is not None and row.sid == accepted.sid


def test_a_try_that_failed_before_twilio_is_sent_on_retry(live: Live) -> None:
    sid = inbound_sid(live, "knock knock")
    with live.db.session() as session:
        session.add(
            Message(
                direction="outbound",
                contact_number=PHONE,
                body="Echo: knock knock",
                status="pending",
                source="engine",
                reply_to_sid=sid,
            )
        )
    assert live.run_jobs() == 1
    assert [m["body"] for m in sandbox_sends(live)] == ["Echo: knock knock"]
    row = reply_row(live, sid)
    assert row is not None and row.sid is not None


def test_a_worker_that_lost_its_lease_does_not_send(live: Live) -> None:
    from twilio_chat.jobs.worker import Worker
    from twilio_chat.replies.tasks import reply

    inbound_sid(live, "slow worker")
    stale = Worker(live.app, name="stale")
    claimed = jobs.claim(live.db, stale.id, lease_seconds=60)
    assert claimed is not None
    # Its lease ran out and another worker took the job over meanwhile.
    with live.db.session() as session:
        session.execute(update(Job).values(locked_by="successor"))
    reply(stale, claimed)
    assert sandbox_sends(live) == []
    assert jobs.renew(live.db, claimed.id, "successor", 60)
