"""Twilio's webhooks, POST /twilio/inbound and POST /twilio/status, signed for real.

Every request is signed with twilio-python's RequestValidator over the URL Twilio would have
called, posted to a live server on 127.0.0.1, and checked on the HTTP answer and the database.

Starting a server costs about a second (password hashing, shutdown polling), so the tests share
one server per configuration (module scope) and stay apart by using a fresh phone number and fresh
message SIDs each: every database assertion is scoped to those.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import or_, select
from support import Live, fresh_database, settle_sandbox_callbacks, start_live, wait_for
from twilio.request_validator import RequestValidator

from twilio_chat.db.models import Contact, Job, Message, OptOut, StatusEvent
from twilio_chat.sandbox import state as sandbox_state

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'
INBOUND = "/twilio/inbound"
STATUS = "/twilio/status"
SERVICE_SID = "MG" + "a" * 32
PUBLIC = "https://chat.example.com"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example.com"}


# Servers ------------------------------------------------------------------------------------


def _serve(
    tmp_path_factory: pytest.TempPathFactory, template_db: Path | str, **overrides: Any
) -> Iterator[Live]:
    target = tmp_path_factory.mktemp("webhooks") / "app.db"
    with fresh_database(target, template_db) as path:
        live, server, thread = start_live(path, **overrides)
        try:
            yield live
        finally:
            settle_sandbox_callbacks()
            server.shutdown()
            thread.join(5)
            server.server_close()
            live.session.close()
            live.db.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, template_db: Path | str) -> Iterator[Live]:
    """The app in sandbox mode with default settings, shared by this module's tests."""
    yield from _serve(tmp_path_factory, template_db)


@pytest.fixture(scope="module")
def public_server(
    tmp_path_factory: pytest.TempPathFactory, template_db: Path | str
) -> Iterator[Live]:
    """The app told that Twilio reaches it at https://chat.example.com."""
    yield from _serve(tmp_path_factory, template_db, PUBLIC_BASE_URL=PUBLIC)


@pytest.fixture(scope="module")
def proxied_server(
    tmp_path_factory: pytest.TempPathFactory, template_db: Path | str
) -> Iterator[Live]:
    """The app behind one trusted reverse proxy, and no PUBLIC_BASE_URL."""
    yield from _serve(tmp_path_factory, template_db, TRUSTED_PROXY_COUNT="1")


@pytest.fixture
def number() -> str:
    """A fresh US number; it ends in 1, so the sandbox delivers to it."""
    return f"+1555{random.randrange(10**6):06d}1"


# Helpers ------------------------------------------------------------------------------------


def _sid(prefix: str = "SM") -> str:
    return prefix + uuid.uuid4().hex


def _sign(live: Live, url: str, form: Mapping[str, str]) -> str:
    return str(RequestValidator(live.settings.auth_token).compute_signature(url, dict(form)))


