"""The REST API against its own OpenAPI document: schemathesis sends what the document allows
(and what it does not) to a live server on 127.0.0.1, as the admin's bearer token.

No answer may be a 5xx, answer with a status or a body the document does not declare, or be
a refusal from the built-in Twilio sandbox (bad input that got past our own checks). Nothing
leaves the machine: sends go to the sandbox, and the process refuses any other address.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import schemathesis
from flask_openapi3.openapi import OpenAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, CheckContext, GenerationMode, Response
from support import Live, enable_ai, make_settings
from support.fake_openai import API_KEY, FakeOpenAI

from twilio_chat import create_app
from twilio_chat.replies.config import is_usable_api_key
from twilio_chat.settings import is_http_url
from twilio_chat.web.live import stop_long_polls

MAX_EXAMPLES = 70  # requests per operation that takes input: about 1,200 in all
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse, in this process (which serves the app), any address but the loopback."""
    resolve = socket.getaddrinfo
    connect = socket.socket.connect

    def local_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            raise socket.gaierror(socket.EAI_NONAME, f"refused in tests: {name}")
        return resolve(host, *args, **kwargs)

    def connect_local(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            raise ConnectionRefusedError(f"refused in tests: {address[0]}")
        connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    monkeypatch.setattr(socket.socket, "connect", connect_local)


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, as the code declares it (create_app does no I/O)."""
    app = create_app(make_settings(Path("unused.db")))
    return cast(OpenAPI, app).api_doc


DOCUMENT = _document()
SCHEMA = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            }
        }
    ),
)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.fixture
def app(live: Live, only_loopback: None) -> Live:
    """The live app, its long polls answering at once instead of waiting up to 30 s."""
    stop_long_polls(live.app)
    return live


def no_refusal_from_the_sandbox(ctx: CheckContext, response: Response, case: Case) -> None:
    """A 502 carrying Twilio's error: the sandbox refused input our checks let through."""
    if response.status_code == 502:
        error = response.json()["error"]
        assert not isinstance(error["code"], int) and error["code"] != "twilio_error", (
            f"Twilio (the sandbox) refused what the API let through: {error['message']}"
        )


def test_the_live_document_is_the_one_fuzzed(app: Live) -> None:
    served = app.api("GET", "/api/openapi.json", token=None).json()
    assert {**served, "servers": []} == {**DOCUMENT, "servers": []}
    assert {o.label for o in OPERATIONS} >= {"POST /api/send-message", "GET /api/events"}


@pytest.mark.slow
# The server's threads share this process's `random` (retry jitter, log sampling): Hypothesis
# sees its state move while it draws and takes it for the strategy's doing.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_the_api_keeps_to_its_document(
    operation: APIOperation, app: Live, fake_openai: FakeOpenAI
) -> None:
    calls = 0
    takes_input = bool(operation.path_parameters or operation.query or operation.body)
    examples = MAX_EXAMPLES if takes_input else 5  # nothing to vary: a few calls say it all
    session = requests.Session()
    if operation.label == "POST /api/ai/test":
        # Asked with a config that names a server: the local fake one, not the internet.
        enable_ai(app, fake_openai)
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=examples,
        derandomize=True,  # the same requests on every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def keeps_to_it(case: Case) -> None:
        nonlocal calls
        calls += 1
        if operation.label == "POST /api/ai/test" and isinstance(case.body, dict):
            # AI settings tried name a server and a key: always the local fake's (a value
            # the document refuses stays as it is, to be refused).
            base_url = case.body.get("base_url")
            blank_or_url = isinstance(base_url, str) and (
                not base_url.strip() or is_http_url(base_url.strip())
            )
            if "base_url" in case.body and (base_url is None or blank_or_url):
                case.body["base_url"] = fake_openai.base_url  # null: OpenAI's own, not here
            if isinstance(case.body.get("api_key"), str) and is_usable_api_key(
                case.body["api_key"].strip()
            ):
                case.body["api_key"] = API_KEY
        case.call_and_validate(
            base_url=app.url,
            session=session,
            headers={"Authorization": f"Bearer {app.token}"},
            additional_checks=[no_refusal_from_the_sandbox],
        )

    with session:
        keeps_to_it()
    assert 0 < calls <= 3 * examples  # bounded: shrinking a failure is the most it adds
