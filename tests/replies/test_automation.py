"""Who answers texts automatically: the mode, its safe default, and the auto-reply's limits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from support import Live, logged_in, make_settings, numbered_text, text_app

from twilio_chat.db.engine import Database
from twilio_chat.db.models import AuditEvent, Message, utcnow
from twilio_chat.messaging import store_inbound
from twilio_chat.replies import config as reply_config
from twilio_chat.replies.policy import decide

REAL = {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "t" * 32}
WEEK = {day: {"start": "00:00", "end": "23:59"} for day in ("mon", "tue", "wed", "thu", "fri")}


def decide_for_a_new_text(db: Database, settings: Any, n: int = 1) -> Any:
    """Store an inbound text and return who would answer it."""
    with db.session() as session:
        stored = store_inbound(session, settings, numbered_text(n))
        return decide(session, settings, session.get_one(Message, stored.message_id))


def test_with_real_credentials_and_nothing_chosen_nobody_answers(
    db: Database, db_path: Path
) -> None:
    settings = make_settings(db_path, **REAL)
    assert not settings.sandbox
    with db.read() as session:
        assert reply_config.current_mode(session, settings) == "off"
    decision = decide_for_a_new_text(db, settings)
    assert (decision.mode, decision.reason) == ("none", "automatic replies are off")


def test_chat_mode_chooses_the_default_even_with_real_credentials(
    db: Database, db_path: Path
) -> None:
    settings = make_settings(db_path, CHAT_MODE="keywords", **REAL)
    assert decide_for_a_new_text(db, settings).mode == "engine"


def test_the_sandbox_answers_with_echo_until_something_is_chosen(live: Live) -> None:
    shown = live.api("GET", "/api/automation").json()
    assert shown["mode"] == "echo" and shown["chosen"] is False
    assert {"off", "auto_reply", "ai", "echo", "keywords"} <= set(shown["modes"])
    assert text_app(live, "ping") == "Echo: ping"


def test_choosing_off_silences_the_app_and_is_audited(live: Live) -> None:
    chosen = live.api("POST", "/api/automation", json={"mode": "off"})
    assert chosen.status_code == 200, chosen.text
    assert (chosen.json()["mode"], chosen.json()["chosen"]) == ("off", True)
    assert text_app(live, "hello?") is None
    with live.db.read() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "automation_mode")
        ).one()
    assert event.detail == {"mode": ["echo", "off"]}
    live.api("POST", "/api/automation", json={"mode": "keywords"})
    assert text_app(live, "what are your hours?") == "We are open Monday to Friday, 9:00-17:00."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"mode": "shout"}, "Choose one of"),
        ({"mode": 5}, None),
        ({}, None),
        ({"mode": "auto_reply"}, "Save an auto-reply message first"),
    ],
)
def test_a_mode_that_cannot_be_chosen_is_a_400_naming_mode(
    live: Live, body: dict[str, Any], message: str | None
) -> None:
    answer = live.api("POST", "/api/automation", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "mode"
    if message:
        assert message in answer.json()["error"]["message"]
    assert live.api("GET", "/api/automation").json()["chosen"] is False


def test_switching_the_auto_reply_off_leaves_nobody_answering_not_echo(live: Live) -> None:
    live.api("POST", "/api/auto-reply/config", json={"enabled": True, "message": "Back at 9."})
    assert live.api("GET", "/api/automation").json()["mode"] == "auto_reply"
    live.api("POST", "/api/auto-reply/config", json={"enabled": False})
    assert live.api("GET", "/api/automation").json()["mode"] == "off"
    assert text_app(live, "Anyone?") is None


def test_the_auto_reply_answers_a_conversation_once_within_its_window(live: Live) -> None:
    saved = live.api(
        "POST", "/api/auto-reply/config", json={"enabled": True, "message": "Back at 9."}
    )
    assert saved.json()["window_hours"] == 12
    assert text_app(live, "one") == "Back at 9."
    assert text_app(live, "two") is None  # within 12 h of the first
    assert text_app(live, "hi", sender="+15557650000") == "Back at 9."  # another conversation
    live.api("POST", "/api/auto-reply/config", json={"window_hours": 0})
    assert text_app(live, "three") == "Back at 9."


def test_an_auto_reply_older_than_the_window_does_not_count(live: Live) -> None:
    live.api("POST", "/api/auto-reply/config", json={"enabled": True, "message": "Closed."})
    assert text_app(live, "one") == "Closed."
    with live.db.session() as session:
        for message in session.scalars(select(Message).where(Message.source == "auto_reply")):
            message.created_at = utcnow() - timedelta(hours=13)
    assert text_app(live, "two") == "Closed."


def test_only_outside_business_hours(live: Live) -> None:
    always_open = {
        "timezone": "Pacific/Kiritimati",
        "days": {**WEEK, "sat": WEEK["mon"], "sun": WEEK["mon"]},
    }
    saved = live.api(
        "POST",
        "/api/auto-reply/config",
        json={
            "enabled": True,
            "message": "We are closed.",
            "outside_hours_only": True,
            "business_hours": always_open,
            "window_hours": 0,
        },
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["business_hours"]["timezone"] == "Pacific/Kiritimati"
    assert text_app(live, "open?") is None  # inside business hours (open all day, every day)
    live.api(
        "POST", "/api/auto-reply/config", json={"business_hours": {"timezone": "UTC", "days": {}}}
    )
    assert text_app(live, "open now?") == "We are closed."


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"outside_hours_only": True}, "business_hours"),
        ({"business_hours": {"timezone": "Mars/Olympus", "days": {}}}, "business_hours.timezone"),
        (
            {
                "business_hours": {
                    "timezone": "UTC",
                    "days": {"mon": {"start": "17:00", "end": "09:00"}},
                }
            },
            "business_hours.days.mon",
        ),
        ({"window_hours": -1}, "window_hours"),
        ({"window_hours": 721}, "window_hours"),
    ],
)
def test_bad_auto_reply_limits_name_the_field_and_save_nothing(
    live: Live, payload: dict[str, Any], field: str
) -> None:
    live.api("POST", "/api/auto-reply/config", json={"message": "Hello"})
    answer = live.api("POST", "/api/auto-reply/config", json={"message": "Changed", **payload})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field
    assert live.api("GET", "/api/auto-reply/config").json()["message"] == "Hello"


def test_the_navbar_says_who_answers_and_the_old_tabs_lead_to_automation(live: Live) -> None:
    panel = logged_in(live)
    page = panel.get(f"{live.url}/conversations")
    assert 'data-mode="echo"' in page.text and "Answering: Echo" in page.text
    live.api("POST", "/api/automation", json={"mode": "off"})
    page = panel.get(f"{live.url}/automation")
    assert page.status_code == 200
    assert 'data-mode="off"' in page.text and "Automatic replies off" in page.text
    assert 'id="mode-off" value="off" checked' in page.text
    for old, anchor in (("/auto-reply", "#auto-reply"), ("/ai", "#ai")):
        moved = panel.get(f"{live.url}{old}", allow_redirects=False)
        assert moved.status_code == 302 and moved.headers["Location"].endswith(
            "/automation" + anchor
        )