def _post(
    live: Live,
    path: str,
    form: Mapping[str, str],
    *,
    signed_url: str | None = None,
    signature: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """POST a form to the live app, signed for `signed_url` (default: the URL posted to)."""
    all_headers = dict(headers or {})
    if signature is None:
        signature = _sign(live, signed_url or live.url + path, form)
    if signature:
        all_headers["X-Twilio-Signature"] = signature
    return requests.post(live.url + path, data=dict(form), headers=all_headers, timeout=10)


def _inbound_form(live: Live, sender: str, **fields: str) -> dict[str, str]:
    """The form Twilio posts for an inbound SMS; keyword arguments override or add fields."""
    sid = fields.pop("MessageSid", None) or _sid()
    form = {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ToCity": "",
        "FromZip": "94105",
        "SmsSid": sid,
        "FromState": "CA",
        "SmsStatus": "received",
        "FromCity": "SAN FRANCISCO",
        "Body": "Hello there",
        "FromCountry": "US",
        "To": live.settings.default_from or "",
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": live.settings.account_sid,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }
    form.update(fields)
    return form


def _status_form(live: Live, sid: str, status: str, **fields: str) -> dict[str, str]:
    form = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": live.settings.account_sid,
        "From": live.settings.default_from or "",
        "To": "+15551230001",
        "ApiVersion": "2010-04-01",
    }
    form.update(fields)
    return form


def _assert_twiml(answer: requests.Response) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.text == EMPTY_TWIML
    assert answer.headers["Content-Type"].split(";")[0].strip() == "text/xml"


def _assert_nothing_written(live: Live, number: str, sid: str) -> None:
    """No message, job, contact, ledger row or status event for this number or sid."""
    with live.db.read() as s:
        messages = s.scalars(
            select(Message.id).where(or_(Message.sid == sid, Message.contact_number == number))
        ).all()
        jobs = s.scalars(select(Job.id).where(Job.unique_key == f"reply:{sid}")).all()
        contacts = s.scalars(select(Contact.id).where(Contact.number == number)).all()
        opt_outs = s.scalars(select(OptOut.id).where(OptOut.number == number)).all()
        events = s.scalars(select(StatusEvent.id).where(StatusEvent.message_sid == sid)).all()
    assert (messages, jobs, contacts, opt_outs, events) == ([], [], [], [], [])


def _messages(live: Live, number: str) -> list[Message]:
    with live.db.read() as s:
        query = select(Message).where(Message.contact_number == number).order_by(Message.id)
        return list(s.scalars(query))


def _message(live: Live, sid: str) -> Message:
    with live.db.read() as s:
        return s.scalars(select(Message).where(Message.sid == sid)).one()


def _reply_jobs(live: Live, number: str) -> list[Job]:
    """The reply jobs for inbound messages from this number, oldest first."""
    with live.db.read() as s:
        ids = set(
            s.scalars(
                select(Message.id).where(
                    Message.contact_number == number, Message.direction == "inbound"
                )
            )
        )
        jobs = s.scalars(select(Job).where(Job.kind == "reply").order_by(Job.id))
        return [j for j in jobs if j.payload.get("message_id") in ids]


def _reply_keys(live: Live, number: str) -> list[str | None]:
    return [j.unique_key for j in _reply_jobs(live, number)]


def _contact(live: Live, number: str) -> Contact:
    with live.db.read() as s:
        return s.scalars(select(Contact).where(Contact.number == number)).one()


def _opt_outs(live: Live, number: str) -> dict[str, bool]:
    with live.db.read() as s:
        rows = s.scalars(select(OptOut).where(OptOut.number == number))
        return {row.sender: row.opted_out for row in rows}


def _events(live: Live, sid: str) -> list[StatusEvent]:
    with live.db.read() as s:
        query = select(StatusEvent).where(StatusEvent.message_sid == sid)
        return list(s.scalars(query.order_by(StatusEvent.id)))


def _insert_outbound(live: Live, sid: str | None, status: str = "queued") -> int:
    """Write an outbound message as send() would have, without the sandbox's callbacks."""
    with live.db.session() as s:
        message = Message(
            sid=sid,
            direction="outbound",
            our_number=live.settings.default_from,
            contact_number="+15551230001",
            body="Your order shipped",
            status=status,
            source="api",
        )
        s.add(message)
        s.flush()
        return message.id


def _get(live: Live, message_id: int) -> Message:
    with live.db.read() as s:
        return s.get_one(Message, message_id)


# Inbound: storing, answering, deduplicating -------------------------------------------------


def test_signed_inbound_is_stored_with_a_reply_job_and_an_empty_twiml_answer(
    server: Live, number: str
) -> None:
    form = _inbound_form(server, number, Body="Hello there")
    answer = _post(server, INBOUND, form)

    _assert_twiml(answer)
    messages = _messages(server, number)
    assert len(messages) == 1
    message = messages[0]
    assert message.sid == form["MessageSid"]
    assert (message.direction, message.status, message.body) == (
        "inbound",
        "received",
        "Hello there",
    )
    assert message.our_number == server.settings.default_from
    assert message.account_sid == server.settings.account_sid
    assert message.media == []
    jobs = _reply_jobs(server, number)
    assert [(j.kind, j.unique_key, j.status) for j in jobs] == [
        ("reply", f"reply:{form['MessageSid']}", "queued")
    ]
    assert jobs[0].payload == {"message_id": message.id}
    contact = _contact(server, number)
    assert contact.unread_count == 1
    assert contact.last_message_id == message.id


def test_inbound_media_fields_are_stored_on_the_message(server: Live, number: str) -> None:
    base = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media"
    form = _inbound_form(
        server,
        number,
        MessageSid=_sid("MM"),
        Body="look",
        NumMedia="2",
        MediaUrl0=f"{base}/ME1",
        MediaContentType0="image/jpeg",
        MediaUrl1=f"{base}/ME2",
        MediaContentType1="video/mp4",
    )
    _assert_twiml(_post(server, INBOUND, form))

    assert _message(server, form["MessageSid"]).media == [
        {"url": f"{base}/ME1", "content_type": "image/jpeg"},
        {"url": f"{base}/ME2", "content_type": "video/mp4"},
    ]


def test_a_media_only_inbound_without_body_is_stored(server: Live, number: str) -> None:
    form = _inbound_form(
        server, number, MessageSid=_sid("MM"), Body="", NumMedia="1", MediaUrl0="https://x.test/a"
    )
    _assert_twiml(_post(server, INBOUND, form))

    message = _message(server, form["MessageSid"])
    assert message.body == ""
    assert message.media == [{"url": "https://x.test/a", "content_type": ""}]


def test_unknown_extra_fields_from_twilio_are_accepted(server: Live, number: str) -> None:
    form = _inbound_form(server, number, AddOns='{"status":"successful"}', SomethingNew="x")
    _assert_twiml(_post(server, INBOUND, form))
    assert [m.sid for m in _messages(server, number)] == [form["MessageSid"]]


def test_a_long_non_ascii_body_is_stored_intact(server: Live, number: str) -> None:
    form = _inbound_form(server, number, Body="é" * 1600)
    _assert_twiml(_post(server, INBOUND, form))
    assert _message(server, form["MessageSid"]).body == "é" * 1600


def test_the_same_message_sid_twice_is_stored_once_with_one_job(server: Live, number: str) -> None:
    form = _inbound_form(server, number, Body="first try")
    _assert_twiml(_post(server, INBOUND, form))
    _assert_twiml(_post(server, INBOUND, {**form, "Body": "a replayed copy"}))

    assert [(m.sid, m.body) for m in _messages(server, number)] == [
        (form["MessageSid"], "first try")
    ]
    assert _reply_keys(server, number) == [f"reply:{form['MessageSid']}"]
    assert _contact(server, number).unread_count == 1


def test_two_different_inbound_messages_each_get_a_job_and_count_unread(
    server: Live, number: str
) -> None:
    first = _inbound_form(server, number, Body="one")
    second = _inbound_form(server, number, Body="two")
    _assert_twiml(_post(server, INBOUND, first))
    _assert_twiml(_post(server, INBOUND, second))

    assert _reply_keys(server, number) == [
        f"reply:{first['MessageSid']}",
        f"reply:{second['MessageSid']}",
    ]
    assert _contact(server, number).unread_count == 2


# Inbound: signatures ------------------------------------------------------------------------


def _other_token(live: Live, form: dict[str, str]) -> str:
    return str(RequestValidator("0" * 32).compute_signature(live.url + INBOUND, form))


@pytest.mark.parametrize(
    "make_signature",
    [
        pytest.param(lambda live, form: "", id="missing"),
        pytest.param(lambda live, form: "bm90IGEgc2lnbmF0dXJl", id="garbage"),
        pytest.param(lambda live, form: _sign(live, live.url + STATUS, form), id="other-path"),
        pytest.param(
            lambda live, form: _sign(live, "https://evil.example.com" + INBOUND, form),
            id="other-host",
        ),
        pytest.param(
            lambda live, form: _sign(live, live.url + INBOUND + "?x=1", form), id="extra-query"
        ),
        pytest.param(_other_token, id="other-auth-token"),
        pytest.param(
            lambda live, form: _sign(live, live.url + INBOUND, {**form, "Body": "other"}),
            id="other-body",
        ),
        pytest.param(
            lambda live, form: _sign(live, live.url + INBOUND, {**form, "NumMedia": "1"}),
            id="field-dropped-after-signing",
        ),
    ],
)
def test_inbound_without_a_valid_signature_is_refused_and_nothing_is_written(
    server: Live, number: str, make_signature: Callable[[Live, dict[str, str]], str]
) -> None:
    form = _inbound_form(server, number)
    answer = _post(server, INBOUND, form, signature=make_signature(server, form))

    assert answer.status_code == 403, answer.text
    assert "Response" not in answer.text
    _assert_nothing_written(server, number, form["MessageSid"])


def test_signature_checking_switched_off_accepts_unsigned_requests(
    live_factory: Callable[..., Live], number: str
) -> None:
    live = live_factory(TWILIO_VALIDATE_SIGNATURE="false")
    form = _inbound_form(live, number)

    _assert_twiml(_post(live, INBOUND, form, signature=""))
    assert _message(live, form["MessageSid"]).body == "Hello there"
    assert _reply_keys(live, number) == [f"reply:{form['MessageSid']}"]
    status = _status_form(live, _sid(), "sent")
    _assert_twiml(_post(live, STATUS, status, signature="bogus"))
    assert [e.status for e in _events(live, status["MessageSid"])] == ["sent"]


# Inbound: required fields and size ----------------------------------------------------------


@pytest.mark.parametrize("field", ["MessageSid", "From"])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_signed_inbound_missing_a_required_field_is_a_400_and_nothing_is_written(
    server: Live, number: str, field: str, how: str
) -> None:
    form = _inbound_form(server, number)
    sid = form["MessageSid"]
    if how == "absent":
        del form[field]
    else:
        form[field] = ""
    answer = _post(server, INBOUND, form)

    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]["message"]
    _assert_nothing_written(server, number, sid)


