"""The built-in Twilio sandbox over raw HTTP: Twilio's shapes, errors, callbacks, simulator."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from support import PHONE, Live, settle_sandbox_callbacks, wait_for
from twilio.request_validator import RequestValidator

FROM = "+15005550006"
SID_RE = re.compile(r"^(SM|MM)[0-9a-f]{32}$")
ERROR_KEYS = {"code", "message", "more_info", "status"}


def _base(live: Live, account_sid: str | None = None) -> str:
    sid = account_sid or live.settings.account_sid
    return f"{live.url}/sandbox/twilio/2010-04-01/Accounts/{sid}"


def _auth(live: Live) -> tuple[str, str]:
    return (live.settings.account_sid, live.settings.auth_token)


def _create(live: Live, data: Any = None, **kw: Any) -> requests.Response:
    form = data if data is not None else {"To": PHONE, "From": FROM, "Body": "Hello"}
    kw.setdefault("auth", _auth(live))
    return requests.post(f"{_base(live)}/Messages.json", data=form, timeout=10, **kw)


def _list(live: Live, **params: str) -> dict[str, Any]:
    answer = requests.get(
        f"{_base(live)}/Messages.json", params=params, auth=_auth(live), timeout=10
    )
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def _sid(answer: requests.Response) -> str:
    assert answer.status_code == 201, answer.text
    sid: str = answer.json()["sid"]
    return sid


def _assert_twilio_error(answer: requests.Response, status: int, code: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    error: dict[str, Any] = answer.json()
    assert set(error) == ERROR_KEYS
    assert error["code"] == code
    assert error["status"] == status
    assert error["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


# Create -------------------------------------------------------------------------------------


def test_create_answers_201_in_twilios_shape(live: Live) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    answer = _create(live, {"To": PHONE, "From": FROM, "Body": "Hello there"})
    assert answer.status_code == 201, answer.text
    m = answer.json()
    assert re.fullmatch(r"SM[0-9a-f]{32}", m["sid"])
    account = live.settings.account_sid
    assert m["account_sid"] == account
    assert (m["from"], m["to"], m["body"]) == (FROM, PHONE, "Hello there")
    assert m["status"] == "queued"
    assert m["direction"] == "outbound-api"
    assert m["num_segments"] == "1"
    assert m["num_media"] == "0"
    assert m["error_code"] is None
    assert m["api_version"] == "2010-04-01"
    assert m["date_created"].endswith(" +0000")
    created = parsedate_to_datetime(m["date_created"])
    assert before <= created <= datetime.now(UTC) + timedelta(seconds=1)
    assert m["uri"] == f"/2010-04-01/Accounts/{account}/Messages/{m['sid']}.json"
    assert m["subresource_uris"]["media"] == (
        f"/2010-04-01/Accounts/{account}/Messages/{m['sid']}/Media.json"
    )
    for key in ("messaging_service_sid", "price", "price_unit", "date_sent", "date_updated"):
        assert key in m


def test_create_counts_segments_and_media_as_strings(live: Live) -> None:
    answer = _create(
        live,
        [
            ("To", PHONE),
            ("From", FROM),
            ("Body", "ł" * 71),
            ("MediaUrl", "https://example.com/a.png"),
            ("MediaUrl", "https://example.com/b.png"),
        ],
    )
    assert answer.status_code == 201, answer.text
    m = answer.json()
    assert m["sid"].startswith("MM")
    assert m["num_segments"] == "2"
    assert m["num_media"] == "2"


def test_create_through_a_messaging_service_starts_accepted(live: Live) -> None:
    service = "MG" + "1" * 32
    answer = _create(live, {"To": PHONE, "MessagingServiceSid": service, "Body": "Hi"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "accepted"
    assert answer.json()["messaging_service_sid"] == service


CREATE_ERRORS: list[tuple[dict[str, str], int]] = [
    ({"To": "12345", "From": FROM, "Body": "Hi"}, 21211),
    ({"To": "+1555", "From": FROM, "Body": "Hi"}, 21211),
    ({"To": PHONE, "From": FROM}, 21602),
    ({"To": PHONE, "From": FROM, "Body": ""}, 21602),
    ({"To": PHONE, "From": FROM, "Body": "x" * 1601}, 21617),
    ({"From": FROM, "Body": "Hi"}, 21604),
    ({"To": PHONE, "Body": "Hi"}, 21603),
]


def test_create_errors_come_in_twilios_shape(live: Live) -> None:
    for form, code in CREATE_ERRORS:
        answer = _create(live, form)
        assert answer.status_code == 400, (form, answer.text)
        assert answer.json()["code"] == code, (form, answer.text)
        _assert_twilio_error(answer, 400, code)
    assert _list(live)["messages"] == []  # nothing was created


def test_body_of_exactly_1600_characters_is_accepted(live: Live) -> None:
    answer = _create(live, {"To": PHONE, "From": FROM, "Body": "x" * 1600})
    assert answer.status_code == 201, answer.text
    assert answer.json()["num_segments"] == "11"


def test_send_after_stop_is_refused_with_21610_until_start(live: Live) -> None:
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "STOP"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["webhook_status"] == 200

    error = _assert_twilio_error(_create(live), 400, 21610)
    assert "unsubscribed" in error["message"]
    # Another handset is unaffected.
    _sid(_create(live, {"To": "+15551230002", "From": FROM, "Body": "Hi"}))

    answer = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "START"})
    assert answer.status_code == 201, answer.text
    assert SID_RE.match(_sid(_create(live)))


def test_bad_credentials_are_401_with_20003(live: Live) -> None:
    bad: list[tuple[str, str] | None] = [
        None,
        (live.settings.account_sid, "wrong-token"),
        (live.settings.account_sid, ""),
        ("AC" + "1" * 32, live.settings.auth_token),
    ]
    for auth in bad:
        answer = requests.post(
            f"{_base(live)}/Messages.json",
            data={"To": PHONE, "From": FROM, "Body": "Hi"},
            auth=auth,
            timeout=10,
        )
        _assert_twilio_error(answer, 401, 20003)
        assert live.settings.auth_token not in answer.text
    assert _list(live)["messages"] == []


def test_right_credentials_on_another_accounts_path_are_refused(live: Live) -> None:
    other = "AC" + "9" * 32
    answer = requests.get(f"{_base(live, other)}/Messages.json", auth=_auth(live), timeout=10)
    _assert_twilio_error(answer, 401, 20003)


def test_every_resource_requires_credentials(live: Live) -> None:
    sid = _sid(_create(live))
    for method, path in [
        ("GET", "/Messages.json"),
        ("GET", f"/Messages/{sid}.json"),
        ("POST", f"/Messages/{sid}.json"),
        ("DELETE", f"/Messages/{sid}.json"),
        ("POST", "/Faults.json"),
        ("POST", "/SimulatedInbound.json"),
    ]:
        answer = requests.request(method, _base(live) + path, timeout=10)
        _assert_twilio_error(answer, 401, 20003)
    # The unauthenticated DELETE did nothing.
    assert requests.get(f"{_base(live)}/Messages/{sid}.json", auth=_auth(live), timeout=10).ok


def test_injected_fault_answers_in_twilios_shape_then_clears(live: Live) -> None:
    answer = requests.post(
        f"{_base(live)}/Faults.json", data={"Status": "429"}, auth=_auth(live), timeout=10
    )
    assert answer.status_code == 201, answer.text
    _assert_twilio_error(_create(live), 429, 20429)
    assert SID_RE.match(_sid(_create(live)))


# Fetch, update, delete ------------------------------------------------------------------------


def test_fetch_unknown_sid_is_404_with_20404(live: Live) -> None:
    answer = requests.get(f"{_base(live)}/Messages/SM{'0' * 32}.json", auth=_auth(live), timeout=10)
    _assert_twilio_error(answer, 404, 20404)


def test_update_with_empty_body_redacts(live: Live) -> None:
    sid = _sid(_create(live, {"To": PHONE, "From": FROM, "Body": "my password is swordfish"}))
    url = f"{_base(live)}/Messages/{sid}.json"
    answer = requests.post(url, data={"Body": ""}, auth=_auth(live), timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["sid"] == sid
    assert answer.json()["body"] == ""
    fetched = requests.get(url, auth=_auth(live), timeout=10).json()
    assert fetched["body"] == ""
    assert "swordfish" not in str(_list(live))  # not hex, so no random sid holds it


def test_update_with_a_non_empty_body_is_refused(live: Live) -> None:
    sid = _sid(_create(live, {"To": PHONE, "From": FROM, "Body": "original"}))
    url = f"{_base(live)}/Messages/{sid}.json"
    answer = requests.post(url, data={"Body": "changed"}, auth=_auth(live), timeout=10)
    assert answer.status_code == 400
    assert set(answer.json()) >= {"code", "message", "status"}
    assert requests.get(url, auth=_auth(live), timeout=10).json()["body"] == "original"


def test_update_unknown_sid_is_404(live: Live) -> None:
    answer = requests.post(
        f"{_base(live)}/Messages/SM{'0' * 32}.json", data={"Body": ""}, auth=_auth(live), timeout=10
    )
    _assert_twilio_error(answer, 404, 20404)


def test_delete_answers_204_then_the_message_is_gone(live: Live) -> None:
    sid = _sid(_create(live))
    url = f"{_base(live)}/Messages/{sid}.json"
    answer = requests.delete(url, auth=_auth(live), timeout=10)
    assert answer.status_code == 204
    assert answer.content == b""
    _assert_twilio_error(requests.get(url, auth=_auth(live), timeout=10), 404, 20404)
    _assert_twilio_error(requests.delete(url, auth=_auth(live), timeout=10), 404, 20404)
    assert sid not in [m["sid"] for m in _list(live)["messages"]]


# List -----------------------------------------------------------------------------------------


def test_list_is_newest_first_and_filters_to_and_from(live: Live) -> None:
    other = "+15551230002"
    a = _sid(_create(live, {"To": PHONE, "From": FROM, "Body": "a"}))
    b = _sid(_create(live, {"To": other, "From": FROM, "Body": "b"}))
    c = _sid(_create(live, {"To": PHONE, "From": FROM, "Body": "c"}))
    page = _list(live)
    assert [m["sid"] for m in page["messages"]] == [c, b, a]
    assert page["page"] == 0
    assert page["page_size"] == 50  # Twilio's default
    assert page["next_page_uri"] is None
    assert [m["sid"] for m in _list(live, To=PHONE)["messages"]] == [c, a]
    assert [m["sid"] for m in _list(live, To=other)["messages"]] == [b]
    assert [m["sid"] for m in _list(live, From=FROM)["messages"]] == [c, b, a]
    assert _list(live, From="+15551239999")["messages"] == []


def test_list_includes_simulated_inbound_texts(live: Live) -> None:
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "Hey"})
    assert answer.status_code == 201, answer.text
    inbound = _list(live, From=PHONE)["messages"]
    assert [(m["sid"], m["direction"], m["status"], m["to"]) for m in inbound][:1] == [
        (answer.json()["sid"], "inbound", "received", FROM)
    ]


def test_list_filters_on_date_sent(live: Live) -> None:
    sid = _sid(_create(live))
    url = f"{_base(live)}/Messages/{sid}.json"
    sent = wait_for(lambda: requests.get(url, auth=_auth(live), timeout=10).json()["date_sent"])
    day = parsedate_to_datetime(sent).date()
    assert [m["sid"] for m in _list(live, DateSent=day.isoformat())["messages"]] == [sid]
    assert _list(live, DateSent=(day - timedelta(days=1)).isoformat())["messages"] == []
    assert _list(live, DateSent=(day + timedelta(days=1)).isoformat())["messages"] == []
    bad = requests.get(
        f"{_base(live)}/Messages.json", params={"DateSent": "soon"}, auth=_auth(live), timeout=10
    )
    assert bad.status_code == 400


def test_list_pages_with_next_page_uri_relative_to_the_api_root(live: Live) -> None:
    sids = [_sid(_create(live, {"To": PHONE, "From": FROM, "Body": f"n{i}"})) for i in range(5)]
    newest_first = sids[::-1]
    root = f"{live.url}/sandbox/twilio"
    page = _list(live, PageSize="2")
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        assert page["page_size"] == 2
        assert len(page["messages"]) <= 2
        seen += [m["sid"] for m in page["messages"]]
        next_uri = page["next_page_uri"]
        if next_uri is None:
            break
        assert next_uri.startswith(
            f"/2010-04-01/Accounts/{live.settings.account_sid}/Messages.json?"
        )
        assert "PageSize=2" in next_uri
        answer = requests.get(root + next_uri, auth=_auth(live), timeout=10)
        assert answer.status_code == 200, answer.text
        page = answer.json()
    assert pages == 3
    assert seen == newest_first


def test_paging_keeps_the_filters(live: Live) -> None:
    other = "+15551230002"
    for i in range(3):
        _sid(_create(live, {"To": PHONE, "From": FROM, "Body": f"p{i}"}))
        _sid(_create(live, {"To": other, "From": FROM, "Body": f"o{i}"}))
    page = _list(live, To=PHONE, PageSize="2")
    assert page["next_page_uri"] is not None
    second = requests.get(
        f"{live.url}/sandbox/twilio{page['next_page_uri']}", auth=_auth(live), timeout=10
    ).json()
    assert {m["to"] for m in page["messages"] + second["messages"]} == {PHONE}
    assert len(page["messages"]) + len(second["messages"]) == 3


def test_list_refuses_a_bad_page_size(live: Live) -> None:
    for size in ("0", "1001", "many"):
        answer = requests.get(
            f"{_base(live)}/Messages.json", params={"PageSize": size}, auth=_auth(live), timeout=10
        )
        assert answer.status_code == 400, size


# Status callbacks -----------------------------------------------------------------------------


class _Catcher:
    """A tiny HTTP server on 127.0.0.1 that records the status callbacks it is sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], str]] = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                signature = self.headers.get("X-Twilio-Signature", "")
                catcher.calls.append((self.path, form, signature))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def catcher() -> Iterator[_Catcher]:
    c = _Catcher()
    yield c
    c.close()


