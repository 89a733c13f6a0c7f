"""Sync with Twilio's message list: upsert by sid, and answer texts missed while down, once."""

from __future__ import annotations

from datetime import datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import select
from support import PHONE, Live, sandbox_sends

from twilio_chat.cli import cli
from twilio_chat.db.models import Job, Message, utcnow
from twilio_chat.jobs.worker import Worker
from twilio_chat.replies import config as reply_config
from twilio_chat.sandbox import get_store
from twilio_chat.sandbox.state import new_sid
from twilio_chat.sandbox.store import SandboxMessage


def missed_text(live: Live, body: str, when: datetime, sender: str = PHONE) -> str:
    """Put an inbound text into the sandbox's record only, as if the webhook never reached us."""
    sid = new_sid("SM")
    with get_store(live.app).session() as session:
        session.add(
            SandboxMessage(
                sid=sid,
                account_sid=live.settings.account_sid,
                from_number=sender,
                to_number=live.settings.default_from or "",
                body=body,
                media_urls=[],
                status="received",
                direction="inbound",
                date_created=when,
                date_sent=when,
            )
        )
    return sid


def stored(live: Live, sid: str) -> Message | None:
    """Return our row for a sid."""
    with live.db.read() as session:
        return session.scalar(select(Message).where(Message.sid == sid))


def test_a_text_missed_while_down_is_stored_and_answered_once(live: Live) -> None:
    reply_config.note_start(live.db, live.settings)
    sid = missed_text(live, "anyone?", utcnow() + timedelta(seconds=1))

    answer = live.api("GET", "/api/messages/remote")
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"]["replies_enqueued"] == 1
    assert stored(live, sid) is not None
    assert live.run_jobs() == 1
    assert [m["body"] for m in sandbox_sends(live)] == ["Echo: anyone?"]

    # Again, and after a "restart" (a new worker): nothing is answered twice.
    again = live.api("GET", "/api/messages/remote").json()["stored"]
    assert again["inserted"] == 0 and again["replies_enqueued"] == 0
    assert live.run_jobs() == 0
    assert len(sandbox_sends(live)) == 1


def test_a_text_older_than_the_reply_mode_is_stored_but_not_answered(live: Live) -> None:
    old = missed_text(live, "from last year", utcnow() - timedelta(days=1))
    reply_config.note_start(live.db, live.settings)
    result = live.api("GET", "/api/messages/remote").json()["stored"]
    assert result["inserted"] == 1 and result["replies_enqueued"] == 0
    assert stored(live, old) is not None
    assert live.run_jobs() == 0


def test_switching_the_mode_on_moves_the_catch_up_line(live: Live) -> None:
    reply_config.note_start(live.db, live.settings)
    before = missed_text(live, "before the switch", utcnow() - timedelta(seconds=1))
    live.api("POST", "/api/auto-reply/config", json={"enabled": True, "message": "Away"})
    after = missed_text(live, "after the switch", utcnow() + timedelta(seconds=1))
    live.api("GET", "/api/messages/remote")
    live.run_jobs()
    with live.db.read() as session:
        answered = set(
            session.scalars(select(Message.reply_to_sid).where(Message.reply_to_sid.is_not(None)))
        )
    assert answered == {after}
    assert before not in answered


def test_without_a_known_reply_mode_nothing_is_answered(live: Live) -> None:
    missed_text(live, "hello", utcnow())
    assert live.api("GET", "/api/messages/remote").json()["stored"]["replies_enqueued"] == 0


def test_an_answered_text_is_never_answered_again(live: Live) -> None:
    reply_config.note_start(live.db, live.settings)
    sent = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "hi"}).json()
    live.run_jobs()
    assert len(sandbox_sends(live)) == 1
    result = live.api("GET", "/api/messages/remote").json()["stored"]
    assert result["replies_enqueued"] == 0
    assert stored(live, sent["sid"]) is not None
    assert len(sandbox_sends(live)) == 1


def test_messages_sent_elsewhere_are_stored_and_statuses_move_forward(live: Live) -> None:
    remote_sid = new_sid("SM")
    ours = new_sid("SM")
    with live.db.session() as session:
        session.add(
            Message(
                sid=ours, direction="outbound", contact_number=PHONE, body="ours", status="sent"
            )
        )
    with get_store(live.app).session() as session:
        for sid, body in ((remote_sid, "sent from the console"), (ours, "ours")):
            session.add(
                SandboxMessage(
                    sid=sid,
                    account_sid=live.settings.account_sid,
                    from_number=live.settings.default_from,
                    to_number=PHONE,
                    body=body,
                    media_urls=[],
                    status="delivered",
                    direction="outbound-api",
                    date_sent=utcnow(),
                )
            )
    result = live.api("GET", "/api/messages/remote").json()["stored"]
    assert (result["inserted"], result["updated"]) == (1, 1)
    row = stored(live, remote_sid)
    assert row is not None and (row.direction, row.source, row.status) == (
        "outbound",
        "twilio",
        "delivered",
    )
    mine = stored(live, ours)
    assert mine is not None and mine.status == "delivered"


def test_the_worker_runs_the_periodic_sync(live_factory: object) -> None:
    live = live_factory(SYNC_IN_SANDBOX="true", SYNC_INTERVAL_SECONDS="30")  # type: ignore[operator]
    reply_config.note_start(live.db, live.settings)
    sid = missed_text(live, "while you were out", utcnow() + timedelta(seconds=1))
    worker = Worker(live.app, name="sync-worker")
    worker.run_chore("schedule-sync")
    worker.run_chore("schedule-sync")  # not due again yet: one job
    with live.db.read() as session:
        assert [j.kind for j in session.scalars(select(Job))] == ["sync"]
    assert worker.run_once()  # the sync
    assert worker.run_once()  # the catch-up reply
    assert stored(live, sid) is not None
    assert [m["body"] for m in sandbox_sends(live)] == ["Echo: while you were out"]


def test_the_periodic_sync_is_off_in_sandbox_mode_by_default(live: Live) -> None:
    worker = Worker(live.app)
    worker.run_chore("schedule-sync")
    with live.db.read() as session:
        assert session.scalars(select(Job)).all() == []


def test_sync_command(live: Live) -> None:
    reply_config.note_start(live.db, live.settings)
    missed_text(live, "cli", utcnow() + timedelta(seconds=1))
    result = CliRunner().invoke(cli, ["sync", "--days", "2"], obj=live.app)
    assert result.exit_code == 0, result.output
    assert "stored 1 new" in result.output
    assert "enqueued 1 replies" in result.output
