"""Health and readiness probes, Prometheus metrics, request ids, and logs without secrets."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from support import PHONE, Live, enable_ai, logged_in, make_settings, post_inbound, text_app
from support.fake_openai import API_KEY, FakeOpenAI

from twilio_chat import create_app
from twilio_chat.jobs.worker import Worker
from twilio_chat.telemetry import logs


def test_healthz_answers_without_login(live: Live) -> None:
    answer = requests.get(live.url + "/healthz", timeout=10)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


def test_readyz_needs_a_worker_heartbeat(live: Live) -> None:
    answer = requests.get(live.url + "/readyz", timeout=10)
    assert answer.status_code == 503
    assert answer.json()["checks"]["database"] == "ok"
    assert answer.json()["checks"]["migrations"] == "ok"
    assert "heartbeat" in answer.json()["checks"]["worker"]
    Worker(live.app).heartbeat()
    ready = requests.get(live.url + "/readyz", timeout=10)
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")


def test_readyz_says_when_the_database_is_not_migrated(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "empty.db"))
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.json is not None and answer.json["status"] == "not ready"


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_need_a_token_and_count_what_happens(live: Live) -> None:
    anonymous = requests.get(live.url + "/metrics", allow_redirects=False, timeout=10)
    assert anonymous.status_code == 401
    before = live.api("GET", "/metrics").text
    post_inbound(live, PHONE, "count me")
    live.run_jobs()
    live.api("POST", "/api/send-message", json={"to": "+15551230000", "body": "will fail"})
    answer = live.api("GET", "/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    text = answer.text
    stored = _metric(text, "twilio_chat_webhooks_total", kind="inbound", outcome="stored")
    assert (
        stored
        == _metric(before, "twilio_chat_webhooks_total", kind="inbound", outcome="stored") + 1
    )
    assert _metric(text, "twilio_chat_sends_total", status="queued") >= 2
    assert _metric(text, "twilio_chat_twilio_request_seconds_count", operation="send") >= 2
    assert "twilio_chat_jobs_waiting" in text
    assert "twilio_chat_oldest_job_age_seconds" in text
    assert "twilio_chat_openai_request_seconds_bucket" in text


def test_request_ids_are_echoed_or_made(live: Live) -> None:
    made = live.api("GET", "/api/messages")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    given = live.api("GET", "/api/messages", headers={"X-Request-ID": "trace-123"})
    assert given.headers["X-Request-ID"] == "trace-123"


def test_a_full_run_logs_no_secret(
    live_factory: Any, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    live = live_factory(ADMIN_PASSWORD="admin-password-123")
    session = logged_in(live)  # the panel login posts the password
    enable_ai(live, fake_openai)
    text_app(live, "hello AI")  # the key goes to the OpenAI-compatible server
    fake_openai.status = 500
    text_app(live, "make it fail")  # a failure is logged
    live.api("GET", "/api/messages", token="tc_" + "x" * 40)  # a wrong bearer token
    live.api("POST", "/api/send-message", json={"to": PHONE, "body": "by hand"})
    logging.getLogger("twilio_chat.test").warning(
        "a careless line with %s and %s", live.settings.auth_token, live.token
    )
    session.close()
    secrets = [
        live.settings.auth_token,
        live.token,
        API_KEY,
        "admin-password",
        "admin-password-123",
        live.settings.secret_key.get_secret_value() if live.settings.secret_key else "",
    ]
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "[redacted]" in text  # the careless line was caught
    for secret in secrets:
        assert secret and secret not in text, "a secret reached the logs"


def test_production_logs_are_json_lines_with_a_request_id(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(db_path, APP_ENV="production")
    app = create_app(settings)
    logs.setup_logging(settings)
    try:
        with app.test_request_context("/x", headers={"X-Request-ID": "req-42"}):
            app.preprocess_request()
            logging.getLogger("twilio_chat.test").info("hello %s", settings.auth_token)
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["message"] == "hello [redacted]"
        assert record["request_id"] == "req-42"
        assert record["level"] == "INFO"
    finally:
        logs.remove_handlers()
