"""The auto-reply and AI configurations through the API, and the AI connection test."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from sqlalchemy import select
from support import Live, sandbox_sends
from support.fake_openai import API_KEY, FakeOpenAI

from twilio_chat.db.models import AIConfig


def test_auto_reply_config_round_trip(live: Live) -> None:
    assert live.api("GET", "/api/auto-reply/config").json()["enabled"] is False
    saved = live.api("POST", "/api/auto-reply/config", json={"enabled": True, "message": "Hi!"})
    assert saved.status_code == 200
    again = live.api("GET", "/api/auto-reply/config").json()
    assert (again["enabled"], again["message"], again["active_mode"]) == (True, "Hi!", "auto_reply")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"enabled": True, "message": ""}, "message"),
        ({"enabled": True, "message": "x" * 641}, "message"),
        ({"enabled": "yes", "message": "ok"}, "enabled"),
        ({"enabled": True, "message": 5}, "message"),
    ],
)
def test_auto_reply_bad_input_names_the_field_and_saves_nothing(
    live: Live, payload: dict[str, Any], field: str
) -> None:
    answer = live.api("POST", "/api/auto-reply/config", json=payload)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == field
    assert live.api("GET", "/api/auto-reply/config").json()["enabled"] is False


def test_640_characters_is_allowed(live: Live) -> None:
    answer = live.api(
        "POST", "/api/auto-reply/config", json={"enabled": True, "message": "x" * 640}
    )
    assert answer.status_code == 200


def test_enabling_one_mode_switches_the_other_off(live: Live, fake_openai: FakeOpenAI) -> None:
    live.api("POST", "/api/auto-reply/config", json={"enabled": True, "message": "Away"})
    ai = live.api(
        "POST",
        "/api/ai/config",
        json={"enabled": True, "api_key": API_KEY, "base_url": fake_openai.base_url},
    ).json()
    assert ai["enabled"] is True and ai["auto_reply_enabled"] is False
    auto = live.api("GET", "/api/auto-reply/config").json()
    assert auto["enabled"] is False and auto["ai_enabled"] is True
    assert auto["active_mode"] == "ai"

    live.api("POST", "/api/auto-reply/config", json={"enabled": True, "message": "Away"})
    ai = live.api("GET", "/api/ai/config").json()
    assert ai["enabled"] is False and ai["auto_reply_enabled"] is True


def test_enabling_auto_reply_switches_off_ai_from_the_environment(
    live_factory: Any, fake_openai: FakeOpenAI
) -> None:
    live = live_factory(AI_ENABLED="true", OPENAI_API_KEY=API_KEY)
    assert live.api("GET", "/api/ai/config").json()["enabled"] is True
    live.api("POST", "/api/auto-reply/config", json={"enabled": True, "message": "Away"})
    ai = live.api("GET", "/api/ai/config").json()
    assert ai["enabled"] is False
    assert ai["active_mode"] == "auto_reply"


def test_api_key_is_write_only_and_stored_encrypted(live: Live) -> None:
    answer = live.api("POST", "/api/ai/config", json={"api_key": API_KEY}).json()
    assert API_KEY not in str(answer)
    assert answer["api_key_set"] is True
    assert answer["api_key_hint"] == "…" + API_KEY[-4:]
    with live.db.read() as session:
        stored = session.scalars(select(AIConfig.api_key_encrypted)).one()
    assert stored and API_KEY not in stored
    # Leaving the key out keeps it; an empty string clears it.
    kept = live.api("POST", "/api/ai/config", json={"model": "other"}).json()
    assert kept["api_key_set"] is True
    cleared = live.api("POST", "/api/ai/config", json={"api_key": ""}).json()
    assert cleared["api_key_set"] is False


def test_ai_config_says_where_each_value_comes_from(live_factory: Any) -> None:
    live = live_factory(OPENAI_MODEL="env-model", OPENAI_API_KEY=API_KEY)
    before = live.api("GET", "/api/ai/config").json()
    assert before["model"] == "env-model"
    assert before["sources"]["model"] == "environment"
    assert before["sources"]["api_key"] == "environment"
    assert before["sources"]["temperature"] == "default"
    after = live.api("POST", "/api/ai/config", json={"temperature": 1.5}).json()
    assert after["temperature"] == 1.5
    assert after["model"] == "env-model"  # the save keeps what the environment gave
    assert set(after["sources"].values()) == {"stored"}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"model": ""}, "model"),
        ({"target_number": "555-1234"}, "target_number"),
        ({"history_limit": 0}, "history_limit"),
        ({"max_segments": 11}, "max_segments"),
        ({"base_url": "ftp://models"}, "base_url"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_ai_config_bad_input_names_the_field(
    live: Live, payload: dict[str, Any], field: str
) -> None:
    answer = live.api("POST", "/api/ai/config", json=payload)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == field
    with live.db.read() as session:
        assert session.get(AIConfig, 1) is None


def test_ai_test_returns_the_answer_and_sends_nothing(live: Live, fake_openai: FakeOpenAI) -> None:
    live.api("POST", "/api/ai/config", json={"api_key": API_KEY, "base_url": fake_openai.base_url})
    answer = live.api("POST", "/api/ai/test", json={"message": "ping"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["answer"] == "AI: ping"
    assert sandbox_sends(live) == []


def test_ai_test_without_a_key_is_a_clear_400(live: Live) -> None:
    answer = live.api("POST", "/api/ai/test", json={})
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "api_key"
    assert "no OpenAI API key" in answer.json()["error"]["message"]


def test_ai_test_with_a_rejected_key(live: Live, fake_openai: FakeOpenAI) -> None:
    live.api(
        "POST",
        "/api/ai/config",
        json={"api_key": "sk-wrong-key-000000", "base_url": fake_openai.base_url},
    )
    answer = live.api("POST", "/api/ai/test", json={})
    assert answer.status_code == 502
    assert "rejected" in answer.json()["error"]["message"]
    assert "sk-wrong" not in answer.text


def test_ai_test_time_out(live_factory: Any, fake_openai: FakeOpenAI) -> None:
    live = live_factory(AI_TIMEOUT_SECONDS="0.3")
    fake_openai.delay = 1.0
    live.api("POST", "/api/ai/config", json={"api_key": API_KEY, "base_url": fake_openai.base_url})
    answer = live.api("POST", "/api/ai/test", json={})
    assert answer.status_code == 502
    assert "did not answer within 0.3 s" in answer.json()["error"]["message"]


def test_ai_test_unreachable_server(live: Live) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}/v1"
    live.api("POST", "/api/ai/config", json={"api_key": API_KEY, "base_url": base})
    answer = live.api("POST", "/api/ai/test", json={})
    assert answer.status_code == 502
    assert answer.json()["error"]["message"] == f"cannot reach {base}"


def test_read_only_token_cannot_change_configs(live: Live) -> None:
    from twilio_chat.accounts.users import create_token

    _row, token = create_token(live.db, "admin", "ro", ("read",))
    assert live.api("GET", "/api/ai/config", token=token).status_code == 200
    answer = live.api("POST", "/api/ai/config", token=token, json={"enabled": True})
    assert answer.status_code == 403


@pytest.mark.parametrize("env_enabled", [False, True])
@pytest.mark.parametrize(
    "row", [None, (False, False), (False, True), (True, False), (True, True)], ids=str
)
def test_the_reply_jobs_ai_switch_agrees_with_the_whole_ai_config(
    db_path: Any, env_enabled: bool, row: tuple[bool, bool] | None
) -> None:
    # A reply job reads only the stored row's (saved, enabled) and asks ai_enabled; the panel
    # and the API read the whole config through get_ai. Both must say the same.
    from support import make_settings

    from twilio_chat.db.engine import Database
    from twilio_chat.replies.config import ai_enabled, get_ai

    settings = make_settings(db_path, AI_ENABLED=str(env_enabled).lower())
    db = Database(settings.sqlalchemy_url)
    try:
        with db.session() as session:
            if row is not None:
                saved, enabled = row
                session.add(
                    AIConfig(
                        id=1,
                        saved=saved,
                        enabled=enabled,
                        model="m",
                        temperature=0.5,
                        system_prompt="p",
                    )
                )
        with db.read() as session:
            whole = get_ai(session, settings).enabled
        flags = (None, None) if row is None else row
        assert ai_enabled(*flags, settings) is whole
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"api_key": "sk-zażółć-gęślą-jaźń"}, "api_key"),
        ({"api_key": "sk-with space"}, "api_key"),
        ({"api_key": "sk-line\nbreak"}, "api_key"),
        ({"base_url": "http://[::1"}, "base_url"),
        ({"base_url": "http://"}, "base_url"),
        ({"base_url": "https://exa mple.com/v1"}, "base_url"),
    ],
)
def test_ai_config_refuses_a_key_or_base_url_the_sdk_cannot_use(
    live: Live, payload: dict[str, Any], field: str
) -> None:
    answer = live.api("POST", "/api/ai/config", json=payload)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field
    with live.db.read() as session:
        assert session.get(AIConfig, 1) is None


def test_ai_test_with_an_unusable_key_from_the_environment_is_a_400(live_factory: Any) -> None:
    live = live_factory(OPENAI_API_KEY="sk-zażółć")
    answer = live.api("POST", "/api/ai/test", json={})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "api_key"
    assert "zażółć" not in answer.text


def test_ai_test_with_an_unusable_stored_base_url_is_a_400(live: Live) -> None:
    # Saved before the config refused such values: the test answers 400, not 500.
    live.api("POST", "/api/ai/config", json={"api_key": API_KEY})
    with live.db.session() as session:
        row = session.get(AIConfig, 1)
        assert row is not None
        row.base_url = "http://[::1"
    answer = live.api("POST", "/api/ai/test", json={})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "base_url"


def test_ai_test_errors_are_in_polish(live: Live) -> None:
    answer = live.api("POST", "/api/ai/test", json={}, headers={"Accept-Language": "pl"})
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "api_key"
    assert answer.json()["error"]["message"] == (
        "nie ustawiono klucza API OpenAI (pole 'api_key' konfiguracji AI lub OPENAI_API_KEY)"
    )
