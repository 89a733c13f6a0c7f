"""Live updates: /api/events never lets waiting polls take the threads webhooks need.

The quick tests run the app on the test server; the slow one runs gunicorn with the production
config (gunicorn.conf.py) and holds 48 panel tabs polling it while Twilio's webhooks arrive.
"""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, template_rendered
from jinja2 import Template
from support import (
    CLI,
    PHONE,
    Live,
    child_env,
    free_port,
    logged_in,
    make_settings,
    numbered_text,
    query,
    wait_for,
)
from twilio.request_validator import RequestValidator

from twilio_chat import messaging
from twilio_chat.inbox.conversations import CHANGES_LIMIT
from twilio_chat.sandbox.state import inbound_form
from twilio_chat.settings import SANDBOX_ACCOUNT_SID, SANDBOX_DEFAULT_FROM
from twilio_chat.web import live as live_module
from twilio_chat.web.live import MAX_WAITING

ROOT = Path(__file__).resolve().parents[2]


def _poll(live: Live, cursor: str, timeout: int) -> requests.Response:
    return live.api("GET", "/api/events", params={"cursor": cursor, "timeout": timeout})


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run `call` in a thread; its result lands in the returned list."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(call()), daemon=True)
    thread.start()
    return thread, results


def test_long_polls_beyond_the_few_that_may_wait_are_answered_at_once(live: Live) -> None:
    cursor = live.api("GET", "/api/events").json()["cursor"]
    waiting = [_in_thread(lambda: _poll(live, cursor, 30)) for _ in range(MAX_WAITING)]
    time.sleep(1.0)
    assert all(thread.is_alive() for thread, _ in waiting)  # nothing new: they wait

    started = time.monotonic()
    extra = _poll(live, cursor, 30)  # every waiting place is taken: answered at once
    assert time.monotonic() - started < 2.0
    assert extra.status_code == 200
    assert extra.json() == {"cursor": cursor, "messages": []}
    short = _poll(live, cursor, 0)
    assert short.json() == {"cursor": cursor, "messages": []}

    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "news"})
    for thread, answers in waiting:  # the waiting ones answer the news
        thread.join(5.0)
        assert not thread.is_alive()
        assert [m["body"] for m in answers[0].json()["messages"]] == ["news"]
    # Their places are free again: a long poll waits.
    new_cursor = waiting[0][1][0].json()["cursor"]
    thread, answers = _in_thread(lambda: _poll(live, new_cursor, 30))
    thread.join(1.0)
    assert thread.is_alive()
    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "more"})
    thread.join(5.0)
    assert [m["body"] for m in answers[0].json()["messages"]] == ["more"]


def test_a_poll_that_finds_news_answers_it_even_when_no_place_to_wait_is_free(live: Live) -> None:
    cursor = live.api("GET", "/api/events").json()["cursor"]
    waiting = [_in_thread(lambda: _poll(live, cursor, 2)) for _ in range(MAX_WAITING)]
    time.sleep(0.5)
    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "first"})
    answer = _poll(live, cursor, 30)
    assert [m["body"] for m in answer.json()["messages"]] == ["first"]
    for thread, _ in waiting:
        thread.join(5.0)


def test_the_live_parts_of_pages_hold_no_form_to_type_in(live: Live) -> None:
    """A refresh replaces only the live parts: no input may be inside one, or typing is lost."""
    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "hi"})
    session = logged_in(live)
    pages = {
        "/": "/partials/dashboard",
        "/?text=hi&number=%2B15551230001": "/partials/dashboard?number=%2B15551230001&text=hi",
        "/conversations": "/partials/conversations",
        f"/chat/{PHONE}": f"/partials/chat/{PHONE}",
        "/simulator": f"/partials/simulator/{PHONE}",
    }
    for page_path, partial_path in pages.items():
        page = session.get(live.url + page_path, timeout=10).text
        assert f'data-live="{partial_path}"'.replace("&", "&amp;") in page, page_path
        partial = session.get(live.url + partial_path, timeout=10)
        assert partial.status_code == 200, partial_path
        assert re.search(r"<(form|input|textarea|select|button)\b", partial.text) is None
        names = re.findall(r'data-live-target(?:="([^"]*)")?', page)
        assert names, page_path
        for name in filter(None, names):  # a named target is filled from the part of its name
            assert f'data-live-part="{name}"' in partial.text, (page_path, name)
    dashboard = session.get(live.url + "/?text=hi", timeout=10).text
    assert re.search(r'<input[^>]*id="f-text"[^>]*value="hi"', dashboard)  # the filter form


