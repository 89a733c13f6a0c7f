"""The panel's server side: security headers, cookies, languages, live updates, media proxy."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import requests
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from sqlalchemy import select
from support import PHONE, Live, logged_in
from werkzeug.datastructures import Headers

from twilio_chat.db.models import Contact
from twilio_chat.web.live import stop_long_polls
from twilio_chat.web.security import CSP, HEADERS, add_missing

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "src/twilio_chat/web/translations/pl/LC_MESSAGES"


def csrf_of(session: requests.Session, live: Live) -> str:
    """Read the CSRF token the panel pages carry."""
    page = session.get(live.url + "/", timeout=10).text
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert found
    return found.group(1)


def test_security_headers_on_pages_and_api(live: Live) -> None:
    for answer in (
        requests.get(live.url + "/login", timeout=10),
        live.api("GET", "/api/messages"),
    ):
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "Strict-Transport-Security" not in answer.headers  # only in production


def test_a_view_keeps_its_own_value_of_a_security_header() -> None:
    headers = Headers([("Content-Type", "text/html"), ("x-frame-options", "SAMEORIGIN")])
    add_missing(headers, HEADERS)
    assert headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]  # not replaced, not doubled
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert len(headers) == 1 + len(HEADERS)


def test_production_adds_hsts_and_secure_cookies(live_factory: object) -> None:
    live = live_factory(APP_ENV="production")  # type: ignore[operator]
    answer = requests.get(live.url + "/login", timeout=10)
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
    cookie = answer.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_pages_have_no_inline_scripts(live: Live) -> None:
    session = logged_in(live)
    for path in ("/", "/conversations", "/automation", "/simulator", "/login"):
        page = session.get(live.url + path, timeout=10)
        assert page.status_code == 200, path
        for tag in re.findall(r"<script[^>]*>", page.text):
            assert "src=" in tag, f"inline script on {path}"
        assert " on" + "click=" not in page.text


def test_every_input_has_a_label(live: Live) -> None:
    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "hi"})
    session = logged_in(live)
    for path in ("/", "/automation", "/simulator", f"/chat/{PHONE}", "/login"):
        page = session.get(live.url + path, timeout=10).text
        labels = set(re.findall(r'<label[^>]*for="([^"]+)"', page))
        for tag in re.findall(r"<(?:input|textarea|select)\b[^>]*>", page):
            if 'type="hidden"' in tag:
                continue
            ident = re.search(r'id="([^"]+)"', tag)
            assert ident and ident.group(1) in labels, f"{path}: {tag}"


def test_language_from_the_browser_and_from_the_switch(live: Live) -> None:
    polish = logged_in(live, lang="pl-PL,pl;q=0.9,en;q=0.5")
    assert "Automatyzacja" in polish.get(live.url + "/", timeout=10).text
    assert "Przetestuj połączenie" in polish.get(live.url + "/automation", timeout=10).text
    polish.get(live.url + "/lang/en?next=/automation", timeout=10)
    assert "Test connection" in polish.get(live.url + "/automation", timeout=10).text


def test_api_errors_in_the_users_language(live: Live) -> None:
    answer = live.api(
        "POST",
        "/api/send-message",
        json={"to": "+1555", "body": "x"},
        headers={"Accept-Language": "pl"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "'+1555' nie jest możliwym numerem telefonu w formacie E.164, np. +48601234567."
    )
    english = live.api("POST", "/api/send-message", json={"to": "+1555", "body": "x"})
    assert "is not a possible phone number" in english.json()["error"]["message"]


def test_polish_catalog_is_complete_and_compiled(tmp_path: Path) -> None:
    with (CATALOG / "messages.po").open("rb") as fh:
        po = read_po(fh)
    with (CATALOG / "messages.mo").open("rb") as fh:
        mo = read_mo(fh)
    untranslated = [m.id for m in po if m.id and not m.string]
    assert untranslated == []
    assert {m.id: m.string for m in po if m.id} == {m.id: m.string for m in mo if m.id}
    # Every text the code and templates mark for translation is in the catalog.
    pot_file = tmp_path / "messages.pot"
    subprocess.run(
        [
            *(sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg"),
            *("-k", "N_", "--no-location", "--omit-header", "-o", str(pot_file), "src"),
        ],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    with pot_file.open("rb") as fh:
        wanted = {m.id for m in read_po(fh) if m.id}
    assert wanted <= {m.id for m in po if m.id}


def test_session_json_calls_need_the_csrf_token(live: Live) -> None:
    session = logged_in(live)
    url = live.url + "/api/auto-reply/config"
    payload = {"enabled": True, "message": "hi"}
    assert session.post(url, json=payload, timeout=10).status_code == 403
    token = csrf_of(session, live)
    answer = session.post(url, json=payload, headers={"X-CSRF-Token": token}, timeout=10)
    assert answer.status_code == 200


def test_live_events_answer_new_and_changed_messages(live: Live) -> None:
    start = live.api("GET", "/api/events").json()
    assert start["messages"] == []
    idle = live.api("GET", "/api/events", params={"cursor": start["cursor"], "timeout": 0})
    assert idle.json() == {"cursor": start["cursor"], "messages": []}
    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "ping"})
    answer = live.api("GET", "/api/events", params={"cursor": start["cursor"], "timeout": 5})
    data = answer.json()
    assert [m["body"] for m in data["messages"]] == ["ping"]
    assert data["cursor"] != start["cursor"]
    bad = live.api("GET", "/api/events", params={"cursor": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "cursor"


def test_a_waiting_long_poll_is_answered_when_the_server_stops(live: Live) -> None:
    """A stopping server answers its long polls at once: none keeps a thread and its database
    connections busy for up to 30 s."""
    start = live.api("GET", "/api/events").json()
    answers: list[requests.Response] = []
    params = {"cursor": start["cursor"], "timeout": 30}
    poll = threading.Thread(
        target=lambda: answers.append(live.api("GET", "/api/events", params=params))
    )
    poll.start()
    poll.join(1.0)
    assert poll.is_alive()  # waiting: nothing has changed
    stop_long_polls(live.app)
    poll.join(5.0)
    assert not poll.is_alive()
    assert answers[0].status_code == 200
    assert answers[0].json() == {"cursor": start["cursor"], "messages": []}  # nothing missed
    later = live.api("GET", "/api/events", params=params)  # one asked afterwards: at once too
    assert later.json() == {"cursor": start["cursor"], "messages": []}


def test_opening_a_chat_marks_it_read(live: Live) -> None:
    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "unread"})
    session = logged_in(live)
    assert session.get(f"{live.url}/chat/{PHONE}", timeout=10).status_code == 200
    with live.db.read() as s:
        contact = s.scalars(select(Contact).where(Contact.number == PHONE)).one()
    assert contact.unread_count == 0
    assert session.get(f"{live.url}/chat/not-a-number", timeout=10).status_code == 404


def test_media_proxy_fetches_only_twilio_media(live: Live) -> None:
    session = logged_in(live)
    sample = f"{live.settings.api_base_url}/media/sample.png"
    ok = session.get(live.url + "/media", params={"url": sample}, timeout=10)
    assert ok.status_code == 200
    assert ok.headers["Content-Type"] == "image/png"
    assert ok.content.startswith(b"\x89PNG")
    for url in (
        "https://example.com/cat.png",
        "http://api.twilio.com/2010-04-01/x.png",  # not https
        "https://api.twilio.com.evil.example/x.png",
        f"{live.url}/api/messages",  # our own API, not the sandbox's media
    ):
        refused = session.get(live.url + "/media", params={"url": url}, timeout=10)
        assert refused.status_code == 403, url
    # Something that is not an image, audio, video or PDF is refused too.
    account = live.settings.account_sid
    listing = f"{live.settings.api_base_url}/2010-04-01/Accounts/{account}/Messages.json"
    refused = session.get(live.url + "/media", params={"url": listing}, timeout=10)
    assert refused.status_code == 415
    # And the proxy itself needs a login.
    anonymous = requests.get(
        live.url + "/media", params={"url": sample}, allow_redirects=False, timeout=10
    )
    assert anonymous.status_code in (302, 401)


def test_dashboard_filters(live: Live) -> None:
    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "apples and pears"})
    live.api("POST", "/api/sandbox/simulate", json={"from": "+15557770001", "body": "bananas"})
    session = logged_in(live)
    page = session.get(live.url + "/", params={"text": "pears"}, timeout=10).text
    assert "apples and pears" in page and "bananas" not in page
    page = session.get(live.url + "/", params={"number": "+15557770001"}, timeout=10).text
    assert "bananas" in page and "apples" not in page
    page = session.get(live.url + "/", params={"direction": "outbound"}, timeout=10).text
    assert "bananas" not in page