@pytest.mark.parametrize("signed", [True, False])
def test_an_inbound_body_over_one_mebibyte_is_a_413(
    server: Live, number: str, signed: bool
) -> None:
    form = _inbound_form(server, number, Body="x" * (1024 * 1024 + 10))
    answer = _post(server, INBOUND, form, signature=None if signed else "")

    assert answer.status_code == 413
    _assert_nothing_written(server, number, form["MessageSid"])


# Inbound: opt-out keywords ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", ["STOP", "stop", " Stop ", "Stop\n", "STOPALL", "UNSUBSCRIBE", "cancel", "End", "QUIT"]
)
def test_opt_out_keyword_records_the_opt_out_and_gets_no_reply(
    server: Live, number: str, body: str
) -> None:
    form = _inbound_form(server, number, Body=body)
    _assert_twiml(_post(server, INBOUND, form))

    assert _opt_outs(server, number) == {server.settings.default_from: True}
    assert _reply_jobs(server, number) == []
    assert _message(server, form["MessageSid"]).body == body  # still shown in the inbox


def test_stop_then_a_normal_text_gets_no_reply(server: Live, number: str) -> None:
    _assert_twiml(_post(server, INBOUND, _inbound_form(server, number, Body="STOP")))
    later = _inbound_form(server, number, Body="are you there?")
    _assert_twiml(_post(server, INBOUND, later))

    assert _message(server, later["MessageSid"]).body == "are you there?"
    assert _reply_jobs(server, number) == []
    assert _opt_outs(server, number) == {server.settings.default_from: True}


