"""TwilioGateway: the real twilio SDK against the built-in sandbox over HTTP."""

from __future__ import annotations

import re
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from support import PHONE, Live, make_settings, wait_for
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import ImmutableMultiDict, MultiDict

from twilio_chat.sandbox import get_sandbox
from twilio_chat.twilio.gateway import TwilioError, TwilioGateway, get_gateway

FROM = "+15005550006"
SID_RE = re.compile(r"^SM[0-9a-f]{32}$")


def _callback(live: Live) -> str:
    return f"{live.url}/twilio/status"


def _send(live: Live, to: str = PHONE, body: str = "Hello") -> str:
    remote = get_gateway(live.app).send(
        to=to, from_=FROM, body=body, status_callback=_callback(live)
    )
    return remote.sid


def _assert_clean(err: TwilioError, live: Live) -> None:
    """A gateway error is fit to show a user: no colour codes, no credentials."""
    text = str(err)
    assert text == err.message
    assert "\x1b" not in text
    assert live.settings.auth_token not in text
    assert text.strip()


def test_send_returns_what_twilio_answered(live: Live) -> None:
    remote = get_gateway(live.app).send(
        to=PHONE, from_=FROM, body="Hello from the SDK", status_callback=_callback(live)
    )
    assert SID_RE.match(remote.sid)
    assert remote.account_sid == live.settings.account_sid
    assert (remote.from_, remote.to, remote.body) == (FROM, PHONE, "Hello from the SDK")
    assert remote.status == "queued"
    assert remote.direction == "outbound-api"
    assert remote.num_segments == 1
    assert remote.num_media == 0
    assert remote.error_code is None
    assert remote.date_created is not None
    assert remote.date_created.tzinfo is not None


def test_send_with_media_makes_an_mms(live: Live) -> None:
    remote = get_gateway(live.app).send(
        to=PHONE,
        from_=FROM,
        media_urls=["https://example.com/a.png", "https://example.com/b.jpg"],
        status_callback=_callback(live),
    )
    assert remote.sid.startswith("MM")
    assert remote.num_media == 2
    assert remote.body == ""


def test_long_body_is_counted_in_segments(live: Live) -> None:
    remote = get_gateway(live.app).send(
        to=PHONE, from_=FROM, body="a" * 161, status_callback=_callback(live)
    )
    assert remote.num_segments == 2


def test_fetch_follows_the_status_to_delivered(live: Live) -> None:
    gw = get_gateway(live.app)
    sid = _send(live)
    fetched = wait_for(lambda: (m := gw.fetch(sid)).status == "delivered" and m)
    assert fetched.sid == sid
    assert fetched.body == "Hello"
    assert fetched.date_sent is not None


def test_fetch_unknown_sid_is_not_found(live: Live) -> None:
    with pytest.raises(TwilioError) as info:
        get_gateway(live.app).fetch("SM" + "0" * 32)
    err = info.value
    assert (err.code, err.status) == (20404, 404)
    assert err.not_found
    assert not err.retryable
    _assert_clean(err, live)


def test_refused_send_raises_twilio_code_and_is_not_retryable(live: Live) -> None:
    gw = get_gateway(live.app)
    for to, body, code in [
        ("12345", "Hi", 21211),
        ("+1555", "Hi", 21211),
        (PHONE, "x" * 1601, 21617),
    ]:
        with pytest.raises(TwilioError) as info:
            gw.send(to=to, from_=FROM, body=body, status_callback=_callback(live))
        err = info.value
        assert (err.code, err.status) == (code, 400)
        assert not err.retryable
        assert not err.not_found
        _assert_clean(err, live)


def test_send_without_body_media_or_content_is_21602(live: Live) -> None:
    with pytest.raises(TwilioError) as info:
        get_gateway(live.app).send(to=PHONE, from_=FROM, status_callback=_callback(live))
    assert info.value.code == 21602
    assert not info.value.retryable