def _live_part(session: requests.Session, live: Live, path: str, cursor: str | None) -> Any:
    params = {"cursor": cursor} if cursor is not None else {}
    return session.get(live.url + path, params=params, timeout=10)


def test_a_pages_poll_is_204_until_something_it_shows_is_new(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "RENDER_REUSE", 0.0)  # no render shared for a moment
    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "hello"})
    live.run_jobs()
    session = logged_in(live)
    first = _live_part(session, live, "/partials/dashboard", None)
    assert first.status_code == 200 and "hello" in first.text
    assert first.headers["Cache-Control"] == "no-store"
    cursor = first.headers["X-Live-Cursor"]
    idle = _live_part(session, live, "/partials/dashboard", cursor)
    assert (idle.status_code, idle.text, idle.headers["X-Live-Cursor"]) == (204, "", cursor)

    chat = f"/partials/chat/{PHONE}"
    assert _live_part(session, live, chat, cursor).status_code == 204
    live.api("POST", "/api/sandbox/simulate", json={"from": "+15557770003", "body": "other"})
    news = _live_part(session, live, "/partials/dashboard", cursor)
    assert news.status_code == 200 and "other" in news.text
    assert news.headers["X-Live-Cursor"] != cursor
    conversation_list = _live_part(session, live, "/partials/conversations", cursor)
    assert conversation_list.status_code == 200 and "+15557770003" in conversation_list.text
    # Another number's text is not news to this chat: it asks again with the newer cursor.
    untouched = _live_part(session, live, chat, cursor)
    assert untouched.status_code == 204
    assert untouched.headers["X-Live-Cursor"] == news.headers["X-Live-Cursor"]
    cursor = untouched.headers["X-Live-Cursor"]

    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "mine"})
    own = _live_part(session, live, chat, cursor)
    assert own.status_code == 200 and "mine" in own.text
    cursor = own.headers["X-Live-Cursor"]
    live.run_jobs()  # the reply: a new message of this chat
    reply = wait_for(lambda: _delivered_reply(live))  # and its callbacks, all in
    replied = _live_part(session, live, chat, cursor)
    assert replied.status_code == 200 and "Echo: mine" in replied.text
    cursor = replied.headers["X-Live-Cursor"]
    assert _live_part(session, live, chat, cursor).status_code == 204
    # A status callback about one of its messages is news to the chat too.
    url = live.url + "/twilio/status"
    form = {
        "MessageSid": reply,
        "MessageStatus": "read",
        "AccountSid": live.settings.account_sid,
        "To": PHONE,
    }
    signature = RequestValidator(live.settings.auth_token).compute_signature(url, form)
    posted = requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)
    assert posted.status_code == 200
    assert _live_part(session, live, chat, cursor).status_code == 200


def _delivered_reply(live: Live) -> str | None:
    """The newest message's sid once it is an outbound one marked delivered."""
    newest = live.api("GET", "/api/messages", params={"limit": 1}).json()["messages"][0]
    ok = newest["direction"] == "outbound" and newest["status"] == "delivered"
    return str(newest["sid"]) if ok else None


def test_a_poll_without_a_session_is_sent_to_the_login_form(live: Live) -> None:
    answer = requests.get(
        live.url + "/partials/dashboard", params={"cursor": "0.0"}, allow_redirects=False
    )
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login")


