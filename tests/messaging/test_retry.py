"""Sending a failed message again: a new message, the same text, every rule of a send."""

from __future__ import annotations

import time

from support import Live, sandbox_sends

FAILING = "+15551230007"  # the sandbox fails numbers ending 0007: undelivered, 30007


def failed_sid(live: Live, body: str = "will be filtered") -> str:
    """Send to the failing number and wait for its undelivered callback."""
    sent = live.api("POST", "/api/send-message", json={"to": FAILING, "body": body}).json()
    sid = sent["message"]["sid"]
    for _ in range(100):
        answer = live.api("GET", f"/api/messages/{sid}").json()
        if answer["message"]["status"] in ("failed", "undelivered"):
            return str(sid)
        time.sleep(0.05)
    raise AssertionError(f"the message never failed: {answer}")


def test_a_failed_message_is_sent_again_as_a_new_one(live: Live) -> None:
    sid = failed_sid(live)
    again = live.api("POST", f"/api/messages/{sid}/retry")
    assert again.status_code == 201, again.text
    new = again.json()["message"]
    assert new["sid"] != sid and (new["to"], new["body"]) == (FAILING, "will be filtered")
    assert [s["body"] for s in sandbox_sends(live, FAILING)] == ["will be filtered"] * 2
    events = live.api("GET", "/api/audit").json()["events"]
    assert events[0]["detail"] == {"sid": new["sid"], "source": "api", "retry_of": sid}


def test_only_a_failed_message_of_ours_can_be_sent_again(live: Live) -> None:
    sent = live.api("POST", "/api/send-message", json={"to": "+15557654321", "body": "fine"})
    sid = sent.json()["message"]["sid"]
    answer = live.api("POST", f"/api/messages/{sid}/retry")
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "sid"
    unknown = live.api("POST", "/api/messages/SM" + "f" * 32 + "/retry")
    assert unknown.status_code == 404


def test_a_retry_to_someone_who_opted_out_is_refused(live: Live) -> None:
    sid = failed_sid(live)
    live.api("POST", "/api/sandbox/simulate", json={"from": FAILING, "body": "STOP"})
    answer = live.api("POST", f"/api/messages/{sid}/retry")
    assert answer.status_code == 409, answer.text
    assert len(sandbox_sends(live, FAILING)) == 1