def test_opt_out_through_a_messaging_service_covers_number_and_service(
    server: Live, number: str
) -> None:
    form = _inbound_form(server, number, Body="STOP", MessagingServiceSid=SERVICE_SID)
    _assert_twiml(_post(server, INBOUND, form))

    assert _opt_outs(server, number) == {server.settings.default_from: True, SERVICE_SID: True}
    assert _reply_jobs(server, number) == []


def test_opt_out_is_per_pair_of_our_number_and_theirs(server: Live, number: str) -> None:
    other_ours = "+15005550009"
    _assert_twiml(_post(server, INBOUND, _inbound_form(server, number, Body="STOP", To=other_ours)))
    assert _opt_outs(server, number) == {other_ours: True}

    # The same person texting our default number is still answered there.
    hello = _inbound_form(server, number, Body="hi again")
    _assert_twiml(_post(server, INBOUND, hello))
    assert _reply_keys(server, number) == [f"reply:{hello['MessageSid']}"]


@pytest.mark.parametrize("opt_in", ["START", "start", " Yes ", "UNSTOP"])
def test_opt_in_keyword_after_stop_opts_back_in_and_replies_resume(
    server: Live, number: str, opt_in: str
) -> None:
    _assert_twiml(_post(server, INBOUND, _inbound_form(server, number, Body="STOP")))
    assert _opt_outs(server, number) == {server.settings.default_from: True}

    _assert_twiml(_post(server, INBOUND, _inbound_form(server, number, Body=opt_in)))
    assert _opt_outs(server, number) == {server.settings.default_from: False}
    assert _reply_jobs(server, number) == []  # the keyword itself is not answered

    back = _inbound_form(server, number, Body="hello again")
    _assert_twiml(_post(server, INBOUND, back))
    assert _reply_keys(server, number) == [f"reply:{back['MessageSid']}"]


