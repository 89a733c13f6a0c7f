"""Hardening: login throttling, session time-outs, token scopes, and the audit log."""

from __future__ import annotations

import re
import time
from typing import Any

import requests
from support import PHONE, Live, post_inbound
from support.fake_openai import API_KEY

from twilio_chat.accounts.users import create_token, create_user


def _login(
    live: Live, password: str, username: str = "admin", ip: str | None = None
) -> requests.Response:
    session = requests.Session()
    headers = {"X-Forwarded-For": ip} if ip else {}
    page = session.get(live.url + "/login", headers=headers, timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    return session.post(
        live.url + "/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
        headers=headers,
        allow_redirects=False,
        timeout=10,
    )


def test_five_failures_from_one_address_lock_it_out_for_a_while(live: Live) -> None:
    for _ in range(5):
        assert _login(live, "wrong").status_code == 401
    blocked = _login(live, "admin-password")  # even the right password now waits
    assert blocked.status_code == 429
    assert "Too many failed logins. Try again in 5 minutes." in blocked.text
    # Twilio's webhooks are never throttled.
    assert post_inbound(live, PHONE, "still here").status_code == 200


def test_ten_failures_on_one_account_lock_it_from_every_address(live_factory: Any) -> None:
    live = live_factory(TRUSTED_PROXY_COUNT="1")
    for i in range(10):
        assert _login(live, "wrong", ip=f"203.0.113.{i}").status_code == 401
    assert _login(live, "admin-password", ip="198.51.100.7").status_code == 429
    create_user(live.db, "other", "other-password")
    assert _login(live, "other-password", "other", ip="198.51.100.7").status_code == 302


def test_sessions_end_after_30_idle_minutes_or_8_hours(live: Live) -> None:
    client = live.app.test_client()
    with client.session_transaction() as session:
        session["user_id"] = 1
        session["login_at"] = session["seen_at"] = int(time.time())
    assert client.get("/").status_code == 200
    with client.session_transaction() as session:
        session["seen_at"] = int(time.time()) - 31 * 60
    assert client.get("/").status_code == 302
    with client.session_transaction() as session:
        session["user_id"] = 1
        session["login_at"] = int(time.time()) - 8 * 3600 - 1
        session["seen_at"] = int(time.time())
    assert client.get("/").status_code == 302
    with client.session_transaction() as session:
        session["user_id"] = 1  # a session without its time stamps is not trusted
    assert client.get("/").status_code == 302


def test_scopes(live: Live) -> None:
    _r, reader = create_token(live.db, "admin", "r", ("read",))
    _s, sender = create_token(live.db, "admin", "s", ("send",))
    assert live.api("GET", "/api/messages", token=reader).status_code == 200
    assert live.api("POST", "/api/send-message", token=reader, json={}).status_code == 403
    assert live.api("GET", "/api/messages", token=sender).status_code == 403
    send = live.api("POST", "/api/send-message", token=sender, json={"to": PHONE, "body": "x"})
    assert send.status_code == 201
    assert live.api("GET", "/api/audit", token=sender).status_code == 403


def test_the_audit_log_records_who_did_what(live: Live) -> None:
    assert _login(live, "wrong").status_code == 401
    assert _login(live, "admin-password").status_code == 302
    sent = live.api("POST", "/api/send-message", json={"to": PHONE, "body": "audited"}).json()
    sid = sent["message"]["sid"]
    live.api("POST", "/api/ai/config", json={"api_key": API_KEY, "model": "m"})
    live.api("POST", "/api/auto-reply/config", json={"enabled": False, "message": "hi"})
    time.sleep(0.2)  # the sandbox's callbacks settle before the delete
    live.api("POST", f"/api/messages/{sid}/redact")
    live.api("DELETE", f"/api/messages/{sid}")
    answer = live.api("GET", "/api/audit")
    assert answer.status_code == 200
    events = answer.json()["events"]
    actions = [(e["actor"], e["action"], e["target"]) for e in reversed(events)]
    assert actions == [
        ("admin", "login_failed", "admin"),
        ("admin", "login", "admin"),
        ("admin", "send", PHONE),
        ("admin", "config_ai", None),
        ("admin", "config_auto_reply", None),
        ("admin", "redact", sid),
        ("admin", "delete", sid),
    ]
    assert API_KEY not in answer.text  # what changed, old -> new; a key never
    assert events[3]["detail"] == {
        "changes": {"model": ["gpt-4o-mini", "m"], "api_key": ["•••", "•••"]}
    }
    assert events[2]["detail"] == {"changes": {"message": ["", "hi"]}}
    assert all(e["ip"] == "127.0.0.1" for e in events)


def test_only_admins_read_the_audit_log(live: Live) -> None:
    create_user(live.db, "clerk", "clerk-password")
    _row, clerk_token = create_token(live.db, "clerk", "all scopes")
    assert live.api("GET", "/api/audit", token=clerk_token).status_code == 403
    clerk = _login(live, "clerk-password", "clerk")
    assert clerk.status_code == 302
    session = requests.Session()
    session.cookies.update(clerk.cookies)
    assert session.get(live.url + "/audit", timeout=10).status_code == 403
    admin = _login(live, "admin-password")
    session.cookies.update(admin.cookies)
    page = session.get(live.url + "/audit", timeout=10)
    assert page.status_code == 200
    assert "login" in page.text