def _callbacks_for(
    live: Live, catcher: _Catcher, to: str, count: int
) -> list[tuple[str, dict[str, str], str]]:
    callback = f"{catcher.url}/cb?mid=42"
    sid = _sid(_create(live, {"To": to, "From": FROM, "Body": "Hi", "StatusCallback": callback}))
    calls: list[tuple[str, dict[str, str], str]] = wait_for(
        lambda: len(catcher.calls) >= count and catcher.calls
    )
    validator = RequestValidator(live.settings.auth_token)
    for path, form, signature in calls:
        assert path == "/cb?mid=42"
        assert form["MessageSid"] == sid
        assert form["AccountSid"] == live.settings.account_sid
        assert (form["From"], form["To"]) == (FROM, to)
        assert validator.validate(callback, form, signature), form
        assert not RequestValidator("not-the-token").validate(callback, form, signature)
    return calls


def test_status_callbacks_are_signed_and_go_sent_then_delivered(
    live: Live, catcher: _Catcher
) -> None:
    calls = _callbacks_for(live, catcher, PHONE, 2)
    assert [form["MessageStatus"] for _p, form, _s in calls] == ["sent", "delivered"]
    assert all("ErrorCode" not in form for _p, form, _s in calls)


FAILING = [("+15551230000", 30003), ("+15551230007", 30007)]


