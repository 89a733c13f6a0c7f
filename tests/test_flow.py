"""End to end in sandbox mode: a simulated text is stored, answered, and delivered."""

from __future__ import annotations

from support import PHONE, Live, wait_for


def _thread(live: Live, number: str = PHONE) -> list[dict]:
    answer = live.api("GET", f"/api/conversations/{number}")
    assert answer.status_code == 200, answer.text
    return answer.json()["messages"]


def test_simulated_text_shows_up_and_gets_the_echo_reply_delivered(live: Live) -> None:
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": "Hello there"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["webhook_status"] == 200

    conversations = live.api("GET", "/api/conversations").json()["conversations"]
    assert [c["participant"] for c in conversations] == [PHONE]
    assert conversations[0]["unread_count"] == 1

    assert live.run_jobs() == 1
    messages = wait_for(lambda: (m := _thread(live)) and m[-1]["status"] == "delivered" and m)
    assert [(m["direction"], m["body"]) for m in messages] == [
        ("inbound", "Hello there"),
        ("outbound", "Echo: Hello there"),
    ]
    reply = messages[-1]
    assert reply["reply_to_sid"] == messages[0]["sid"]
    assert reply["source"] == "engine"


def test_send_message_ends_delivered_through_sandbox_callbacks(live: Live) -> None:
    answer = live.api("POST", "/api/send-message", json={"to": PHONE, "body": "Hi from the API"})
    assert answer.status_code == 201, answer.text
    sent = answer.json()["message"]
    assert sent["sid"].startswith("SM")
    assert sent["status"] in ("queued", "sent", "delivered")

    detail = wait_for(
        lambda: (
            (d := live.api("GET", f"/api/messages/{sent['sid']}").json()["message"])
            and d["status"] == "delivered"
            and d
        )
    )
    assert [e["status"] for e in detail["events"]] == ["sent", "delivered"]
    # The sandbox's own record agrees, read through its Twilio-compatible list endpoint.
    remote = live.api("GET", "/api/messages/remote", params={"to": PHONE}).json()["messages"]
    assert [(m["sid"], m["status"], m["body"]) for m in remote] == [
        (sent["sid"], "delivered", "Hi from the API")
    ]
