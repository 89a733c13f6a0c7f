"""Sync with Twilio's message list: upsert by sid, and answer texts missed while down, once."""

from __future__ import annotations

from datetime import datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import select
from support import PHONE, Live, sandbox_sends

from twilio_chat.cli import cli
from twilio_chat.db.models import Job, Message, ReplyMode, utcnow
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


OTHER = "+15551230002"


def _sends(live: Live, to: str) -> list[str]:
    return [m["body"] for m in sandbox_sends(live, to)]


def test_several_missed_texts_of_a_conversation_get_one_reply_to_the_newest(live: Live) -> None:
    start = utcnow() - timedelta(hours=1)
    _mode_on_since(live, start)
    for i, body in enumerate(["are you there", "hello??", "call me back"]):
        missed_text(live, body, start + timedelta(minutes=10 + i))
    missed_text(live, "one from someone else", start + timedelta(minutes=5), sender=OTHER)

    result = live.api("GET", "/api/messages/remote").json()["stored"]
    assert (result["inserted"], result["replies_enqueued"]) == (4, 2)
    live.run_jobs()
    assert _sends(live, PHONE) == ["Echo: call me back"]
    assert _sends(live, OTHER) == ["Echo: one from someone else"]
    # The missed texts were stored in the order they were sent.
    with live.db.read() as session:
        bodies = session.scalars(
            select(Message.body)
            .where(Message.contact_number == PHONE, Message.direction == "inbound")
            .order_by(Message.id)
        ).all()
    assert bodies == ["are you there", "hello??", "call me back"]


def _mode_on_since(live: Live, since: datetime) -> None:
    """Record the reply mode as switched on at `since`."""
    reply_config.note_start(live.db, live.settings)
    with live.db.session() as session:
        session.get_one(ReplyMode, 1).since = since


def test_a_missed_text_older_than_one_received_since_gets_no_reply(live: Live) -> None:
    _mode_on_since(live, utcnow() - timedelta(hours=1))
    missed_text(live, "sent while we were down", utcnow() - timedelta(minutes=10))
    sent = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "and now"})
    assert sent.status_code == 201, sent.text
    live.run_jobs()
    assert _sends(live, PHONE) == ["Echo: and now"]

    result = live.api("GET", "/api/messages/remote").json()["stored"]
    assert (result["inserted"], result["replies_enqueued"]) == (1, 0)
    assert live.run_jobs() == 0
    assert _sends(live, PHONE) == ["Echo: and now"]


def test_a_synced_text_takes_its_place_in_the_thread_by_time(live: Live) -> None:
    now = utcnow()
    missed_text(live, "first", now - timedelta(hours=2))
    missed_text(live, "third", now)
    live.api("GET", "/api/messages/remote")
    # Found by a later sync: stored after "third", sent before it.
    missed_text(live, "second", now - timedelta(hours=1))
    missed_text(live, "zeroth", now - timedelta(hours=3))
    live.api("GET", "/api/messages/remote")

    thread = live.api("GET", f"/api/conversations/{PHONE}").json()
    assert [m["body"] for m in thread["messages"]] == ["zeroth", "first", "second", "third"]
    pages, cursor = [], None
    while True:  # page by page, newest first, each message once
        params = {"limit": 1, **({"before": cursor} if cursor else {})}
        page = live.api("GET", f"/api/conversations/{PHONE}", params=params).json()
        pages += [m["body"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == ["third", "second", "first", "zeroth"]
    chat = live.api("GET", f"/chat/{PHONE}").text
    positions = [chat.index(f">{body}<") for body in ("zeroth", "first", "second", "third")]
    assert positions == sorted(positions)
    conversation = live.api("GET", "/api/conversations").json()["conversations"][0]
    assert conversation["last_message"]["body"] == "third"
    # Deleting the last messages makes the one before them by time the last, not the newest id.
    for body in ("third", "second"):
        with live.db.read() as session:
            sid = session.scalars(select(Message.sid).where(Message.body == body)).one()
        assert live.api("DELETE", f"/api/messages/{sid}").status_code == 200
    conversation = live.api("GET", "/api/conversations").json()["conversations"][0]
    assert conversation["last_message"]["body"] == "first"
