"""AI helpers and the ai-send command."""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import select
from support import PHONE, Live, enable_ai, sandbox_sends, text_app
from support.fake_openai import API_KEY, FakeOpenAI

from twilio_chat.cli import cli
from twilio_chat.db.engine import Database
from twilio_chat.db.models import Message, utcnow
from twilio_chat.replies.ai import conversation_history, history, trim_to_segments
from twilio_chat.twilio.segments import count_segments


def test_trim_keeps_short_text() -> None:
    assert trim_to_segments("  short answer ", 1) == "short answer"


def test_trim_cuts_at_a_word_boundary_within_the_segments() -> None:
    text = " ".join(f"w{i}" for i in range(300))
    for segments in (1, 2, 3):
        cut = trim_to_segments(text, segments)
        assert count_segments(cut).segments <= segments
        assert text.startswith(cut)
        assert text[len(cut)] == " "  # ends on a whole word


def test_trim_counts_ucs2_segments() -> None:
    text = "zażółć " * 40  # non-GSM characters: 70 per single segment
    cut = trim_to_segments(text, 1)
    assert len(cut) <= 70
    assert cut.endswith("zażółć")


def test_ai_send_answers_from_history_plus_the_latest_text(
    live: Live, fake_openai: FakeOpenAI
) -> None:
    text_app(live, "earlier question")
    enable_ai(live, fake_openai)
    result = CliRunner().invoke(
        cli,
        ["ai-send", "--to", PHONE, "--latest", "and now?", "--history-limit", "30"],
        obj=live.app,
    )
    assert result.exit_code == 0, result.output
    assert "AI: and now?" in result.output
    contents = [m["content"] for m in fake_openai.requests[-1]["body"]["messages"]]
    assert contents == ["Be brief.", "earlier question", "Echo: earlier question", "and now?"]
    assert sandbox_sends(live)[0]["body"] == "AI: and now?"


def test_ai_send_dry_run_sends_nothing(live: Live, fake_openai: FakeOpenAI) -> None:
    enable_ai(live, fake_openai)
    result = CliRunner().invoke(
        cli, ["ai-send", "--to", PHONE, "--latest", "hi", "--dry-run"], obj=live.app
    )
    assert result.exit_code == 0, result.output
    assert sandbox_sends(live) == []


def test_ai_send_reports_a_model_failure_in_one_line(live: Live, fake_openai: FakeOpenAI) -> None:
    enable_ai(live, fake_openai, api_key="sk-not-the-right-one")
    result = CliRunner().invoke(cli, ["ai-send", "--to", PHONE, "--latest", "hi"], obj=live.app)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: AI: the API key was rejected by {fake_openai.base_url} (401)"
    ]
    assert API_KEY not in result.output


def test_the_history_is_in_the_threads_order_by_time(db: Database) -> None:
    now = utcnow()
    with db.session() as session:  # stored in this order, sent in another
        for body, minutes_ago, direction in [
            ("newest, the one answered", 1, "inbound"),
            ("oldest", 30, "inbound"),
            ("our answer in between", 20, "outbound"),
            ("found late by a sync", 10, "inbound"),
            ("after the one answered", 0, "outbound"),
        ]:
            session.add(
                Message(
                    direction=direction,
                    contact_number=PHONE,
                    body=body,
                    status="received",
                    media=[],
                    created_at=now - timedelta(minutes=minutes_ago),
                )
            )
    with db.read() as session:
        answered = session.scalars(select(Message).where(Message.body.startswith("newest"))).one()
        assert [m.body for m in history(session, answered, 10)] == [
            "oldest",
            "our answer in between",
            "found late by a sync",
            "newest, the one answered",
        ]
        assert [m.body for m in history(session, answered, 2)] == [
            "found late by a sync",
            "newest, the one answered",
        ]
        assert [m.body for m in conversation_history(session, PHONE, 2)] == [
            "newest, the one answered",
            "after the one answered",
        ]