def test_an_opted_out_number_cannot_be_sent_to_from_the_api(server: Live, number: str) -> None:
    _assert_twiml(_post(server, INBOUND, _inbound_form(server, number, Body="STOP")))

    answer = server.api("POST", "/api/send-message", json={"to": number, "body": "buy now"})
    assert answer.status_code == 409, answer.text
    assert [m.direction for m in _messages(server, number)] == ["inbound"]


@pytest.mark.parametrize("body", ["HELP", "help", " Info "])
def test_help_keyword_gets_no_reply_and_leaves_the_ledger_alone(
    server: Live, number: str, body: str
) -> None:
    _assert_twiml(_post(server, INBOUND, _inbound_form(server, number, Body=body)))
    assert _opt_outs(server, number) == {}
    assert _reply_jobs(server, number) == []

    # An opted-out number asking for help stays opted out.
    _assert_twiml(_post(server, INBOUND, _inbound_form(server, number, Body="STOP")))
    _assert_twiml(_post(server, INBOUND, _inbound_form(server, number, Body=body)))
    assert _opt_outs(server, number) == {server.settings.default_from: True}
    assert _reply_jobs(server, number) == []


@pytest.mark.parametrize("body", ["STOP please", "please stop", "stop!!", "STARTED", "helpful"])
def test_a_keyword_inside_a_sentence_is_an_ordinary_message(
    server: Live, number: str, body: str
) -> None:
    form = _inbound_form(server, number, Body=body)
    _assert_twiml(_post(server, INBOUND, form))

    assert _opt_outs(server, number) == {}
    assert _reply_keys(server, number) == [f"reply:{form['MessageSid']}"]


def test_advanced_opt_out_type_from_twilio_is_honoured(server: Live, number: str) -> None:
    """With Advanced Opt-Out, Twilio flags a custom keyword (here French) with OptOutType."""
    form = _inbound_form(
        server, number, Body="ARRET", MessagingServiceSid=SERVICE_SID, OptOutType="STOP"
    )
    _assert_twiml(_post(server, INBOUND, form))

    assert _reply_jobs(server, number) == []
    assert _opt_outs(server, number).get(SERVICE_SID) is True


# Inbound: senders nobody answers ------------------------------------------------------------


def test_inbound_from_our_own_number_is_stored_without_a_reply(server: Live) -> None:
    ours = server.settings.default_from or ""
    form = _inbound_form(server, ours, Body="loop?")
    _assert_twiml(_post(server, INBOUND, form))

    assert _message(server, form["MessageSid"]).contact_number == ours
    assert _reply_jobs(server, ours) == []


@pytest.mark.parametrize("sender", ["alice", "12345", "+1555", "5551230001"])
def test_inbound_from_a_non_e164_sender_is_stored_without_a_reply(
    server: Live, sender: str
) -> None:
    form = _inbound_form(server, sender, Body="hello")
    _assert_twiml(_post(server, INBOUND, form))

    message = _message(server, form["MessageSid"])
    assert (message.contact_number, message.body) == (sender, "hello")
    with server.db.read() as s:
        job = s.scalar(select(Job.id).where(Job.unique_key == f"reply:{form['MessageSid']}"))
    assert job is None
    assert _reply_jobs(server, sender) == []


# Inbound: the public URL behind proxies -----------------------------------------------------


def test_public_base_url_is_the_url_signatures_are_checked_against(
    public_server: Live, number: str
) -> None:
    good = _inbound_form(public_server, number)
    _assert_twiml(_post(public_server, INBOUND, good, signed_url=PUBLIC + INBOUND))
    assert _message(public_server, good["MessageSid"]).body == "Hello there"

    local = _inbound_form(public_server, number)
    answer = _post(public_server, INBOUND, local, signed_url=public_server.url + INBOUND)
    assert answer.status_code == 403
    assert [m.sid for m in _messages(public_server, number)] == [good["MessageSid"]]


