"""Authentication: the route guard, bearer tokens, panel login and CSRF, stored secrets."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from sqlalchemy import delete, event, func, select, text
from support import SECRET, Live

from twilio_chat.accounts.users import (
    authenticate,
    create_token,
    create_user,
    ensure_admin,
    revoke_token,
    verify_token,
)
from twilio_chat.db.engine import Database
from twilio_chat.db.models import ApiToken, Message, User
from twilio_chat.sandbox import get_store
from twilio_chat.sandbox.store import SandboxFault, SandboxMessage, SandboxOptOut
from twilio_chat.settings import SANDBOX_ACCOUNT_SID
from twilio_chat.web.auth import STATIC_ENDPOINTS

PASSWORD = "admin-password"  # what conftest gives the admin
OTHER = "+15551230002"
REAL_LOOKING_SID = "AC" + "1" * 32
REAL_LOOKING_TOKEN = "x" * 32

# Every route reachable without logging in, and how each protects itself instead. A new public
# route must be added here deliberately.
PUBLIC_ENDPOINTS = {
    "static",
    "bootstrap.static",
    "i18n.switch",
    "sandbox.sample_media",
    "health.healthz",
    "health.readyz",
    "panel.login",
    "api.openapi",
    "api.docs",
    "api_docs.static",
    "webhooks.inbound",
    "webhooks.status",
    "sandbox.messages",
    "sandbox.message",
    "sandbox.simulated_inbound",
    "sandbox.faults",
    "sandbox.account",
    "sandbox.incoming_phone_numbers",
    "sandbox.messaging_service",
}
# What a public endpoint answers to a request without any credentials.
PUBLIC_ANSWERS = {
    ("static", "GET"): 200,  # the panel's CSS: no data
    ("bootstrap.static", "GET"): 404,  # no such file here; the guard did not stop it
    ("i18n.switch", "GET"): 302,  # sets a language cookie and goes back
    ("sandbox.sample_media", "GET"): 401,  # no HTTP Basic
    ("health.healthz", "GET"): 200,
    ("health.readyz", "GET"): 503,  # no worker heartbeat in this test
    ("panel.login", "GET"): 200,
    ("panel.login", "POST"): 401,  # no CSRF token, no password
    ("api.openapi", "GET"): 200,
    ("api.docs", "GET"): 200,  # the docs page: Swagger UI over the document
    ("api_docs.static", "GET"): 404,  # no such file here; the guard did not stop it
    ("webhooks.inbound", "POST"): 403,  # no X-Twilio-Signature
    ("webhooks.status", "POST"): 403,
    ("sandbox.messages", "GET"): 401,  # no HTTP Basic
    ("sandbox.messages", "POST"): 401,
    ("sandbox.message", "GET"): 401,
    ("sandbox.message", "POST"): 401,
    ("sandbox.message", "DELETE"): 401,
    ("sandbox.simulated_inbound", "POST"): 401,
    ("sandbox.faults", "POST"): 401,
    ("sandbox.account", "GET"): 401,
    ("sandbox.incoming_phone_numbers", "GET"): 401,
    ("sandbox.messaging_service", "GET"): 401,
}


# Helpers ------------------------------------------------------------------------------------


@contextmanager
def _browser() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no csrf_token input in the page"
    return match.group(1)


def _login(
    live: Live,
    browser: requests.Session,
    username: str = "admin",
    password: str = PASSWORD,
    next_: str | None = None,
) -> requests.Response:
    page = browser.get(live.url + "/login", timeout=10)
    assert page.status_code == 200
    url = live.url + "/login" + (f"?next={quote(next_, safe='')}" if next_ is not None else "")
    return browser.post(
        url,
        data={"username": username, "password": password, "csrf_token": _csrf(page.text)},
        allow_redirects=False,
        timeout=10,
    )


def _logged_in(live: Live, browser: requests.Session) -> bool:
    answer = browser.get(live.url + "/", allow_redirects=False, timeout=10)
    if answer.status_code == 302:
        assert answer.headers["Location"].startswith("/login")
        return False
    assert answer.status_code == 200, answer.text
    return True


def _message_count(live: Live) -> int:
    with live.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Message)) or 0)


def _sandbox_base(live: Live, account_sid: str | None = None) -> str:
    sid = account_sid or live.settings.account_sid
    return f"{live.url}/sandbox/twilio/2010-04-01/Accounts/{sid}"


def _fill(rule: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"no example value for <{name}> in {rule}: add one"
        return values[name]

    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", value, rule)


# The route guard ----------------------------------------------------------------------------


def test_every_route_is_protected_unless_deliberately_public(live: Live) -> None:
    examples = {
        "sid": "SM" + "0" * 32,
        "participant": "+15551230001",
        "account_sid": live.settings.account_sid,
        "filename": "app.css",
        "code": "pl",
        "number": "+15551230001",
    }
    public_seen: set[str] = set()
    checked = 0
    with _browser() as browser:
        for rule in live.app.url_map.iter_rules():
            view = live.app.view_functions[rule.endpoint]
            is_public = rule.endpoint in STATIC_ENDPOINTS or bool(
                getattr(view, "public_reason", None)
            )
            path = _fill(rule.rule, examples)
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                answer = browser.request(method, live.url + path, allow_redirects=False, timeout=10)
                where = f"{method} {rule.rule} ({rule.endpoint})"
                checked += 1
                if is_public:
                    public_seen.add(rule.endpoint)
                    assert answer.status_code == PUBLIC_ANSWERS[(rule.endpoint, method)], where
                elif path.startswith("/api/") or path == "/metrics" or method != "GET":
                    assert answer.status_code == 401, where
                    assert answer.json()["error"]["code"] == "unauthorized", where
                else:
                    assert answer.status_code == 302, where
                    assert answer.headers["Location"].startswith("/login?next="), where
    assert public_seen == PUBLIC_ENDPOINTS
    assert checked > len(PUBLIC_ENDPOINTS)  # the protected routes were walked too
    assert _message_count(live) == 0


def test_a_panel_page_redirects_to_login_and_back_after_logging_in(live: Live) -> None:
    with _browser() as browser:
        first = browser.get(live.url + "/", allow_redirects=False, timeout=10)
        assert first.status_code == 302
        login_url = live.url + first.headers["Location"]
        form = browser.get(login_url, timeout=10)
        answer = browser.post(
            login_url,
            data={"username": "admin", "password": PASSWORD, "csrf_token": _csrf(form.text)},
            allow_redirects=False,
            timeout=10,
        )
        assert answer.status_code == 302
        assert answer.headers["Location"] == "/"


# Bearer tokens ------------------------------------------------------------------------------


def test_api_calls_without_a_valid_bearer_token_are_401(live: Live) -> None:
    missing = live.api("GET", "/api/messages", token=None)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.json()["error"]["code"] == "unauthorized"
    for bad in ("garbage", "tc_" + "A" * 43, live.token + "x", live.token[:-1]):
        assert live.api("GET", "/api/messages", token=bad).status_code == 401, bad
    basic = live.api("GET", "/api/messages", token=None, auth=("admin", PASSWORD))
    assert basic.status_code == 401
    assert live.api("GET", "/api/messages").status_code == 200


def test_a_revoked_token_stops_working(live: Live) -> None:
    row, token = create_token(live.db, "admin", "laptop")
    assert live.api("GET", "/api/messages", token=token).status_code == 200
    revoke_token(live.db, row.id)
    answer = live.api("GET", "/api/messages", token=token)
    assert answer.status_code == 401
    sent = live.api("POST", "/api/send-message", token=token, json={"to": OTHER, "body": "hi"})
    assert sent.status_code == 401
    assert _message_count(live) == 0
    assert live.api("GET", "/api/messages").status_code == 200  # other tokens still work


def test_a_bearer_token_is_checked_with_one_query(db: Database) -> None:
    create_user(db, "bot-owner", "a long enough password", is_admin=False)
    row, token = create_token(db, "bot-owner", "bot", ("read",))
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's transaction start, not a query
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        identity = verify_token(db, token)
        assert len(statements) == 1
        assert identity is not None
        assert (identity.username, identity.is_admin, identity.scopes, identity.via) == (
            "bot-owner",
            False,
            frozenset({"read"}),
            "token",
        )
        assert verify_token(db, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        revoke_token(db, row.id)
        assert verify_token(db, token) is None
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def test_token_scopes_limit_what_a_token_may_do(live: Live) -> None:
    _row, read_only = create_token(live.db, "admin", "ro", ("read",))
    assert live.api("GET", "/api/messages", token=read_only).status_code == 200
    assert live.api("GET", "/api/conversations", token=read_only).status_code == 200
    refused = live.api(
        "POST", "/api/send-message", token=read_only, json={"to": OTHER, "body": "hi"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert _message_count(live) == 0

    sent = live.api("POST", "/api/send-message", json={"to": OTHER, "body": "hi"})
    assert sent.status_code == 201
    sid = sent.json()["message"]["sid"]
    assert live.api("POST", f"/api/messages/{sid}/redact", token=read_only).status_code == 403
    assert live.api("DELETE", f"/api/messages/{sid}", token=read_only).status_code == 403
    assert live.api("GET", f"/api/messages/{sid}").json()["message"]["body"] == "hi"

    _row, send_only = create_token(live.db, "admin", "bot", ("send",))
    assert live.api("GET", "/api/messages", token=send_only).status_code == 403
    answer = live.api("POST", "/api/send-message", token=send_only, json={"to": OTHER, "body": "x"})
    assert answer.status_code == 201


# Panel login --------------------------------------------------------------------------------


def test_the_login_page_shows_a_form_with_a_csrf_token(live: Live) -> None:
    with _browser() as browser:
        page = browser.get(live.url + "/login", timeout=10)
        assert page.status_code == 200
        assert len(_csrf(page.text)) >= 32
        assert 'name="username"' in page.text
        assert 'name="password"' in page.text
        cookie = next(c for c in browser.cookies if c.name == "session")
        assert cookie.has_nonstandard_attr("HttpOnly")


def test_a_wrong_password_is_401_and_keeps_the_username(live: Live) -> None:
    with _browser() as browser:
        answer = _login(live, browser, password="not-the-password")
        assert answer.status_code == 401
        assert "Wrong username or password" in answer.text
        assert 'value="admin"' in answer.text
        assert "not-the-password" not in answer.text
        assert not _logged_in(live, browser)

        unknown = _login(live, browser, username="nobody", password=PASSWORD)
        assert unknown.status_code == 401
        assert "Wrong username or password" in unknown.text  # same text: no user enumeration

        hostile = _login(live, browser, username="<script>alert(1)</script>")
        assert hostile.status_code == 401
        assert "<script>alert(1)</script>" not in hostile.text
        assert "&lt;script&gt;" in hostile.text


def test_the_right_password_logs_in(live: Live) -> None:
    with _browser() as browser:
        answer = _login(live, browser)
        assert answer.status_code == 302
        assert answer.headers["Location"] == "/"
        page = browser.get(live.url + "/", allow_redirects=False, timeout=10)
        assert page.status_code == 200
        assert 'data-user="admin"' in page.text
        # The session also authenticates read calls to the API.
        assert browser.get(live.url + "/api/messages", timeout=10).status_code == 200


def test_a_new_secret_key_ends_sessions_signed_with_the_old_one(live: Live) -> None:
    with _browser() as browser:
        assert _login(live, browser).status_code == 302
        assert browser.get(live.url + "/api/messages", timeout=10).status_code == 200
        old_key = live.app.secret_key
        live.app.secret_key = b"another secret key, as after a rotation"
        try:
            assert browser.get(live.url + "/api/messages", timeout=10).status_code == 401
            # Listed as a fallback, the old key still reads the cookie (Flask's rotation).
            live.app.config["SECRET_KEY_FALLBACKS"] = [old_key]
            assert browser.get(live.url + "/api/messages", timeout=10).status_code == 200
        finally:
            live.app.secret_key = old_key
            live.app.config["SECRET_KEY_FALLBACKS"] = []


def test_a_login_without_the_csrf_token_is_refused(live: Live) -> None:
    with _browser() as browser:
        browser.get(live.url + "/login", timeout=10)
        for extra in ({}, {"csrf_token": "forged"}):
            answer = browser.post(
                live.url + "/login",
                data={"username": "admin", "password": PASSWORD, **extra},
                allow_redirects=False,
                timeout=10,
            )
            assert answer.status_code == 401, extra
            assert "expired" in answer.text
            assert not _logged_in(live, browser)


def test_login_redirects_only_to_local_paths(live: Live) -> None:
    hostile = [
        "//evil.example",
        "https://evil.example/",
        "//evil.example/%2F..",
        "///evil.example",
        "/\\evil.example",  # browsers read a backslash as a slash
        "javascript:alert(1)",
    ]
    for target in hostile:
        with _browser() as browser:
            answer = _login(live, browser, next_=target)
            assert answer.status_code == 302, target
            location = answer.headers["Location"]
            as_browser_reads_it = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
            assert as_browser_reads_it.startswith("/"), (target, location)
            assert not as_browser_reads_it.startswith("//"), (target, location)
            assert urlsplit(urljoin(live.url, location)).netloc == urlsplit(live.url).netloc
    with _browser() as browser:
        answer = _login(live, browser, next_="//evil.example")
        assert answer.headers["Location"] == "/"
    with _browser() as browser:
        answer = _login(live, browser, next_="/?from=login")
        assert answer.headers["Location"] == "/?from=login"


def test_login_next_with_control_characters_stays_local(live: Live) -> None:
    """Tabs and newlines are dropped from URLs: `/<TAB>/evil.example` is `//evil.example`."""
    outcomes: dict[str, tuple[int, str]] = {}
    for target in ("/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example"):
        with _browser() as browser:
            answer = _login(live, browser, next_=target)
            outcomes[target] = (answer.status_code, answer.headers.get("Location", ""))
    assert outcomes == {
        "/\t/evil.example": (302, "/"),
        "/\n/evil.example": (302, "/"),
        "/\r\n/evil.example": (302, "/"),
    }


def test_logout_needs_the_csrf_token_and_ends_the_session(live: Live) -> None:
    with _browser() as browser:
        assert _login(live, browser).status_code == 302
        page = browser.get(live.url + "/", timeout=10)
        token = _csrf(page.text)

        forged = browser.post(live.url + "/logout", allow_redirects=False, timeout=10)
        assert forged.status_code == 403
        assert _logged_in(live, browser)

        answer = browser.post(
            live.url + "/logout", data={"csrf_token": token}, allow_redirects=False, timeout=10
        )
        assert answer.status_code == 302
        assert answer.headers["Location"] == "/login"
        assert not _logged_in(live, browser)
        assert browser.get(live.url + "/api/messages", timeout=10).status_code == 401


def test_answers_that_never_touch_the_session_set_no_cookie(live: Live) -> None:
    from support import post_inbound

    webhook = post_inbound(live, OTHER, "hello")
    assert "Set-Cookie" not in webhook.headers
    assert "Vary" not in webhook.headers
    # An answer that looked for a login in the session says it varies with the cookie...
    refused = requests.get(live.url + "/api/messages", timeout=10)
    assert refused.status_code == 401
    assert "Set-Cookie" not in refused.headers
    assert "Cookie" in refused.headers["Vary"]
    # ...and a page that keeps something in the session sets its cookie.
    page = requests.get(live.url + "/login", timeout=10)
    assert page.status_code == 200
    assert "session=" in page.headers["Set-Cookie"]
    assert "Cookie" in page.headers["Vary"]


def test_session_authenticated_api_writes_need_the_csrf_header(live: Live) -> None:
    with _browser() as browser:
        login_page_token = _csrf(browser.get(live.url + "/login", timeout=10).text)
        assert _login(live, browser).status_code == 302
        token = _csrf(browser.get(live.url + "/", timeout=10).text)
        url = live.url + "/api/send-message"
        payload = {"to": OTHER, "body": "from the panel"}

        missing = browser.post(url, json=payload, timeout=10)
        assert missing.status_code == 403
        assert missing.json()["error"]["code"] == "csrf"
        wrong = browser.post(url, json=payload, headers={"X-CSRF-Token": "nope"}, timeout=10)
        assert wrong.status_code == 403
        # The token a visitor saw before logging in is not valid after it.
        stale = browser.post(
            url, json=payload, headers={"X-CSRF-Token": login_page_token}, timeout=10
        )
        assert stale.status_code == 403
        assert _message_count(live) == 0

        answer = browser.post(url, json=payload, headers={"X-CSRF-Token": token}, timeout=10)
        assert answer.status_code == 201, answer.text
        assert _message_count(live) == 1


# Stored secrets -----------------------------------------------------------------------------


def test_passwords_are_stored_as_argon2_hashes(live: Live) -> None:
    with live.db.read() as session:
        hashes = list(session.scalars(select(User.password_hash)))
    assert len(hashes) == 1
    assert hashes[0].startswith("$argon2")
    assert PASSWORD not in hashes[0]


def test_tokens_are_stored_hashed(live: Live) -> None:
    _row, second = create_token(live.db, "admin", "second")
    with live.db.engine.connect() as conn:
        rows = [tuple(map(str, r)) for r in conn.execute(text("SELECT * FROM api_tokens"))]
    assert len(rows) == 2
    dump = repr(rows)
    for token in (live.token, second):
        assert token not in dump
        assert token[10:] not in dump  # not even the part after the shown prefix
    # And the stored form still authenticates.
    assert live.api("GET", "/api/messages", token=second).status_code == 200


def test_ensure_admin_creates_the_first_admin_only(live: Live) -> None:
    assert ensure_admin(live.db, "someone", None) is None  # users exist: nothing happens
    with live.db.read() as session:
        assert list(session.scalars(select(User.username))) == ["admin"]

    with live.db.session() as session:
        session.execute(delete(ApiToken))
        session.execute(delete(User))
    generated = ensure_admin(live.db, "owner", None)
    assert isinstance(generated, str)
    assert len(generated) >= 12
    with live.db.read() as session:
        users = [(u.username, u.is_admin, u.password_hash) for u in session.scalars(select(User))]
    assert len(users) == 1
    assert users[0][:2] == ("owner", True)
    assert users[0][2].startswith("$argon2")
    assert generated not in users[0][2]
    with _browser() as browser:
        assert _login(live, browser, username="owner", password=generated).status_code == 302
        assert _logged_in(live, browser)

    assert ensure_admin(live.db, "owner2", None) is None
    with live.db.read() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_ensure_admin_uses_a_given_password_without_returning_it(live: Live) -> None:
    with live.db.session() as session:
        session.execute(delete(ApiToken))
        session.execute(delete(User))
    assert ensure_admin(live.db, "boss", "given-password-1") is None
    assert authenticate(live.db, "boss", "given-password-1") is not None
    assert authenticate(live.db, "boss", "wrong-password") is None


# The sandbox's Twilio endpoints -------------------------------------------------------------


def _assert_twilio_401(answer: requests.Response) -> None:
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["code"] == 20003
    assert body["status"] == 401


def test_sandbox_endpoints_need_the_sandbox_account_credentials(live: Live) -> None:
    base = _sandbox_base(live)
    good = (live.settings.account_sid, live.settings.auth_token)
    assert live.settings.account_sid == SANDBOX_ACCOUNT_SID

    _assert_twilio_401(requests.get(base + "/Messages.json", timeout=10))
    wrong_token = (live.settings.account_sid, "0" * 32)
    _assert_twilio_401(requests.get(base + "/Messages.json", auth=wrong_token, timeout=10))
    wrong_user = ("AC" + "2" * 32, live.settings.auth_token)
    _assert_twilio_401(requests.get(base + "/Messages.json", auth=wrong_user, timeout=10))
    # Right credentials, someone else's account in the path.
    other = _sandbox_base(live, "AC" + "2" * 32) + "/Messages.json"
    _assert_twilio_401(requests.get(other, auth=good, timeout=10))
    # The app's own bearer token is not a Twilio credential.
    _assert_twilio_401(
        requests.get(
            base + "/Messages.json",
            headers={"Authorization": f"Bearer {live.token}"},
            timeout=10,
        )
    )

    form = {"To": OTHER, "From": live.settings.default_from, "Body": "forged"}
    _assert_twilio_401(requests.post(base + "/Messages.json", data=form, timeout=10))
    _assert_twilio_401(
        requests.post(base + "/Faults.json", data={"Status": "500"}, auth=wrong_token, timeout=10)
    )
    _assert_twilio_401(
        requests.post(
            base + "/SimulatedInbound.json",
            data={"From": OTHER, "Body": "hi"},
            auth=wrong_token,
            timeout=10,
        )
    )
    with get_store(live.app).read() as session:
        assert session.scalar(select(func.count()).select_from(SandboxMessage)) == 0
        assert session.scalar(select(func.count()).select_from(SandboxFault)) == 0
    assert _message_count(live) == 0

    listed = requests.get(base + "/Messages.json", auth=good, timeout=10)
    assert listed.status_code == 200
    assert listed.json()["messages"] == []


def test_without_the_sandbox_its_endpoints_do_not_exist(
    live_factory: Callable[..., Live],
) -> None:
    live = live_factory(TWILIO_ACCOUNT_SID=REAL_LOOKING_SID, TWILIO_AUTH_TOKEN=REAL_LOOKING_TOKEN)
    assert live.settings.sandbox is False  # precondition: nothing below may send anything
    assert not [r.rule for r in live.app.url_map.iter_rules() if r.rule.startswith("/sandbox")]

    base = _sandbox_base(live) + "/Messages.json"
    assert live.api("GET", base.removeprefix(live.url)).status_code == 404
    posted = live.api("POST", base.removeprefix(live.url), data={"To": OTHER, "Body": "x"})
    assert posted.status_code == 404
    with_basic = requests.get(
        base, auth=(REAL_LOOKING_SID, REAL_LOOKING_TOKEN), allow_redirects=False, timeout=10
    )
    assert with_basic.status_code in (302, 401, 404)
    if with_basic.status_code == 302:
        assert with_basic.headers["Location"].startswith("/login")
    assert "messages" not in with_basic.text

    simulate = live.api("POST", "/api/sandbox/simulate", json={"from": OTHER, "body": "hi"})
    assert simulate.status_code == 404
    spec = live.api("GET", "/api/openapi.json", token=None).json()
    assert "/api/sandbox/simulate" not in spec["paths"]
    for answer in (posted, with_basic, simulate):
        assert REAL_LOOKING_TOKEN not in answer.text
    assert REAL_LOOKING_TOKEN not in repr(spec)


# Secrets never leave the server -------------------------------------------------------------


def _answers_to_check(live: Live) -> list[requests.Response]:
    answers: list[requests.Response] = [
        live.api("GET", "/api/openapi.json", token=None),
        live.api("GET", "/api/messages", token=None),
        live.api("GET", "/api/messages", token="tc_wrong"),
        live.api("POST", "/api/send-message", json={"to": "555", "body": "x"}),
        live.api(
            "POST", "/api/send-message", data="[1]", headers={"Content-Type": "application/json"}
        ),
        live.api("GET", "/api/messages/SM" + "f" * 32),
        live.api("GET", "/api/conversations/+15559990000"),
        live.api("GET", "/api/messages/remote", params={"limit": "x"}),
        live.api("GET", "/no/such/page"),
        requests.get(_sandbox_base(live) + "/Messages.json", timeout=10),
        requests.get(
            _sandbox_base(live) + "/Messages/SM" + "f" * 32 + ".json",
            auth=(live.settings.account_sid, live.settings.auth_token),
            timeout=10,
        ),
        requests.post(live.url + "/twilio/inbound", data={"From": OTHER}, timeout=10),
    ]
    # A Twilio refusal (21610) carried back as a 502.
    with get_store(live.app).session() as session:
        session.add(SandboxOptOut(sender=live.settings.default_from, number=OTHER))
    answers.append(live.api("POST", "/api/send-message", json={"to": OTHER, "body": "hi"}))
    # And the 409 that follows.
    answers.append(live.api("POST", "/api/send-message", json={"to": OTHER, "body": "hi"}))
    return answers


def test_secrets_never_appear_in_answers(live: Live) -> None:
    secrets_ = [live.settings.auth_token, SECRET]
    assert all(len(s) >= 16 for s in secrets_)
    answers = _answers_to_check(live)
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 401, 401, 400, 400, 404, 404, 400, 404, 401, 404, 403, 502, 409]
    for answer in answers:
        seen = answer.text + repr(dict(answer.headers))
        for secret in secrets_:
            assert secret not in seen, f"{answer.request.method} {answer.url} leaks a secret"