def test_tabs_that_show_the_same_list_share_its_render(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "RENDER_REUSE", 30.0)  # a slow machine's polls all share
    renders: list[str] = []

    def count(_app: Flask, template: Template, **_: Any) -> None:
        renders.append(str(template.name))

    tabs = [logged_in(live) for _ in range(4)]
    polish = logged_in(live, lang="pl")
    cursor = live.api("GET", "/api/events").json()["cursor"]  # as of the pages' first load
    live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "for everyone"})
    with template_rendered.connected_to(count, live.app):
        answers = [_live_part(tab, live, "/partials/dashboard", cursor) for tab in tabs]
        filtered = _live_part(tabs[0], live, "/partials/dashboard?direction=inbound", cursor)
        in_polish = _live_part(polish, live, "/partials/dashboard", cursor)
        chats = [_live_part(tab, live, f"/partials/chat/{PHONE}", cursor) for tab in tabs[:2]]
    assert {(a.status_code, a.text, a.headers["X-Live-Cursor"]) for a in answers} == {
        (200, answers[0].text, answers[0].headers["X-Live-Cursor"])
    }
    assert "for everyone" in answers[0].text
    assert "for everyone" in filtered.text and "Statystyki" in in_polish.text
    assert all(chat.status_code == 200 and "for everyone" in chat.text for chat in chats)
    # One render for the four tabs, one per other filter and language; each chat its own.
    assert renders.count("partials/dashboard_live.html") == 3
    assert renders.count("partials/chat_live.html") == 2
    # A tab that already shows the shared render is told nothing is new.
    again = _live_part(tabs[1], live, "/partials/dashboard", answers[1].headers["X-Live-Cursor"])
    assert again.status_code == 204


def test_a_client_far_behind_gets_every_change_over_several_answers(live: Live) -> None:
    cursor = live.api("GET", "/api/events").json()["cursor"]
    texts = [numbered_text(n, sender=f"+1555800{n % 7:04d}") for n in range(CHANGES_LIMIT + 20)]
    with live.db.session() as session:
        for text in texts:
            messaging.store_inbound(session, live.settings, text)
    seen: list[str] = []
    for _ in range(3):
        answer = _poll(live, cursor, 0).json()
        seen += [m["sid"] for m in answer["messages"]]
        cursor = answer["cursor"]
    assert seen == [t.sid for t in texts]  # each once, in order, none skipped


# gunicorn with the production config, 48 tabs open ------------------------------------------

PEOPLE = 12  # each with four tabs: the dashboard, the conversation list, two chats
API_LONG_POLLERS = 8  # more than every process's waiting places together
# Seconds. The targets are 1 s for both (the benchmark, bench/live.py, measures them);
# these leave a busy CI machine room and still catch what users would feel: a webhook that
# waits for a request thread held by a waiting poll waits up to 20 s (Twilio gives up at 15),
# and a text that no poll brings never shows.
WEBHOOK_LIMIT = 3.0
NEWS_LIMIT = 3.0  # from a webhook's 200 to every open tab that shows the text showing it