def test_public_base_url_keeps_the_raw_query_string(public_server: Live, number: str) -> None:
    path = INBOUND + "?tenant=a%2Fb&x=%C3%A9"
    form = _inbound_form(public_server, number)
    _assert_twiml(_post(public_server, path, form, signed_url=PUBLIC + path))
    assert [m.sid for m in _messages(public_server, number)] == [form["MessageSid"]]


def test_forwarded_headers_are_ignored_without_trusted_proxies(server: Live, number: str) -> None:
    form = _inbound_form(server, number)
    answer = _post(server, INBOUND, form, signed_url=PUBLIC + INBOUND, headers=FORWARDED)

    assert answer.status_code == 403
    _assert_nothing_written(server, number, form["MessageSid"])


def test_trusted_proxy_rebuilds_the_public_url_from_forwarded_headers(
    proxied_server: Live, number: str
) -> None:
    live = proxied_server
    form = _inbound_form(live, number)
    _assert_twiml(_post(live, INBOUND, form, signed_url=PUBLIC + INBOUND, headers=FORWARDED))
    assert _message(live, form["MessageSid"]).body == "Hello there"

    # Signed for the address the proxy forwarded to, not the one Twilio called: refused.
    other = _inbound_form(live, number)
    answer = _post(live, INBOUND, other, signed_url=live.url + INBOUND, headers=FORWARDED)
    assert answer.status_code == 403
    assert [m.sid for m in _messages(live, number)] == [form["MessageSid"]]


def test_trusted_proxy_with_a_path_prefix(proxied_server: Live, number: str) -> None:
    headers = {**FORWARDED, "X-Forwarded-Prefix": "/sms"}
    form = _inbound_form(proxied_server, number)
    answer = _post(
        proxied_server, INBOUND, form, signed_url=PUBLIC + "/sms" + INBOUND, headers=headers
    )
    _assert_twiml(answer)
    assert [m.sid for m in _messages(proxied_server, number)] == [form["MessageSid"]]


def test_trusted_proxy_keeps_the_raw_query_string(proxied_server: Live, number: str) -> None:
    """The query string is signed exactly as sent: it must not be decoded or re-encoded."""
    path = INBOUND + "?tenant=a%2Fb&x=%C3%A9"
    form = _inbound_form(proxied_server, number)
    answer = _post(proxied_server, path, form, signed_url=PUBLIC + path, headers=FORWARDED)
    _assert_twiml(answer)
    assert [m.sid for m in _messages(proxied_server, number)] == [form["MessageSid"]]


# Status callbacks ---------------------------------------------------------------------------


def test_out_of_order_callbacks_never_move_the_status_backwards(server: Live) -> None:
    sid = _sid()
    message_id = _insert_outbound(server, sid)

    _assert_twiml(_post(server, STATUS, _status_form(server, sid, "delivered")))
    _assert_twiml(_post(server, STATUS, _status_form(server, sid, "sent")))
    _assert_twiml(_post(server, STATUS, _status_form(server, sid, "sending")))

    assert _message(server, sid).status == "delivered"
    events = _events(server, sid)
    assert [(e.status, e.message_id) for e in events] == [
        ("delivered", message_id),
        ("sent", message_id),
        ("sending", message_id),
    ]
    assert events[0].payload["MessageStatus"] == "delivered"
    assert events[0].payload["MessageSid"] == sid


def test_callbacks_in_order_advance_up_to_read(server: Live) -> None:
    sid = _sid()
    _insert_outbound(server, sid)
    seen = []
    for status in ("sending", "sent", "delivered", "read"):
        _assert_twiml(_post(server, STATUS, _status_form(server, sid, status)))
        seen.append(_message(server, sid).status)
    assert seen == ["sending", "sent", "delivered", "read"]


def test_callbacks_handled_at_once_never_move_a_message_backwards(server: Live) -> None:
    # On PostgreSQL two callbacks can be handled at the same moment by two threads: whichever
    # commits last must not put back the earlier status.
    sids = [_sid() for _ in range(12)]
    for sid in sids:
        _insert_outbound(server, sid, status="queued")

    def post(sid: str, status: str) -> None:
        _assert_twiml(_post(server, STATUS, _status_form(server, sid, status)))

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(post, sid, status) for sid in sids for status in ("sent", "delivered")
        ]
        for future in futures:
            future.result()
    assert {sid: _message(server, sid).status for sid in sids} == dict.fromkeys(sids, "delivered")