def test_failing_numbers_end_undelivered_with_an_error_code(live: Live, catcher: _Catcher) -> None:
    for to, code in FAILING:
        catcher.calls.clear()
        calls = _callbacks_for(live, catcher, to, 2)
        final = calls[-1][1]
        assert [form["MessageStatus"] for _p, form, _s in calls] == ["sent", "undelivered"], to
        assert final["ErrorCode"] == str(code)
        fetched = requests.get(
            f"{_base(live)}/Messages/{final['MessageSid']}.json", auth=_auth(live), timeout=10
        ).json()
        assert fetched["status"] == "undelivered"
        assert fetched["error_code"] == code
        assert fetched["error_message"]


def _detail(live: Live, sid: str) -> dict[str, Any]:
    answer = live.api("GET", f"/api/messages/{sid}")
    assert answer.status_code == 200, answer.text
    message: dict[str, Any] = answer.json()["message"]
    return message


def _send_through_app(live: Live, to: str) -> str:
    answer = live.api("POST", "/api/send-message", json={"to": to, "body": "Hi"})
    assert answer.status_code == 201, answer.text
    sid: str = answer.json()["message"]["sid"]
    return sid


def test_app_accepts_the_sandboxs_signed_callbacks(live: Live) -> None:
    # The app checks signatures: an unsigned callback is refused ...
    forged = requests.post(
        f"{live.url}/twilio/status",
        data={"MessageSid": "SM" + "3" * 32, "MessageStatus": "delivered"},
        timeout=10,
    )
    assert forged.status_code == 403
    # ... and the sandbox's are recorded.
    sid = _send_through_app(live, PHONE)
    detail = wait_for(lambda: (d := _detail(live, sid))["status"] == "delivered" and d)
    assert [e["status"] for e in detail["events"]] == ["sent", "delivered"]