def test_send_after_stop_is_21610_until_start(live: Live) -> None:
    gw = get_gateway(live.app)
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "STOP"})
    assert answer.status_code == 201, answer.text

    with pytest.raises(TwilioError) as info:
        _send(live)
    err = info.value
    assert (err.code, err.status) == (21610, 400)
    assert not err.retryable
    _assert_clean(err, live)
    # Only that handset opted out.
    assert SID_RE.match(_send(live, to="+15551230002"))

    answer = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "start"})
    assert answer.status_code == 201, answer.text
    assert SID_RE.match(gw.send(to=PHONE, from_=FROM, body="Back", status_callback="").sid)


def test_stop_with_extra_words_is_not_an_opt_out(live: Live) -> None:
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "stop please"})
    assert answer.status_code == 201, answer.text
    assert SID_RE.match(_send(live))


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (500, 20500), (503, 20503)])
def test_injected_server_faults_are_retryable(live: Live, status: int, code: int) -> None:
    get_sandbox(live.app).inject_fault(status)
    with pytest.raises(TwilioError) as info:
        _send(live)
    err = info.value
    assert (err.status, err.code) == (status, code)
    assert err.retryable
    assert not err.not_found
    _assert_clean(err, live)


def test_an_injected_fault_is_used_up(live: Live) -> None:
    get_sandbox(live.app).inject_fault(429)
    with pytest.raises(TwilioError):
        _send(live)
    assert SID_RE.match(_send(live))