def test_a_repeated_status_callback_adds_nothing(server: Live) -> None:
    sid = _sid()
    _insert_outbound(server, sid, status="queued")
    for _ in range(2):  # Twilio retried it, or the spool replayed it
        _assert_twiml(_post(server, STATUS, _status_form(server, sid, "sent")))
    _assert_twiml(_post(server, STATUS, _status_form(server, sid, "delivered")))
    _assert_twiml(_post(server, STATUS, _status_form(server, sid, "sent")))
    assert [e.status for e in _events(server, sid)] == ["sent", "delivered"]
    assert _message(server, sid).status == "delivered"


def test_undelivered_callback_stores_the_error_code(server: Live) -> None:
    sid = _sid()
    _insert_outbound(server, sid, status="sent")
    _assert_twiml(
        _post(server, STATUS, _status_form(server, sid, "undelivered", ErrorCode="30003"))
    )

    message = _message(server, sid)
    assert (message.status, message.error_code) == ("undelivered", 30003)
    assert message.error_message and "unreachable" in message.error_message
    assert [(e.status, e.error_code) for e in _events(server, sid)] == [("undelivered", 30003)]


def test_a_failed_callback_after_delivered_is_kept_but_changes_nothing(server: Live) -> None:
    sid = _sid()
    _insert_outbound(server, sid, status="delivered")
    _assert_twiml(_post(server, STATUS, _status_form(server, sid, "failed", ErrorCode="30008")))

    message = _message(server, sid)
    assert (message.status, message.error_code) == ("delivered", None)
    assert [(e.status, e.error_code) for e in _events(server, sid)] == [("failed", 30008)]


def test_a_status_given_only_as_sms_status_is_accepted(server: Live) -> None:
    sid = _sid()
    _insert_outbound(server, sid)
    form = _status_form(server, sid, "sent")
    del form["MessageStatus"]
    _assert_twiml(_post(server, STATUS, form))
    assert _message(server, sid).status == "sent"


def test_a_callback_for_an_unknown_sid_is_kept_unattached(server: Live) -> None:
    sid = _sid()
    _assert_twiml(_post(server, STATUS, _status_form(server, sid, "delivered")))

    assert [(e.status, e.message_id) for e in _events(server, sid)] == [("delivered", None)]
    with server.db.read() as s:
        assert s.scalar(select(Message.id).where(Message.sid == sid)) is None