def test_app_records_undelivered_with_the_error_code(live: Live) -> None:
    for to, code in FAILING:
        sid = _send_through_app(live, to)
        detail = wait_for(
            lambda sid=sid: (d := _detail(live, sid))["status"] == "undelivered" and d
        )
        assert detail["error_code"] == code
        assert detail["error_message"]
        assert [(e["status"], e["error_code"]) for e in detail["events"]] == [
            ("sent", None),
            ("undelivered", code),
        ]


# Phone simulator ------------------------------------------------------------------------------


def _thread(live: Live, number: str = PHONE) -> list[dict[str, Any]]:
    answer = live.api("GET", f"/api/conversations/{number}")
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


def test_simulator_sends_a_signed_webhook_the_app_accepts(live: Live) -> None:
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "Hi there"})
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert result["webhook_status"] == 200
    assert SID_RE.match(result["sid"])
    assert (result["from"], result["to"], result["body"]) == (PHONE, FROM, "Hi there")
    [stored] = _thread(live)
    assert (stored["sid"], stored["direction"], stored["body"]) == (
        result["sid"],
        "inbound",
        "Hi there",
    )


def test_simulated_media_becomes_media_on_the_stored_message(live: Live) -> None:
    urls = ["https://example.com/cat.png", "https://example.com/clip.mp4"]
    answer = live.api(
        "POST",
        "/api/sandbox/simulate",
        json={"from": PHONE, "body": "look", "media_urls": urls},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["webhook_status"] == 200
    assert answer.json()["sid"].startswith("MM")
    [stored] = _thread(live)
    assert stored["media"] == [
        {"url": urls[0], "content_type": "image/png"},
        {"url": urls[1], "content_type": "video/mp4"},
    ]


def test_simulated_media_without_body_is_accepted(live: Live) -> None:
    answer = live.api(
        "POST",
        "/api/sandbox/simulate",
        json={"from": PHONE, "media_urls": ["https://example.com/p.jpg"]},
    )
    assert answer.status_code == 201, answer.text
    [stored] = _thread(live)
    assert stored["media"] == [{"url": "https://example.com/p.jpg", "content_type": "image/jpeg"}]


def test_simulator_refuses_bad_input_naming_the_field(live: Live) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"from": "555-1234", "body": "Hi"}, "from"),
        ({"from": "", "body": "Hi"}, "from"),
        ({"from": PHONE, "body": ""}, "body"),
        ({"from": PHONE, "body": "x" * 1601}, "body"),
        ({"from": PHONE, "body": "Hi", "media_urls": ["ftp://x/y.png"]}, "media_urls"),
    ]
    for payload, field in cases:
        answer = live.api("POST", "/api/sandbox/simulate", json=payload)
        assert answer.status_code == 400, (payload, answer.text)
        assert answer.json()["error"]["field"] == field, payload
    assert live.api("GET", "/api/conversations").json()["conversations"] == []
    assert _list(live)["messages"] == []