def test_faults_endpoint_injects_count_faults(live: Live) -> None:
    sid = live.settings.account_sid
    answer = requests.post(
        f"{live.url}/sandbox/twilio/2010-04-01/Accounts/{sid}/Faults.json",
        data={"Status": "500", "Count": "2"},
        auth=(sid, live.settings.auth_token),
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    for _ in range(2):
        with pytest.raises(TwilioError) as info:
            _send(live)
        assert info.value.status == 500
        assert info.value.retryable
    assert SID_RE.match(_send(live))


def test_faults_endpoint_refuses_other_statuses(live: Live) -> None:
    sid = live.settings.account_sid
    answer = requests.post(
        f"{live.url}/sandbox/twilio/2010-04-01/Accounts/{sid}/Faults.json",
        data={"Status": "404"},
        auth=(sid, live.settings.auth_token),
        timeout=10,
    )
    assert answer.status_code == 400
    assert SID_RE.match(_send(live))


def test_wrong_credentials_are_20003_and_never_echo_the_token(live: Live, db_path: Path) -> None:
    bad_token = "0123456789abcdef" * 2
    settings = make_settings(
        db_path,
        TWILIO_SANDBOX="true",
        TWILIO_ACCOUNT_SID=live.settings.account_sid,
        TWILIO_AUTH_TOKEN=bad_token,
        TWILIO_API_BASE_URL=f"{live.url}/sandbox/twilio",
    )
    with pytest.raises(TwilioError) as info:
        TwilioGateway(settings).send(to=PHONE, from_=FROM, body="Hi", status_callback="")
    err = info.value
    assert (err.code, err.status) == (20003, 401)
    assert not err.retryable
    assert bad_token not in err.message
    _assert_clean(err, live)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_error_is_retryable_and_shows_no_url_or_credentials(db_path: Path) -> None:
    port = _closed_port()
    settings = make_settings(db_path, TWILIO_API_BASE_URL=f"http://127.0.0.1:{port}/sandbox/twilio")
    gw = TwilioGateway(settings)
    calls = [
        lambda: gw.send(to=PHONE, from_=FROM, body="Hi", status_callback=""),
        lambda: gw.fetch("SM" + "1" * 32),
        lambda: list(gw.iter_messages(limit=1)),
    ]
    for call in calls:
        with pytest.raises(TwilioError) as info:
            call()
        err = info.value
        assert err.status is None
        assert err.code is None
        assert err.retryable
        assert not err.not_found
        for secret in (str(port), "127.0.0.1", settings.account_sid, settings.auth_token):
            assert secret not in err.message
        assert "\x1b" not in err.message


def test_iter_messages_lists_newest_first_with_filters(live: Live) -> None:
    gw = get_gateway(live.app)
    first = _send(live, to="+15551230002", body="one")
    second = _send(live, to=PHONE, body="two")
    third = _send(live, to="+15551230002", body="three")

    assert [m.sid for m in gw.iter_messages()] == [third, second, first]
    assert [m.sid for m in gw.iter_messages(to="+15551230002")] == [third, first]
    assert [m.sid for m in gw.iter_messages(from_=FROM, to=PHONE)] == [second]
    assert list(gw.iter_messages(from_="+15551239999")) == []


def test_iter_messages_pages_through_the_sdk(live: Live) -> None:
    gw = get_gateway(live.app)
    sids = [_send(live, body=f"n{i}") for i in range(6)]
    got = [m.sid for m in gw.iter_messages(page_size=2, limit=5)]
    assert len(got) == 5
    assert len(set(got)) == 5
    assert got == sids[::-1][:5]
    everything = [m.sid for m in gw.iter_messages(page_size=2)]
    assert everything == sids[::-1]


def test_iter_messages_filters_by_date_sent(live: Live) -> None:
    gw = get_gateway(live.app)
    sid = _send(live)
    sent = wait_for(lambda: gw.fetch(sid).date_sent)
    day = sent.replace(hour=0, minute=0, second=0, microsecond=0)
    assert [m.sid for m in gw.iter_messages(date_sent=day)] == [sid]
    assert list(gw.iter_messages(date_sent=day.replace(year=day.year - 1))) == []
    yesterday, tomorrow = sent - timedelta(days=1), sent + timedelta(days=1)
    assert [m.sid for m in gw.iter_messages(date_sent_after=yesterday)] == [sid]
    assert [m.sid for m in gw.iter_messages(date_sent_before=tomorrow)] == [sid]
    assert list(gw.iter_messages(date_sent_after=tomorrow)) == []
    assert list(gw.iter_messages(date_sent_before=yesterday)) == []


def test_redact_erases_the_body(live: Live) -> None:
    gw = get_gateway(live.app)
    sid = _send(live, body="secret plans")
    redacted = gw.redact(sid)
    assert redacted.sid == sid
    assert redacted.body == ""
    assert gw.fetch(sid).body == ""


def test_delete_removes_the_message(live: Live) -> None:
    gw = get_gateway(live.app)
    sid = _send(live)
    gw.delete(sid)
    with pytest.raises(TwilioError) as info:
        gw.fetch(sid)
    assert info.value.not_found
    with pytest.raises(TwilioError) as info:
        gw.delete(sid)
    assert info.value.status == 404


def test_signatures_made_by_the_gateway_validate(live: Live) -> None:
    gw = get_gateway(live.app)
    url = f"{live.url}/twilio/status?mid=7"
    form = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "sent"}
    signature = gw.sign(url, form)
    assert gw.validate_signature(url, form, signature)
    assert not gw.validate_signature(url, {**form, "MessageStatus": "delivered"}, signature)
    assert not gw.validate_signature(f"{live.url}/twilio/status?mid=8", form, signature)


def test_signatures_cover_every_value_of_a_repeated_parameter(live: Live) -> None:
    gw = get_gateway(live.app)
    url = f"{live.url}/twilio/inbound"
    form = MultiDict([("MessageSid", "SM" + "3" * 32), ("MediaUrl0", "a"), ("MediaUrl0", "b")])
    # What Twilio signs: the URL, then each name with each of its values, names sorted.
    signature = RequestValidator(live.settings.auth_token).compute_signature(url, form)
    assert gw.validate_signature(url, form, signature)
    assert gw.validate_signature(url, ImmutableMultiDict(form), signature)  # a request's form
    one_value = MultiDict([("MessageSid", "SM" + "3" * 32), ("MediaUrl0", "a")])
    assert not gw.validate_signature(url, one_value, signature)
    assert not gw.validate_signature(url, form.to_dict(), signature)  # first values only