def test_an_early_callback_is_attached_when_the_send_learns_its_sid(
    server: Live, number: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = _sid()
    monkeypatch.setattr(sandbox_state, "new_sid", lambda prefix: sid)
    # The "delivered" callback beats the answer to the create call.
    _assert_twiml(_post(server, STATUS, _status_form(server, sid, "delivered", To=number)))
    assert [e.message_id for e in _events(server, sid)] == [None]

    answer = server.api("POST", "/api/send-message", json={"to": number, "body": "Hi"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["message"]["sid"] == sid

    message = _message(server, sid)
    assert message.status == "delivered"
    assert _events(server, sid)[0].message_id == message.id
    # The sandbox's own callbacks (sent, delivered) land later and move nothing backwards;
    # its "delivered" repeats the one kept already and adds nothing.
    events = wait_for(lambda: (e := _events(server, sid)) and len(e) == 2 and e)
    settle_sandbox_callbacks()
    events = _events(server, sid)
    assert [e.status for e in events] == ["delivered", "sent"]
    assert {e.message_id for e in events} == {message.id}
    assert _message(server, sid).status == "delivered"


def test_the_mid_hint_sets_the_sid_of_a_message_whose_create_answer_was_lost(
    server: Live,
) -> None:
    message_id = _insert_outbound(server, None, status="pending")
    sid = _sid()
    _assert_twiml(_post(server, f"{STATUS}?mid={message_id}", _status_form(server, sid, "sent")))

    message = _get(server, message_id)
    assert (message.sid, message.status) == (sid, "sent")
    assert [(e.status, e.message_id) for e in _events(server, sid)] == [("sent", message_id)]

    # Later callbacks find it by sid.
    _assert_twiml(_post(server, STATUS, _status_form(server, sid, "delivered")))
    assert _get(server, message_id).status == "delivered"


def test_the_mid_hint_never_reassigns_a_message_that_has_another_sid(server: Live) -> None:
    own_sid = _sid()
    message_id = _insert_outbound(server, own_sid)
    stranger = _sid()
    path = f"{STATUS}?mid={message_id}"
    _assert_twiml(_post(server, path, _status_form(server, stranger, "delivered")))

    message = _get(server, message_id)
    assert (message.sid, message.status) == (own_sid, "queued")
    assert [e.message_id for e in _events(server, stranger)] == [None]


@pytest.mark.parametrize("mid", ["999999999", "abc", "-1", ""])
def test_a_useless_mid_hint_is_harmless(server: Live, mid: str) -> None:
    sid = _sid()
    _assert_twiml(_post(server, f"{STATUS}?mid={mid}", _status_form(server, sid, "sent")))
    assert [(e.status, e.message_id) for e in _events(server, sid)] == [("sent", None)]


def test_a_status_callback_signed_without_its_query_string_is_refused(server: Live) -> None:
    message_id = _insert_outbound(server, None, status="pending")
    sid = _sid()
    path = f"{STATUS}?mid={message_id}"
    answer = _post(server, path, _status_form(server, sid, "sent"), signed_url=server.url + STATUS)

    assert answer.status_code == 403
    assert _events(server, sid) == []
    assert (_get(server, message_id).sid, _get(server, message_id).status) == (None, "pending")


def test_a_sandbox_send_ends_delivered_through_signed_callbacks(server: Live, number: str) -> None:
    answer = server.api("POST", "/api/send-message", json={"to": number, "body": "Hi from API"})
    assert answer.status_code == 201, answer.text
    sid = answer.json()["message"]["sid"]

    wait_for(lambda: _message(server, sid).status == "delivered")
    assert [e.status for e in _events(server, sid)] == ["sent", "delivered"]


def test_a_sandbox_send_to_an_unreachable_number_ends_undelivered(server: Live) -> None:
    to = f"+1555{random.randrange(10**3):03d}0003"  # the sandbox fails numbers ending in 0003
    answer = server.api("POST", "/api/send-message", json={"to": to, "body": "anyone?"})
    assert answer.status_code == 201, answer.text
    sid = answer.json()["message"]["sid"]

    message = wait_for(lambda: (m := _message(server, sid)).status == "undelivered" and m)
    assert message.error_code == 30003
    assert [(e.status, e.error_code) for e in _events(server, sid)] == [
        ("sent", None),
        ("undelivered", 30003),
    ]


@pytest.mark.parametrize("missing", ["MessageSid", "status"])
def test_a_status_callback_missing_a_field_is_a_400(server: Live, missing: str) -> None:
    sid = _sid()
    _insert_outbound(server, sid)
    form = _status_form(server, sid, "delivered")
    if missing == "MessageSid":
        del form["MessageSid"]
    else:
        del form["MessageStatus"], form["SmsStatus"]
    answer = _post(server, STATUS, form)

    assert answer.status_code == 400, answer.text
    assert _events(server, sid) == []
    assert _message(server, sid).status == "queued"


@pytest.mark.parametrize("signature", ["", "d3Jvbmc=", "other-path"])
def test_a_status_callback_with_a_bad_signature_is_refused(server: Live, signature: str) -> None:
    sid = _sid()
    _insert_outbound(server, sid)
    form = _status_form(server, sid, "delivered")
    if signature == "other-path":
        signature = _sign(server, server.url + INBOUND, form)
    answer = _post(server, STATUS, form, signature=signature)

    assert answer.status_code == 403
    assert _events(server, sid) == []
    assert _message(server, sid).status == "queued"


def test_a_status_callback_over_one_mebibyte_is_a_413(server: Live) -> None:
    sid = _sid()
    _insert_outbound(server, sid)
    form = _status_form(server, sid, "delivered", Padding="x" * (1024 * 1024 + 10))
    answer = _post(server, STATUS, form)

    assert answer.status_code == 413
    assert _events(server, sid) == []
    assert _message(server, sid).status == "queued"