def test_simulator_requires_an_api_token(live: Live) -> None:
    answer = live.api(
        "POST", "/api/sandbox/simulate", token=None, json={"from": PHONE, "body": "x"}
    )
    assert answer.status_code == 401


def test_simulated_inbound_endpoint_over_basic_auth(live: Live) -> None:
    answer = requests.post(
        f"{_base(live)}/SimulatedInbound.json",
        data={"From": PHONE, "Body": "via basic auth"},
        auth=_auth(live),
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["webhook_status"] == 200
    assert [m["body"] for m in _thread(live)] == ["via basic auth"]


# Sandbox with configured credentials ------------------------------------------------------------

CONFIGURED_SID = "AC" + "ab" * 16
CONFIGURED_TOKEN = "f" * 32


@pytest.fixture
def configured(live_factory: Callable[..., Live]) -> Live:
    return live_factory(
        TWILIO_SANDBOX="true",
        TWILIO_ACCOUNT_SID=CONFIGURED_SID,
        TWILIO_AUTH_TOKEN=CONFIGURED_TOKEN,
    )


def test_configured_token_signs_the_sandboxs_webhooks(configured: Live) -> None:
    live = configured
    assert live.settings.sandbox
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "Hi"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["webhook_status"] == 200


def test_a_script_signing_with_the_configured_token_is_accepted(configured: Live) -> None:
    live = configured
    url = f"{live.url}/twilio/inbound"
    form = {
        "MessageSid": "SM" + "4" * 32,
        "AccountSid": CONFIGURED_SID,
        "From": PHONE,
        "To": FROM,
        "Body": "signed by a script",
        "NumMedia": "0",
    }
    wrong = RequestValidator("0" * 32).compute_signature(url, form)
    refused = requests.post(url, data=form, headers={"X-Twilio-Signature": wrong}, timeout=10)
    assert refused.status_code == 403
    signature = RequestValidator(CONFIGURED_TOKEN).compute_signature(url, form)
    answer = requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/xml")
    assert [m["body"] for m in _thread(live)] == ["signed by a script"]


def test_configured_credentials_read_the_sandboxs_list(configured: Live) -> None:
    live = configured
    sent = live.api("POST", "/api/send-message", json={"to": PHONE, "body": "Hi"})
    assert sent.status_code == 201, sent.text
    url = f"{live.url}/sandbox/twilio/2010-04-01/Accounts/{CONFIGURED_SID}/Messages.json"
    answer = requests.get(url, auth=(CONFIGURED_SID, CONFIGURED_TOKEN), timeout=10)
    assert answer.status_code == 200, answer.text
    messages = answer.json()["messages"]
    assert [(m["sid"], m["account_sid"]) for m in messages] == [
        (sent.json()["message"]["sid"], CONFIGURED_SID)
    ]
    refused = requests.get(url, auth=(CONFIGURED_SID, "0" * 32), timeout=10)
    _assert_twilio_error(refused, 401, 20003)


# Status callbacks: timing and failures -----------------------------------------------------------


def test_the_create_call_answers_before_its_callbacks_which_come_after_the_delay(
    live_factory: Callable[..., Live], catcher: _Catcher
) -> None:
    live = live_factory(SANDBOX_CALLBACK_DELAY="0.5")
    callback = f"{catcher.url}/cb?mid=5"
    started = time.monotonic()
    _sid(_create(live, {"To": PHONE, "From": FROM, "Body": "Hi", "StatusCallback": callback}))
    assert time.monotonic() - started < 0.5  # the create call never waits for a callback
    assert catcher.calls == []
    wait_for(lambda: len(catcher.calls) >= 2)
    assert time.monotonic() - started >= 1.0  # each of the two came after the delay
    assert [f["MessageStatus"] for _p, f, _s in catcher.calls] == ["sent", "delivered"]


def test_waiting_for_the_sandbox_threads_waits_for_every_callback_of_a_message(
    live: Live, catcher: _Catcher
) -> None:
    callback = f"{catcher.url}/cb?mid=6"
    sid = _sid(_create(live, {"To": PHONE, "From": FROM, "Body": "Hi", "StatusCallback": callback}))
    settle_sandbox_callbacks()  # as each test's teardown does, before its database goes
    assert [(f["MessageSid"], f["MessageStatus"]) for _p, f, _s in catcher.calls] == [
        (sid, "sent"),
        (sid, "delivered"),
    ]
    assert not [t for t in threading.enumerate() if t.name.startswith("sandbox-")]


def test_a_callback_that_cannot_be_posted_is_logged_and_other_messages_still_get_theirs(
    live: Live, catcher: _Catcher, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as unused:  # a port nobody listens on: the post is refused
        unused.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{unused.getsockname()[1]}/cb"
    lost = _sid(_create(live, {"To": PHONE, "From": FROM, "Body": "a", "StatusCallback": nobody}))
    callback = f"{catcher.url}/cb?mid=9"
    sid = _sid(_create(live, {"To": PHONE, "From": FROM, "Body": "b", "StatusCallback": callback}))
    wait_for(lambda: len(catcher.calls) >= 2)
    settle_sandbox_callbacks()
    assert [(f["MessageSid"], f["MessageStatus"]) for _p, f, _s in catcher.calls] == [
        (sid, "sent"),
        (sid, "delivered"),
    ]
    assert f"status callbacks for {lost} stopped" in caplog.text
    assert _detail_status(live, lost) == "sent"  # moved, then no further once its post failed


def test_many_sends_each_get_their_callbacks_in_order(live: Live, catcher: _Catcher) -> None:
    callback = f"{catcher.url}/cb?mid=7"
    data = {"To": PHONE, "From": FROM, "StatusCallback": callback}
    sids = [_sid(_create(live, {**data, "Body": f"n{i}"})) for i in range(12)]
    wait_for(lambda: len(catcher.calls) >= 2 * len(sids), timeout=20)
    for sid in sids:
        steps = [f["MessageStatus"] for _p, f, _s in catcher.calls if f["MessageSid"] == sid]
        assert steps == ["sent", "delivered"], sid
    assert {_detail_status(live, sid) for sid in sids} == {"delivered"}


def _detail_status(live: Live, sid: str) -> str:
    answer = requests.get(f"{_base(live)}/Messages/{sid}.json", auth=_auth(live), timeout=10)
    status: str = answer.json()["status"]
    return status


def test_a_message_deleted_before_its_callbacks_gets_none(
    live_factory: Callable[..., Live], catcher: _Catcher
) -> None:
    live = live_factory(SANDBOX_CALLBACK_DELAY="0.5")  # time to delete it before the first
    callback = f"{catcher.url}/cb?mid=8"
    data = {"To": PHONE, "From": FROM, "Body": "gone", "StatusCallback": callback}
    sid = _sid(_create(live, data))
    answer = requests.delete(f"{_base(live)}/Messages/{sid}.json", auth=_auth(live), timeout=10)
    assert answer.status_code == 204
    settle_sandbox_callbacks()
    assert catcher.calls == []