@contextmanager
def _gunicorn(db_path: Path, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Serve the app with gunicorn.conf.py in production mode; yield its URL and environment."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**child_env(db_path, port), "APP_ENV": "production", "PUBLIC_BASE_URL": base}
    run = functools.partial(subprocess.run, env=env, cwd=tmp_path, check=True, capture_output=True)
    run([str(CLI), "prepare"])
    argv = [str(CLI.parent / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py")]
    with (tmp_path / "gunicorn.log").open("wb") as log:
        server = subprocess.Popen(
            [*argv, "twilio_chat.wsgi:app"], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
        try:
            wait_for(lambda: _answers(base + "/healthz"), 30)
            yield base, env
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


def _log_in(base: str) -> str:
    """Log in as the admin; return the session cookie (Secure in production: sent by hand)."""
    session = requests.Session()
    page = session.get(base + "/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    answer = session.post(
        base + "/login",
        data={"username": "admin", "password": "admin-password", "csrf_token": token.group(1)},
        headers={"Cookie": f"session={page.cookies['session']}"},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 302, answer.text
    return str(answer.cookies["session"])


def _tab(base: str, cookie: str, path: str, stop: threading.Event, renders: list[Any]) -> None:
    """Poll a page's live part as app.js does; note each render: (when, newest id covered)."""
    session = requests.Session()
    session.headers["Cookie"] = f"session={cookie}"
    cursor = ""
    while not stop.is_set():
        params = {"cursor": cursor} if cursor else None
        answer = session.get(base + path, params=params, allow_redirects=False, timeout=10)
        assert answer.status_code in (200, 204), (path, answer.status_code)
        cursor = answer.headers["X-Live-Cursor"]
        if answer.status_code == 200:
            renders.append((time.time(), int(cursor.split(".")[0])))
        stop.wait(0.5)


def _long_poll(base: str, token: str, stop: threading.Event) -> None:
    """Long-poll /api/events as a plain API client does, asking again at once."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    cursor = session.get(base + "/api/events", timeout=10).json()["cursor"]
    while not stop.is_set():
        try:
            answer = session.get(
                base + "/api/events", params={"cursor": cursor, "timeout": 20}, timeout=30
            )
        except requests.ConnectionError:
            assert stop.is_set()  # the server stopped: the test is over
            return
        assert answer.status_code == 200, answer.text
        cursor = answer.json()["cursor"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_under_gunicorn_48_open_tabs_and_long_polls_leave_webhooks_fast_and_news_comes_fast(
    db_path: Path, tmp_path: Path
) -> None:
    with _gunicorn(db_path, tmp_path) as (base, env):
        token = subprocess.run(
            [str(CLI), "create-token", "--user", "admin"],
            env=env,
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        chats = [f"+1555600{n:04d}" for n in range(2 * PEOPLE)]
        url = base + "/twilio/inbound"
        validator = RequestValidator(make_settings(db_path).auth_token)

        def text(sender: str, body: str) -> tuple[str, float, float]:
            """Post a signed inbound webhook; return its sid, when it was answered, how long."""
            sid = "SM" + uuid.uuid4().hex
            form = inbound_form(SANDBOX_ACCOUNT_SID, sid, sender, SANDBOX_DEFAULT_FROM, body, [])
            signature = validator.compute_signature(url, form)
            started = time.monotonic()
            answer = requests.post(
                url, data=form, headers={"X-Twilio-Signature": signature}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            return sid, time.time(), time.monotonic() - started

        for number in chats:  # every chat tab has its conversation
            text(number, "hello")
        tabs: list[tuple[str | None, list[Any]]] = []
        stop = threading.Event()
        threads = []
        for n in range(PEOPLE):
            cookie = _log_in(base)
            pages = [
                ("/partials/dashboard", None),
                ("/partials/conversations", None),
                *((f"/partials/chat/{chats[2 * n + i]}", chats[2 * n + i]) for i in range(2)),
            ]
            for path, number in pages:
                renders: list[Any] = []
                tabs.append((number, renders))
                threads.append(
                    threading.Thread(target=_tab, args=(base, cookie, path, stop, renders))
                )
        threads += [
            threading.Thread(target=_long_poll, args=(base, token, stop))
            for _ in range(API_LONG_POLLERS)
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(3)  # every tab has loaded its page and polls; the long polls wait
            sent = []
            for i in range(60):  # ten a second, one in three to an open chat
                sender = chats[i % len(chats)] if i % 3 == 0 else f"+1555700{i:04d}"
                sent.append((sender, *text(sender, f"news {i}")))
                time.sleep(0.1)
            time.sleep(NEWS_LIMIT + 0.5)
        finally:
            stop.set()
            for thread in threads[: len(tabs)]:
                thread.join(30)
    for thread in threads:  # the stop answered the waiting long polls
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    ids = dict(query(db_path, "SELECT sid, id FROM messages WHERE direction = 'inbound'"))
    news: list[float] = []  # from a webhook's 200 to a tab's render that covers its text
    for number, renders in tabs:
        for sender, sid, answered, _took in sent:
            if number in (None, sender):  # the lists show every text, a chat its own
                covered = [at for at, newest in renders if newest >= ids[sid]]
                news.append(min(covered) - answered if covered else float("inf"))
    slowest = max(took for *_, took in sent)
    print(f"slowest webhook {slowest:.3f} s; slowest news {max(news):.3f} s of {len(news)}")
    assert slowest < WEBHOOK_LIMIT
    assert max(news) < NEWS_LIMIT
