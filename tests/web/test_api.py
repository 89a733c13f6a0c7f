"""The REST API against a live server in sandbox mode: sending, listing, threads, remote records."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from support import PHONE, Live, wait_for

from twilio_chat.db.models import Job, Message, OptOut
from twilio_chat.sandbox import get_sandbox, get_store
from twilio_chat.sandbox.store import SandboxOptOut
from twilio_chat.twilio.gateway import get_gateway

OTHER = "+15551230002"
THIRD = "+15551230004"  # ends 0004: undelivered with 30004 in the sandbox; fine for listing
FAILING = "+15551230000"  # the sandbox's "unreachable handset" number
SERVICE_SID = "MG" + "0123456789abcdef" * 2
UNKNOWN_SID = "SM" + "f" * 32


# Helpers ------------------------------------------------------------------------------------


def _message_count(live: Live) -> int:
    with live.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Message)) or 0)


def _send(live: Live, to: str = PHONE, body: str = "hello", **extra: Any) -> dict[str, Any]:
    answer = live.api("POST", "/api/send-message", json={"to": to, "body": body, **extra})
    assert answer.status_code == 201, answer.text
    message: dict[str, Any] = answer.json()["message"]
    return message


def _simulate(live: Live, from_: str, body: str) -> dict[str, Any]:
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": from_, "body": body})
    assert answer.status_code == 201, answer.text
    assert answer.json()["webhook_status"] == 200
    result: dict[str, Any] = answer.json()
    return result


def _detail(live: Live, sid: str) -> dict[str, Any]:
    answer = live.api("GET", f"/api/messages/{sid}")
    assert answer.status_code == 200, answer.text
    message: dict[str, Any] = answer.json()["message"]
    return message


def _wait_status(live: Live, sid: str, status: str = "delivered") -> dict[str, Any]:
    detail: dict[str, Any] = wait_for(lambda: (d := _detail(live, sid))["status"] == status and d)
    return detail


def _remote(live: Live, **params: Any) -> list[dict[str, Any]]:
    answer = live.api("GET", "/api/messages/remote", params=params)
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


def _wait_remote_sent(live: Live, count: int) -> list[dict[str, Any]]:
    """Wait until the sandbox has given `count` messages a date_sent."""
    found: list[dict[str, Any]] = wait_for(
        lambda: (ms := _remote(live)) and sum(1 for m in ms if m["date_sent"]) == count and ms
    )
    return found


def _error(answer: requests.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"code", "message", "field"}
    assert isinstance(error["message"], str) and error["message"]
    return error


# POST /api/send-message: success ------------------------------------------------------------


def test_send_message_answers_201_with_an_sms_sid_and_stores_it(live: Live) -> None:
    sent = _send(live, body="Hi there")
    assert re.fullmatch(r"SM[0-9a-f]{32}", sent["sid"])
    assert sent["direction"] == "outbound"
    assert sent["to"] == PHONE
    assert sent["from"] == live.settings.default_from
    assert sent["body"] == "Hi there"
    assert sent["source"] == "api"
    stored = _detail(live, sent["sid"])
    assert stored["id"] == sent["id"]
    assert _message_count(live) == 1


def test_send_message_with_media_urls_gives_an_mms_and_stores_the_media(live: Live) -> None:
    urls = ["https://example.com/cat.png", "http://example.com/dog.jpg"]
    sent = _send(live, body="Pictures", media_urls=urls)
    assert sent["sid"].startswith("MM")
    assert [m["url"] for m in sent["media"]] == urls
    assert [m["url"] for m in _detail(live, sent["sid"])["media"]] == urls
    remote = _remote(live, to=PHONE)
    assert [(m["sid"], m["num_media"]) for m in remote] == [(sent["sid"], 2)]


def test_send_message_accepts_media_only_template_only_and_form_bodies(live: Live) -> None:
    media_only = live.api(
        "POST",
        "/api/send-message",
        json={"to": PHONE, "media_urls": "https://example.com/only.png"},
    )
    assert media_only.status_code == 201, media_only.text
    assert media_only.json()["message"]["sid"].startswith("MM")
    assert media_only.json()["message"]["body"] == ""

    template_only = live.api(
        "POST", "/api/send-message", json={"to": OTHER, "content_sid": "HX" + "a" * 32}
    )
    assert template_only.status_code == 201, template_only.text
    assert template_only.json()["message"]["sid"].startswith("SM")

    form = live.api("POST", "/api/send-message", data={"to": THIRD, "body": "from a form"})
    assert form.status_code == 201, form.text
    assert form.json()["message"]["body"] == "from a form"
    assert _message_count(live) == 3
    assert len(_remote(live)) == 3


def test_blank_media_url_lines_are_dropped_as_the_panel_sends_them(live: Live) -> None:
    urls = ["  https://example.com/a.png ", "   ", ""]
    sent = _send(live, body="one picture", media_urls=urls)
    assert [m["url"] for m in sent["media"]] == ["https://example.com/a.png"]


def test_a_body_of_exactly_1600_characters_is_sent(live: Live) -> None:
    sent = _send(live, body="a" * 1600)
    assert len(sent["body"]) == 1600
    assert sent["num_segments"] == 11  # 1600 GSM-7 characters at 153 per segment
    assert [len(m["body"]) for m in _remote(live, to=PHONE)] == [1600]


# Messaging Service --------------------------------------------------------------------------


def test_use_messaging_service_without_one_configured_is_a_400(live: Live) -> None:
    answer = live.api(
        "POST",
        "/api/send-message",
        json={"to": PHONE, "body": "hi", "use_messaging_service": True},
    )
    error = _error(answer, 400)
    assert error["field"] in ("use_messaging_service", "messaging_service_sid")
    assert _message_count(live) == 0
    assert _remote(live) == []


def test_use_messaging_service_sends_through_the_configured_service(
    live_factory: Callable[..., Live],
) -> None:
    live = live_factory(TWILIO_MESSAGING_SERVICE_SID=SERVICE_SID)
    sent = _send(live, body="via service", use_messaging_service=True)
    assert sent["messaging_service_sid"] == SERVICE_SID
    remote = _remote(live, to=PHONE)
    assert [(m["sid"], m["messaging_service_sid"]) for m in remote] == [(sent["sid"], SERVICE_SID)]
    # A service send starts "accepted" and still ends delivered through the callbacks.
    assert [e["status"] for e in _wait_status(live, sent["sid"])["events"]] == [
        "queued",
        "sent",
        "delivered",
    ]
    # Without the flag the same app sends from its number, not through the service.
    plain = _send(live, to=OTHER, body="from the number")
    remote = _remote(live, to=OTHER)
    assert [(m["sid"], m["messaging_service_sid"]) for m in remote] == [(plain["sid"], None)]
    assert remote[0]["from"] == live.settings.default_from


# Bad input: 400, naming the field, and nothing written --------------------------------------

BAD_SENDS: list[tuple[str, dict[str, Any], str]] = [
    ("missing to", {"body": "hi"}, "to"),
    ("empty to", {"to": "", "body": "hi"}, "to"),
    ("to without plus", {"to": "5551234", "body": "hi"}, "to"),
    ("to too short", {"to": "+1555", "body": "hi"}, "to"),
    ("to not a possible number", {"to": "+1555123456789", "body": "hi"}, "to"),
    ("to with unknown country code", {"to": "+99912345678", "body": "hi"}, "to"),
    ("to with letters", {"to": "+1555123abcd", "body": "hi"}, "to"),
    ("to is a number", {"to": 123, "body": "hi"}, "to"),
    ("to with full-width digits", {"to": "+１５５５１２３０００１", "body": "hi"}, "to"),
    ("to with Arabic-Indic digits", {"to": "+١٥٥٥١٢٣٠٠٠١", "body": "hi"}, "to"),
    ("nothing to send", {"to": PHONE}, "body"),
    ("empty body", {"to": PHONE, "body": ""}, "body"),
    ("body of 1601", {"to": PHONE, "body": "a" * 1601}, "body"),
    ("body is a number", {"to": PHONE, "body": 5}, "body"),
    (
        "media_urls an object",
        {"to": PHONE, "body": "hi", "media_urls": {"url": "https://example.com/a.png"}},
        "media_urls",
    ),
    ("media_urls of numbers", {"to": PHONE, "media_urls": [1, 2]}, "media_urls"),
    ("media_url ftp", {"to": PHONE, "media_urls": ["ftp://example.com/a.png"]}, "media_urls"),
    ("media_url javascript", {"to": PHONE, "media_urls": "javascript:alert(1)"}, "media_urls"),
    ("media_url relative", {"to": PHONE, "media_urls": ["/a.png"]}, "media_urls"),
    (
        "eleven media_urls",
        {"to": PHONE, "media_urls": [f"https://example.com/{i}.png" for i in range(11)]},
        "media_urls",
    ),
    ("content_sid short", {"to": PHONE, "content_sid": "HX123"}, "content_sid"),
    ("content_sid wrong prefix", {"to": PHONE, "content_sid": "MG" + "0" * 32}, "content_sid"),
    ("content_sid not hex", {"to": PHONE, "content_sid": "HX" + "z" * 32}, "content_sid"),
    (
        "use_messaging_service not boolean",
        {"to": PHONE, "body": "hi", "use_messaging_service": "maybe"},
        "use_messaging_service",
    ),
    (
        "bad messaging_service_sid",
        {"to": PHONE, "body": "hi", "messaging_service_sid": "MG123"},
        "messaging_service_sid",
    ),
]


def test_bad_send_requests_are_400_naming_the_field_and_write_nothing(live: Live) -> None:
    for case, payload, field in BAD_SENDS:
        answer = live.api("POST", "/api/send-message", json=payload)
        error = _error(answer, 400)
        assert error["field"] == field, case
    assert _message_count(live) == 0
    assert _remote(live) == []


def test_a_json_body_that_is_not_an_object_is_a_400(live: Live) -> None:
    too_deep = "[" * 100_000 + "]" * 100_000  # Python's parser gives up: not a 500
    for raw in ('["+15551230001", "hi"]', '"hello"', "null", "{not json", "42", too_deep):
        answer = live.api(
            "POST", "/api/send-message", data=raw, headers={"Content-Type": "application/json"}
        )
        assert _error(answer, 400)["field"] is None, raw
    assert _message_count(live) == 0
    assert _remote(live) == []


# Opt-outs -----------------------------------------------------------------------------------


def test_sending_to_a_number_in_the_local_opt_out_ledger_is_409_without_calling_twilio(
    live: Live,
) -> None:
    with live.db.session() as session:
        session.add(
            OptOut(sender=live.settings.default_from, number=OTHER, opted_out=True, reason="test")
        )
    answer = live.api("POST", "/api/send-message", json={"to": OTHER, "body": "hi"})
    error = _error(answer, 409)
    assert error["field"] == "to"
    assert "START" in error["message"]
    assert _message_count(live) == 0
    assert _remote(live) == []


def test_after_stop_sends_are_refused_until_the_number_texts_start(live: Live) -> None:
    _simulate(live, OTHER, "STOP")
    remote_before = _remote(live)
    count_before = _message_count(live)

    answer = live.api("POST", "/api/send-message", json={"to": OTHER, "body": "still there?"})
    assert _error(answer, 409)["field"] == "to"
    assert _remote(live) == remote_before  # Twilio was never called
    assert _message_count(live) == count_before

    _simulate(live, OTHER, "start")
    sent = _send(live, to=OTHER, body="welcome back")
    assert sent["sid"] in [m["sid"] for m in _remote(live, to=OTHER)]


def test_twilio_21610_is_a_502_with_twilios_code_and_then_recorded_locally(live: Live) -> None:
    # Twilio's own list blocks the number although the local ledger knows nothing about it.
    with get_store(live.app).session() as session:
        session.add(SandboxOptOut(sender=live.settings.default_from, number=OTHER))
    answer = live.api("POST", "/api/send-message", json={"to": OTHER, "body": "hi"})
    error = _error(answer, 502)
    assert error["code"] == 21610
    assert answer.headers["X-Twilio-Status"] == "400"

    failed = live.api("GET", "/api/messages", params={"direction": "outbound"}).json()
    assert [(m["status"], m["error_code"], m["sid"]) for m in failed["messages"]] == [
        ("failed", 21610, None)
    ]
    with live.db.read() as session:
        ledger = session.scalars(select(OptOut).where(OptOut.number == OTHER)).all()
    assert [(r.sender, r.opted_out) for r in ledger] == [(live.settings.default_from, True)]

    again = live.api("POST", "/api/send-message", json={"to": OTHER, "body": "hi again"})
    assert _error(again, 409)["field"] == "to"
    assert _message_count(live) == 1
    conversation = live.api("GET", f"/api/conversations/{OTHER}").json()["conversation"]
    assert conversation["opted_out"] is True


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (500, 20500)])
def test_twilio_throttling_or_outage_is_a_502_and_the_message_is_stored_failed(
    live: Live, status: int, code: int
) -> None:
    get_sandbox(live.app).inject_fault(status, 1)
    answer = live.api("POST", "/api/send-message", json={"to": PHONE, "body": "hi"})
    error = _error(answer, 502)
    assert error["code"] == code
    assert answer.headers["X-Twilio-Status"] == str(status)
    stored = live.api("GET", "/api/messages").json()["messages"]
    assert [(m["status"], m["error_code"], m["sid"]) for m in stored] == [("failed", code, None)]
    assert _remote(live) == []


def test_an_injected_fault_answers_only_as_many_calls_as_asked(live: Live) -> None:
    get_sandbox(live.app).inject_fault(500, 1)
    first = live.api("POST", "/api/send-message", json={"to": PHONE, "body": "first try"})
    assert _error(first, 502)["code"] == 20500
    second = live.api("POST", "/api/send-message", json={"to": PHONE, "body": "second try"})
    assert second.status_code == 201, second.text


def test_a_number_ending_0000_ends_undelivered_with_30003_and_a_readable_error(
    live: Live,
) -> None:
    sent = _send(live, to=FAILING, body="anyone?")
    detail = _wait_status(live, sent["sid"], "undelivered")
    assert detail["error_code"] == 30003
    assert "unreachable" in detail["error_message"].lower()
    assert [(e["status"], e["error_code"]) for e in detail["events"]] == [
        ("sent", None),
        ("undelivered", 30003),
    ]
    remote = _remote(live, to=FAILING)
    assert [(m["status"], m["error_code"]) for m in remote] == [("undelivered", 30003)]


# GET /api/messages --------------------------------------------------------------------------


def test_messages_are_listed_newest_first_with_a_direction_filter(live: Live) -> None:
    first = _send(live, to=PHONE, body="one")
    _simulate(live, OTHER, "two")
    third = _send(live, to=THIRD, body="three")

    listed = live.api("GET", "/api/messages").json()
    assert [m["body"] for m in listed["messages"]] == ["three", "two", "one"]
    assert listed["next_cursor"] is None

    outbound = live.api("GET", "/api/messages", params={"direction": "outbound"}).json()
    assert [m["sid"] for m in outbound["messages"]] == [third["sid"], first["sid"]]
    inbound = live.api("GET", "/api/messages", params={"direction": "inbound"}).json()
    assert [(m["body"], m["from"]) for m in inbound["messages"]] == [("two", OTHER)]

    limited = live.api("GET", "/api/messages", params={"limit": 1}).json()
    assert [m["body"] for m in limited["messages"]] == ["three"]
    assert limited["next_cursor"] is not None


def test_the_before_cursor_pages_through_every_message_once(live: Live) -> None:
    for i in range(5):
        _send(live, body=f"m{i}")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["before"] = cursor
        page = live.api("GET", "/api/messages", params=params).json()
        seen += [m["body"] for m in page["messages"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert seen == ["m4", "m3", "m2", "m1", "m0"]
    assert pages == 3


def test_bad_message_list_parameters_are_400(live: Live) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"before": "abc"}, "before"),
        ({"direction": "sideways"}, "direction"),
        ({"status": "lost"}, "status"),
        ({"number": "12345"}, "number"),
        ({"text": "x" * 201}, "text"),
    ]
    for params, field in cases:
        answer = live.api("GET", "/api/messages", params=params)
        assert _error(answer, 400)["field"] == field, params
    assert live.api("GET", "/api/messages", params={"limit": 500}).status_code == 200


def _bodies(live: Live, **params: Any) -> list[str]:
    answer = live.api("GET", "/api/messages", params=params)
    assert answer.status_code == 200, answer.text
    return [m["body"] for m in answer.json()["messages"]]


def test_messages_filter_by_status_number_and_text_as_the_dashboard_does(live: Live) -> None:
    shipped = _send(live, to=PHONE, body="Order 1 shipped")
    _wait_status(live, shipped["sid"], "delivered")
    _simulate(live, OTHER, "Where is my ORDER?")
    _simulate(live, PHONE, "thanks")
    late = _send(live, to=THIRD, body="your order is late")
    _wait_status(live, late["sid"], "undelivered")

    everything = ["your order is late", "Where is my ORDER?", "Order 1 shipped"]
    assert _bodies(live, text="order") == everything  # any case, newest first
    assert _bodies(live, text="  ORDER ") == everything  # trimmed
    assert _bodies(live, text="order", direction="inbound") == ["Where is my ORDER?"]
    assert _bodies(live, status="undelivered") == ["your order is late"]
    assert _bodies(live, status="received") == ["thanks", "Where is my ORDER?"]
    assert _bodies(live, number=PHONE) == ["thanks", "Order 1 shipped"]
    assert _bodies(live, number=PHONE, text="order") == ["Order 1 shipped"]
    assert _bodies(live, text="refund") == []
    assert _bodies(live, text="100%") == []  # LIKE's wildcards are taken literally

    seen: list[str] = []
    params: dict[str, Any] = {"text": "order", "limit": 2}
    while True:
        page = live.api("GET", "/api/messages", params=params).json()
        seen += [m["body"] for m in page["messages"]]
        if page["next_cursor"] is None:
            break
        params["before"] = page["next_cursor"]
    assert seen == everything


def _jobs_waiting(live: Live) -> int:
    with live.db.read() as session:
        query = select(func.count()).select_from(Job).where(Job.status.in_(("queued", "running")))
        return int(session.scalar(query) or 0)


def test_stats_count_today_the_week_and_the_delivery_rate(live: Live) -> None:
    empty = live.api("GET", "/api/stats")
    assert empty.status_code == 200, empty.text
    assert empty.json()["stats"]["delivery_rate"] is None
    delivered = _send(live, to=PHONE, body="one")
    undelivered = _send(live, to=THIRD, body="two")
    _simulate(live, OTHER, "three")
    _simulate(live, PHONE, "STOP")
    _wait_status(live, delivered["sid"], "delivered")
    _wait_status(live, undelivered["sid"], "undelivered")

    stats = live.api("GET", "/api/stats").json()["stats"]
    assert stats == {
        "inbound_today": 2,
        "outbound_today": 2,
        "inbound_7d": 2,
        "outbound_7d": 2,
        "delivered_7d": 1,
        "failed_7d": 1,
        "delivery_rate": 0.5,
        "opted_out": 1,
        "jobs_waiting": _jobs_waiting(live),  # no worker runs here: the reply to "three"
    }
    assert stats["jobs_waiting"] >= 1
    assert live.api("GET", "/api/stats", token=None).status_code == 401


# Conversations ------------------------------------------------------------------------------


def test_conversations_are_ordered_by_latest_activity_with_unread_and_opt_out(
    live: Live,
) -> None:
    _send(live, to=PHONE, body="to first")
    _simulate(live, OTHER, "from other")
    _simulate(live, OTHER, "again from other")
    _send(live, to=THIRD, body="to third")

    listed = live.api("GET", "/api/conversations").json()["conversations"]
    assert [(c["participant"], c["unread_count"]) for c in listed] == [
        (THIRD, 0),
        (OTHER, 2),
        (PHONE, 0),
    ]
    assert [c["last_message"]["body"] for c in listed] == [
        "to third",
        "again from other",
        "to first",
    ]
    assert not any(c["opted_out"] for c in listed)

    _simulate(live, PHONE, "STOP")
    listed = live.api("GET", "/api/conversations").json()["conversations"]
    assert [(c["participant"], c["unread_count"], c["opted_out"]) for c in listed] == [
        (PHONE, 1, True),
        (THIRD, 0, False),
        (OTHER, 2, False),
    ]


def test_conversation_list_pages_with_limit_and_before(live: Live) -> None:
    for number in (PHONE, OTHER, THIRD):
        _send(live, to=number, body=f"to {number}")
    first = live.api("GET", "/api/conversations", params={"limit": 2}).json()
    assert [c["participant"] for c in first["conversations"]] == [THIRD, OTHER]
    assert first["next_cursor"] is not None
    rest = live.api(
        "GET", "/api/conversations", params={"limit": 2, "before": first["next_cursor"]}
    ).json()
    assert [c["participant"] for c in rest["conversations"]] == [PHONE]
    assert rest["next_cursor"] is None


def test_a_thread_lists_its_messages_oldest_first_and_pages_back(live: Live) -> None:
    _send(live, to=OTHER, body="one")
    _simulate(live, OTHER, "two")
    _send(live, to=PHONE, body="elsewhere")
    _send(live, to=OTHER, body="three")

    thread = live.api("GET", f"/api/conversations/{OTHER}").json()
    assert [(m["direction"], m["body"]) for m in thread["messages"]] == [
        ("outbound", "one"),
        ("inbound", "two"),
        ("outbound", "three"),
    ]
    assert thread["conversation"]["participant"] == OTHER
    assert thread["conversation"]["unread_count"] == 1
    assert thread["conversation"]["last_message"]["body"] == "three"
    assert thread["next_cursor"] is None

    latest = live.api("GET", f"/api/conversations/{OTHER}", params={"limit": 2}).json()
    assert [m["body"] for m in latest["messages"]] == ["two", "three"]
    older = live.api(
        "GET",
        f"/api/conversations/{OTHER}",
        params={"limit": 2, "before": latest["next_cursor"]},
    ).json()
    assert [m["body"] for m in older["messages"]] == ["one"]
    assert older["next_cursor"] is None


def test_an_unknown_conversation_is_404_and_a_non_e164_participant_is_400(live: Live) -> None:
    _send(live, to=PHONE)
    assert _error(live.api("GET", f"/api/conversations/{OTHER}"), 404)["field"] == "participant"
    for bad in ("5551230002", "hello", "+1555", "+１５５５１２３０００２"):
        answer = live.api("GET", f"/api/conversations/{bad}")
        assert _error(answer, 400)["field"] == "participant", bad
    answer = live.api("GET", f"/api/conversations/{PHONE}", params={"limit": 0})
    assert _error(answer, 400)["field"] == "limit"
    answer = live.api("GET", "/api/conversations", params={"limit": 201})
    assert _error(answer, 400)["field"] == "limit"


# One message: detail, redact, delete --------------------------------------------------------


def test_message_detail_shows_the_stored_message_with_its_status_events(live: Live) -> None:
    sent = _send(live, body="track me")
    detail = _wait_status(live, sent["sid"])
    answer = live.api("GET", f"/api/messages/{sent['sid']}").json()
    assert answer["stored"] is True
    assert detail["body"] == "track me"
    assert [e["status"] for e in detail["events"]] == ["sent", "delivered"]
    assert all(e["received_at"] for e in detail["events"])


def test_message_detail_falls_back_to_twilios_record_of_it(live: Live) -> None:
    remote = get_sandbox(live.app).create(
        {"To": OTHER, "From": live.settings.default_from, "Body": "made elsewhere"}, []
    )
    answer = live.api("GET", f"/api/messages/{remote['sid']}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"] is False
    assert answer.json()["message"]["body"] == "made elsewhere"
    assert answer.json()["message"]["to"] == OTHER


def test_an_unknown_sid_is_404_for_detail_redact_and_delete(live: Live) -> None:
    for method, path in (
        ("GET", f"/api/messages/{UNKNOWN_SID}"),
        ("POST", f"/api/messages/{UNKNOWN_SID}/redact"),
        ("DELETE", f"/api/messages/{UNKNOWN_SID}"),
    ):
        error = _error(live.api(method, path), 404)
        assert (error["code"], error["field"]) == ("not_found", "sid"), method


def test_redact_erases_the_body_here_and_at_twilio(live: Live) -> None:
    # Not a hex string: a random sid in the same answer once contained the old secret "1234".
    sent = _send(live, to=OTHER, body="my secret word is swordfish")
    _wait_status(live, sent["sid"])
    answer = live.api("POST", f"/api/messages/{sent['sid']}/redact")
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"]["body"] == ""
    assert answer.json()["message"]["redacted"] is True

    local = _detail(live, sent["sid"])
    assert (local["body"], local["redacted"], local["status"]) == ("", True, "delivered")
    assert [(m["sid"], m["body"]) for m in _remote(live, to=OTHER)] == [(sent["sid"], "")]
    assert "swordfish" not in live.api("GET", f"/api/conversations/{OTHER}").text


def test_delete_removes_the_message_here_and_at_twilio(live: Live) -> None:
    older = _send(live, to=OTHER, body="keep me")
    newer = _send(live, to=OTHER, body="delete me")
    _wait_status(live, older["sid"])
    _wait_status(live, newer["sid"])

    answer = live.api("DELETE", f"/api/messages/{newer['sid']}")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"deleted": True, "sid": newer["sid"]}

    assert _error(live.api("GET", f"/api/messages/{newer['sid']}"), 404)["field"] == "sid"
    assert [m["sid"] for m in _remote(live, to=OTHER)] == [older["sid"]]
    thread = live.api("GET", f"/api/conversations/{OTHER}").json()
    assert [m["body"] for m in thread["messages"]] == ["keep me"]
    # The conversation list now shows the message that is left.
    listed = live.api("GET", "/api/conversations").json()["conversations"]
    assert [(c["participant"], c["last_message"]["body"]) for c in listed] == [(OTHER, "keep me")]


def test_delete_of_a_message_twilio_no_longer_has_still_deletes_it_here(live: Live) -> None:
    sent = _send(live, to=OTHER, body="gone remotely")
    _wait_status(live, sent["sid"])
    get_gateway(live.app).delete(sent["sid"])
    answer = live.api("DELETE", f"/api/messages/{sent['sid']}")
    assert answer.status_code == 200, answer.text
    assert _message_count(live) == 0


# GET /api/messages/remote -------------------------------------------------------------------


def test_remote_messages_filter_by_to_from_date_and_limit(live: Live) -> None:
    a1 = _send(live, to=PHONE, body="a1")
    b1 = _send(live, to=OTHER, body="b1")
    a2 = _send(live, to=PHONE, body="a2")
    inbound = _simulate(live, THIRD, "c1")
    _wait_remote_sent(live, 4)
    ours = live.settings.default_from

    assert [m["sid"] for m in _remote(live)] == [inbound["sid"], a2["sid"], b1["sid"], a1["sid"]]
    assert [m["sid"] for m in _remote(live, to=PHONE)] == [a2["sid"], a1["sid"]]
    assert [m["sid"] for m in _remote(live, **{"from": THIRD})] == [inbound["sid"]]
    assert [m["sid"] for m in _remote(live, **{"from": ours})] == [
        a2["sid"],
        b1["sid"],
        a1["sid"],
    ]
    assert [m["sid"] for m in _remote(live, to=PHONE, **{"from": ours}, limit=1)] == [a2["sid"]]
    assert [m["sid"] for m in _remote(live, limit=2)] == [inbound["sid"], a2["sid"]]

    now = datetime.now(UTC)
    today = now.date().isoformat()
    assert len(_remote(live, date_sent=today)) == 4
    assert _remote(live, date_sent=(now - timedelta(days=1)).date().isoformat()) == []
    hour_ago = (now - timedelta(hours=1)).isoformat()
    in_an_hour = (now + timedelta(hours=1)).isoformat()
    assert len(_remote(live, date_sent_after=hour_ago)) == 4
    assert _remote(live, date_sent_after=in_an_hour) == []
    assert len(_remote(live, date_sent_before=in_an_hour)) == 4
    assert _remote(live, date_sent_before=hour_ago) == []
    assert len(_remote(live, date_sent_after=hour_ago, date_sent_before=in_an_hour)) == 4


def test_remote_date_filters_with_a_utc_offset_mean_the_same_instant(live: Live) -> None:
    """`2024-05-01T12:00:00+02:00` is 10:00 UTC: it must not be sent on to Twilio as 12:00Z."""
    sent = _send(live, body="timed")
    _wait_remote_sent(live, 1)
    now = datetime.now(UTC)
    plus_two = timezone(timedelta(hours=2))
    minus_five = timezone(timedelta(hours=-5))
    half_hour_ago = (now - timedelta(minutes=30)).astimezone(plus_two).isoformat()
    in_half_an_hour = (now + timedelta(minutes=30)).astimezone(minus_five).isoformat()
    assert [m["sid"] for m in _remote(live, date_sent_after=half_hour_ago)] == [sent["sid"]]
    assert [m["sid"] for m in _remote(live, date_sent_before=in_half_an_hour)] == [sent["sid"]]


def test_remote_messages_return_more_than_one_page_worth(live: Live) -> None:
    sids = [_send(live, to=PHONE, body=f"p{i}")["sid"] for i in range(5)]
    assert [m["sid"] for m in _remote(live, limit=5)] == list(reversed(sids))
    assert [m["sid"] for m in _remote(live, limit=3)] == list(reversed(sids))[:3]


def test_the_gateway_follows_next_page_uri_through_the_sdk(live: Live) -> None:
    to_phone = [_send(live, to=PHONE, body=f"p{i}")["sid"] for i in range(3)]
    to_other = [_send(live, to=OTHER, body=f"o{i}")["sid"] for i in range(2)]
    gateway = get_gateway(live.app)
    newest_first = list(reversed(to_phone + to_other))

    five = [m.sid for m in gateway.iter_messages(page_size=2, limit=5)]
    assert five == newest_first  # three pages of at most 2
    everything = [m.sid for m in gateway.iter_messages(page_size=2)]
    assert everything == newest_first
    # The filter survives onto the following pages.
    filtered = [m.sid for m in gateway.iter_messages(to=PHONE, page_size=2)]
    assert filtered == list(reversed(to_phone))


def test_bad_remote_list_parameters_are_400(live: Live) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"to": "5551230001"}, "to"),
        ({"to": "+1555"}, "to"),
        ({"from": "abc"}, "from"),
        ({"date_sent": "yesterday"}, "date_sent"),
        ({"date_sent_after": "2024-13-01"}, "date_sent_after"),
        ({"date_sent_before": "noon"}, "date_sent_before"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
    ]
    for params, field in cases:
        answer = live.api("GET", "/api/messages/remote", params=params)
        assert _error(answer, 400)["field"] == field, params


# OpenAPI ------------------------------------------------------------------------------------


def _api_routes(live: Live) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in live.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        methods = {m.lower() for m in (rule.methods or set())} - {"head", "options"}
        routes.setdefault(path, set()).update(methods)
    return routes


def test_openapi_describes_exactly_the_api_routes_with_their_methods(live: Live) -> None:
    answer = live.api("GET", "/api/openapi.json", token=None)
    assert answer.status_code == 200
    spec = answer.json()
    assert spec["openapi"].startswith("3.")
    documented = {
        path: {m for m in item if m in {"get", "post", "put", "patch", "delete"}}
        for path, item in spec["paths"].items()
    }
    routes = _api_routes(live)
    assert "/api/messages/{sid}" in routes  # the conversion worked
    assert documented == routes


def test_openapi_says_which_operations_need_a_login_as_the_route_guard_does(live: Live) -> None:
    spec = live.api("GET", "/api/openapi.json", token=None).json()
    assert spec["security"] == [{"bearer": []}, {"session": []}]
    views = {}
    for rule in live.app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            views[(path, method.lower())] = live.app.view_functions[rule.endpoint]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            where = f"{method} {path}"
            if getattr(views[(path, method)], "public_reason", None):
                assert operation["security"] == [], where
                assert "401" not in operation["responses"], where
            else:
                assert "security" not in operation, where  # the document's default: a login
                assert {"401", "403"} <= set(operation["responses"]), where
            if operation.get("parameters") or operation.get("requestBody"):
                assert "400" in operation["responses"], where
            for status, answer in operation["responses"].items():
                if status >= "400":
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorAnswer"}, where
    error = spec["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message", "field"}


# Bad input that used to reach Twilio or the database ----------------------------------------


def test_a_message_sid_that_is_not_a_sid_is_400_before_twilio_is_asked(live: Live) -> None:
    for method, path in (
        ("GET", "/api/messages/%23"),
        ("POST", "/api/messages/%23/redact"),
        ("DELETE", "/api/messages/%23"),
        ("GET", "/api/messages/SM123"),
        ("DELETE", "/api/messages/" + "XX" + "0" * 32),
    ):
        error = _error(live.api(method, path), 400)
        assert (error["code"], error["field"]) == ("invalid", "sid"), (method, path)


def test_a_date_with_a_three_digit_year_is_400_before_twilio_is_asked(live: Live) -> None:
    for name in ("date_sent", "date_sent_before", "date_sent_after"):
        for value in ("0246-01-01", "0999-12-31T10:00:00Z", "9999-12-31T23:00:00-05:00"):
            answer = live.api("GET", "/api/messages/remote", params={name: value})
            assert _error(answer, 400)["field"] == name, (name, value)


def test_a_search_text_with_a_nul_character_is_400(live: Live) -> None:
    _send(live, body="a b")
    answer = live.api("GET", "/api/messages?text=a%00b")
    assert _error(answer, 400)["field"] == "text"


def test_text_with_a_nul_character_is_refused_everywhere_it_would_be_stored(live: Live) -> None:
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/api/send-message", {"to": PHONE, "body": "a\x00b"}, "body"),
        ("POST", f"/api/conversations/{PHONE}/contact", {"name": "Al\x00ice"}, "name"),
        ("POST", "/api/sandbox/simulate", {"from": PHONE, "body": "a\x00b"}, "body"),
        ("POST", "/api/auto-reply/config", {"enabled": True, "message": "a\x00b"}, "message"),
        ("POST", "/api/ai/config", {"system_prompt": "a\x00b"}, "system_prompt"),
    ]
    for method, path, payload, field in cases:
        answer = live.api(method, path, json=payload)
        assert _error(answer, 400)["field"] == field, path
    assert _message_count(live) == 0


# Errors in the user's language ----------------------------------------------------------------

POLISH = {"Accept-Language": "pl"}


@pytest.mark.parametrize(
    ("method", "path", "payload", "field", "polish"),
    [
        (
            "POST",
            "/api/send-message",
            {"to": 123, "body": "hi"},
            "to",
            "to musi być tekstem.",
        ),
        (
            "POST",
            f"/api/conversations/{PHONE}/pause",
            {"minutes": 0},
            "minutes",
            "minutes musi być liczbą całkowitą od 1 do 525600.",
        ),
        (
            "GET",
            "/api/messages?limit=0",
            None,
            "limit",
            "limit musi być liczbą całkowitą od 1 do 500.",
        ),
        (
            "GET",
            "/api/messages?direction=sideways",
            None,
            "direction",
            "direction musi mieć jedną z wartości: inbound, outbound.",
        ),
        (
            "GET",
            "/api/conversations/hello",
            None,
            "participant",
            "participant musi być numerem telefonu w formacie E.164, np. +48601234567.",
        ),
    ],
)
def test_validation_errors_are_in_polish_under_accept_language_pl(
    live: Live, method: str, path: str, payload: Any, field: str, polish: str
) -> None:
    answer = live.api(method, path, json=payload, headers=dict(POLISH))
    error = _error(answer, 400)
    assert (error["field"], error["message"]) == (field, polish)
    english = _error(live.api(method, path, json=payload), 400)
    assert english["field"] == field
    assert english["message"] != polish


ENGLISH_ERRORS: list[tuple[str, str, Any, int]] = [
    ("POST", "/api/send-message", {"body": "hi"}, 400),
    ("POST", "/api/send-message", {"to": PHONE, "body": "a" * 1601}, 400),
    ("POST", "/api/send-message", {"to": PHONE, "media_urls": [1]}, 400),
    ("POST", "/api/send-message", {"to": PHONE, "body": "hi", "use_messaging_service": 7}, 400),
    ("POST", "/api/send-message", ["not", "an", "object"], 400),
    ("GET", "/api/messages?limit=abc", None, 400),
    ("GET", "/api/messages?status=lost", None, 400),
    ("GET", "/api/messages?number=12345", None, 400),
    ("GET", "/api/messages?before=abc", None, 400),
    ("GET", "/api/messages?text=" + "x" * 201, None, 400),
    ("GET", "/api/messages/remote?date_sent=yesterday", None, 400),
    ("GET", "/api/messages/remote?to=5551230001", None, 400),
    ("GET", f"/api/messages/{UNKNOWN_SID}", None, 404),
    ("GET", f"/api/conversations/{OTHER}", None, 404),
    ("GET", "/api/events?cursor=nonsense", None, 400),
    ("GET", "/api/audit?limit=0", None, 400),
    ("POST", f"/api/conversations/{PHONE}/contact", {"name": "x" * 121}, 400),
    ("POST", f"/api/conversations/{PHONE}/pause", {"minutes": "soon"}, 400),
    ("POST", "/api/auto-reply/config", {"enabled": "yes", "message": "ok"}, 400),
    ("POST", "/api/ai/config", {"colour": "blue"}, 400),
    ("POST", "/api/ai/config", {"history_limit": 0}, 400),
    ("POST", "/api/ai/test", {}, 400),
    ("POST", "/api/ai/test", {"message": 5}, 400),
    ("POST", "/api/sandbox/simulate", {"from": "nobody", "body": "hi"}, 400),
    ("GET", "/api/no-such-route", None, 404),
    ("PUT", "/api/messages", None, 405),
]


def test_every_api_error_is_translated(live: Live) -> None:
    _send(live)
    for method, path, payload, status in ENGLISH_ERRORS:
        english = _error(live.api(method, path, json=payload), status)
        polish = _error(live.api(method, path, json=payload, headers=dict(POLISH)), status)
        assert polish["code"] == english["code"] and polish["field"] == english["field"], path
        assert polish["message"] != english["message"], (method, path, english["message"])


def test_auth_errors_are_translated(live: Live) -> None:
    english = _error(live.api("GET", "/api/messages", token=None), 401)
    polish = _error(live.api("GET", "/api/messages", token=None, headers=dict(POLISH)), 401)
    assert polish["message"] != english["message"]
