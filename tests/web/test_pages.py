"""Panel pages around the inbox: a thread with a new number, starting one, and error pages."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from support import Live, logged_in

from twilio_chat.settings import SettingsError, build_settings, to_e164


def test_a_number_never_texted_opens_an_empty_thread(live: Live) -> None:
    panel = logged_in(live)
    page = panel.get(f"{live.url}/chat/+15557770000", timeout=10)
    assert page.status_code == 200
    assert "No messages yet" in page.text
    assert 'id="pause-switch"' not in page.text  # nothing to pause before a conversation
    assert 'name="to" value="+15557770000"' in page.text
    sent = live.api("POST", "/api/send-message", json={"to": "+15557770000", "body": "Hi!"})
    assert sent.status_code in (200, 201), sent.text
    page = panel.get(f"{live.url}/chat/+15557770000", timeout=10)
    assert "Hi!" in page.text and 'id="pause-switch"' in page.text


def test_new_message_takes_a_national_number_in_the_default_country(live_factory: Any) -> None:
    live = live_factory(DEFAULT_COUNTRY="PL")
    panel = logged_in(live)
    for typed in ("601 234 567", "+48 601-234-567", "0048601234567"):
        answer = panel.get(
            f"{live.url}/chat/new", params={"number": typed}, allow_redirects=False, timeout=10
        )
        assert answer.status_code == 302, typed
        assert answer.headers["Location"].endswith("/chat/+48601234567")


def test_new_message_with_no_country_or_a_bad_number_says_why(live: Live) -> None:
    panel = logged_in(live)
    for typed in ("601 234 567", "12", "call me"):
        answer = panel.get(f"{live.url}/chat/new", params={"number": typed}, timeout=10)
        assert answer.status_code == 400
        assert "is not a phone number" in answer.text and "country code" in answer.text
        assert 'aria-invalid="true"' in answer.text


def test_to_e164_reads_what_people_type() -> None:
    assert to_e164("(202) 555-0143", "US") == "+12025550143"
    assert to_e164("+1 202 555 0143", None) == "+12025550143"
    assert to_e164("601234567", None) is None
    assert to_e164("+48 12", "PL") is None


def test_default_country_is_a_country_code() -> None:
    assert build_settings({"DEFAULT_COUNTRY": "pl"}).default_country == "PL"
    with pytest.raises(SettingsError, match="DEFAULT_COUNTRY"):
        build_settings({"DEFAULT_COUNTRY": "Poland"})


def test_an_unknown_page_is_a_styled_translated_404(live: Live) -> None:
    panel = logged_in(live)
    page = panel.get(f"{live.url}/no-such-page", timeout=10)
    assert page.status_code == 404 and page.headers["Content-Type"].startswith("text/html")
    assert "There is no such page" in page.text and 'class="navbar' in page.text
    polish = logged_in(live, lang="pl")
    page = polish.get(f"{live.url}/no-such-page", timeout=10)
    assert page.status_code == 404 and "Nie ma takiej strony" in page.text
    api = live.api("GET", "/api/no-such-route")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_a_logged_out_visitor_is_sent_to_the_login_whatever_the_page(live: Live) -> None:
    for path in ("/no-such-page", "/chat/+15557770000", "/chat/new?number=1"):
        page = requests.get(f"{live.url}{path}", allow_redirects=False, timeout=10)
        assert page.status_code == 302 and "/login" in page.headers["Location"], path


def test_the_tab_title_counts_the_conversations_with_unread_texts(live: Live) -> None:
    panel = logged_in(live)
    assert "<title>Conversations" in panel.get(f"{live.url}/conversations", timeout=10).text
    cursor = re.search(r'data-cursor="([^"]+)"', panel.get(f"{live.url}/", timeout=10).text)
    assert cursor is not None
    for sender in ("+15557770001", "+15557770002"):
        live.api("POST", "/api/sandbox/simulate", json={"from": sender, "body": "hi"})
    page = panel.get(f"{live.url}/conversations", timeout=10).text
    assert "<title>(2) Conversations" in page
    poll = panel.get(
        f"{live.url}/partials/conversations", params={"cursor": cursor.group(1)}, timeout=10
    )
    assert poll.status_code == 200 and poll.headers["X-Unread"] == "2"
    panel.get(f"{live.url}/chat/+15557770001", timeout=10)  # opening a thread reads it
    assert "<title>(1) " in panel.get(f"{live.url}/conversations", timeout=10).text


def test_the_audit_page_says_who_changed_what_old_to_new_in_the_users_language(
    live: Live,
) -> None:
    live.api("POST", "/api/auto-reply/config", json={"message": "Hello"})
    live.api("POST", "/api/auto-reply/config", json={"message": "Back at 9", "window_hours": 2})
    live.api("POST", "/api/ai/config", json={"api_key": "sk-secret-key-123456", "model": "m2"})
    live.api("POST", "/api/automation", json={"mode": "off"})
    page = logged_in(live).get(f"{live.url}/audit", timeout=10).text
    assert "Changed the auto-reply" in page
    assert "Message: Hello → Back at 9" in page
    assert "Once per conversation within (hours): 12 → 2" in page
    assert "Chose who answers" in page and "Echo → Off" in page
    assert "API key: ••• → •••" in page and "sk-secret" not in page
    assert "Model: gpt-4o-mini → m2" in page
    polish = logged_in(live, lang="pl").get(f"{live.url}/audit", timeout=10).text
    assert "Zmieniono auto-odpowiedź" in polish and "Wiadomość: Hello → Back at 9" in polish
