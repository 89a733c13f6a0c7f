"""Who answers an inbound text, and with what: every branch, with the message that goes out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from support import PHONE, Live, enable_ai, post_inbound, sandbox_sends, text_app
from support.fake_openai import API_KEY, FakeOpenAI

from twilio_chat.db.models import Job, Message

# Nobody answers ---------------------------------------------------------------------------


def test_keywords_get_no_answer_from_us(live: Live) -> None:
    for word in ("STOP", "start", "HELP", " info "):
        assert text_app(live, word) is None
    assert sandbox_sends(live) == []


def test_an_opted_out_number_gets_no_answer(live: Live) -> None:
    assert text_app(live, "STOP") is None
    assert text_app(live, "Are you there?") is None
    assert sandbox_sends(live) == []
    assert text_app(live, "START") is None
    assert text_app(live, "Back again") == "Echo: Back again"


def test_a_sender_that_is_not_e164_or_is_our_own_number_gets_no_answer(live: Live) -> None:
    post_inbound(live, "CarrierInfo", "Your bill is ready")
    post_inbound(live, live.settings.default_from or "", "Talking to myself")
    assert live.run_jobs() == 0
    with live.db.read() as session:
        assert session.scalar(select(func.count(Message.id))) == 2
        assert session.scalar(select(func.count(Job.id))) == 0


def test_a_paused_conversation_gets_no_answer_until_resumed(live: Live) -> None:
    assert live.api("POST", f"/api/conversations/{PHONE}/pause", json={"minutes": 5}).ok
    assert text_app(live, "hello?") is None
    conversation = live.api("GET", f"/api/conversations/{PHONE}").json()["conversation"]
    assert conversation["replies_paused"] is True
    assert live.api("POST", f"/api/conversations/{PHONE}/resume").ok
    assert text_app(live, "hello again") == "Echo: hello again"


def test_pause_rejects_bad_input(live: Live) -> None:
    answer = live.api("POST", f"/api/conversations/{PHONE}/pause", json={"minutes": 0})
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "minutes"
    answer = live.api("POST", "/api/conversations/12345/pause", json={})
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "participant"


def test_a_person_sending_takes_over_the_conversation(live: Live) -> None:
    sent = live.api("POST", "/api/send-message", json={"to": PHONE, "body": "A human here"})
    assert sent.status_code == 201
    assert text_app(live, "Thanks!") is None
    conversation = live.api("GET", f"/api/conversations/{PHONE}").json()["conversation"]
    assert conversation["replies_paused"] is True


def test_no_takeover_pause_when_switched_off(live_factory: Any) -> None:
    live = live_factory(AI_HUMAN_PAUSE_MINUTES="0")
    live.api("POST", "/api/send-message", json={"to": PHONE, "body": "A human here"})
    assert text_app(live, "Thanks!") == "Echo: Thanks!"


def test_loop_guard_caps_automatic_replies_per_hour(live_factory: Any) -> None:
    live = live_factory(AUTO_REPLY_MAX_PER_HOUR="2")
    assert text_app(live, "one") == "Echo: one"
    assert text_app(live, "two") == "Echo: two"
    assert text_app(live, "three") is None
    assert len(sandbox_sends(live)) == 2


# Engines and auto-reply -----------------------------------------------------------------


def test_echo_engine_is_the_default(live: Live) -> None:
    assert text_app(live, "ping") == "Echo: ping"


def test_keywords_engine(live_factory: Any) -> None:
    live = live_factory(CHAT_MODE="keywords")
    assert text_app(live, "what are your hours?") == "We are open Monday to Friday, 9:00-17:00."
    assert text_app(live, "blah").startswith("Thanks for your message")  # type: ignore[union-attr]


def test_auto_reply_answers_with_its_fixed_message(live: Live) -> None:
    answer = live.api(
        "POST", "/api/auto-reply/config", json={"enabled": True, "message": "Back at 9."}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["active_mode"] == "auto_reply"
    assert text_app(live, "Anyone?") == "Back at 9."
    live.api("POST", "/api/auto-reply/config", json={"enabled": False})
    assert text_app(live, "Now?") is None  # switched off: nobody, not the echo engine


# AI ---------------------------------------------------------------------------------------


def test_ai_answers_with_history_in_order_and_each_message_once(
    live: Live, fake_openai: FakeOpenAI
) -> None:
    assert text_app(live, "first") == "Echo: first"
    enable_ai(live, fake_openai)
    assert text_app(live, "second") == "AI: second"
    assert text_app(live, "third") == "AI: third"

    body = fake_openai.requests[-1]["body"]
    assert body["model"] == "test-model"
    assert body["temperature"] == 0.3
    assert fake_openai.requests[-1]["authorization"] == f"Bearer {API_KEY}"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Echo: first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "AI: second"},
        {"role": "user", "content": "third"},
    ]


def test_ai_history_limit_keeps_the_newest_messages(live: Live, fake_openai: FakeOpenAI) -> None:
    enable_ai(live, fake_openai, history_limit=3)
    for word in ("a", "b", "c"):
        text_app(live, word)
    contents = [m["content"] for m in fake_openai.requests[-1]["body"]["messages"]]
    assert contents == ["Be brief.", "b", "AI: b", "c"]


def test_ai_answer_is_cut_to_max_segments_at_a_word_boundary(
    live: Live, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer = " ".join(["word"] * 200)  # 999 characters
    enable_ai(live, fake_openai, max_segments=1)
    reply = text_app(live, "long please")
    assert reply is not None
    assert len(reply) <= 160
    assert reply.endswith("word")


def test_ai_target_number_limits_ai_to_that_number(live: Live, fake_openai: FakeOpenAI) -> None:
    other = "+15551239999"
    enable_ai(live, fake_openai, target_number=other)
    assert text_app(live, "me?") is None  # AI answers only its target; nobody else does
    assert text_app(live, "and me?", sender=other) == "AI: and me?"


def test_ai_failure_sends_the_fallback_text(live: Live, fake_openai: FakeOpenAI) -> None:
    enable_ai(live, fake_openai, api_key="sk-wrong-key-000000", fallback_text="We'll text back.")
    assert text_app(live, "hi") == "We'll text back."


def test_ai_failure_without_fallback_sends_nothing_and_says_why(
    live: Live, fake_openai: FakeOpenAI
) -> None:
    fake_openai.status = 500
    enable_ai(live, fake_openai)
    assert text_app(live, "hi") is None
    assert sandbox_sends(live) == []
    with live.db.read() as session:
        job = session.scalars(select(Job)).one()
    assert job.status == "failed"
    assert "HTTP 500" in (job.last_error or "")
    assert len(fake_openai.requests) == 2  # at most 2 tries


def test_ai_from_the_environment_answers_without_a_save(
    live_factory: Any, fake_openai: FakeOpenAI
) -> None:
    live = live_factory(
        AI_ENABLED="true",
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_MODEL="env-model",
    )
    assert text_app(live, "env?") == "AI: env?"
    assert fake_openai.requests[-1]["body"]["model"] == "env-model"
