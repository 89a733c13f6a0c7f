"""HTTP face of the sandbox: Twilio's Messages endpoints under /sandbox/twilio.

Also read-only Account, IncomingPhoneNumbers and Messaging Service endpoints (for the doctor).

Authenticated like Twilio, with HTTP Basic (Account SID and auth token). Registered only in
sandbox mode.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from twilio_chat.errors import AppError
from twilio_chat.sandbox import get_sandbox
from twilio_chat.sandbox.state import API_VERSION, SandboxError
from twilio_chat.web.auth import public

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox/twilio")
BASE = f"/{API_VERSION}/Accounts/<account_sid>"
BASIC_AUTH = "HTTP Basic with the (sandbox) Account SID and auth token, as Twilio"


def _check_auth(account_sid: str) -> None:
    settings = current_app.extensions["settings"]
    auth = request.authorization
    good = (
        auth is not None
        and auth.username == settings.account_sid
        and hmac.compare_digest((auth.password or "").encode(), settings.auth_token.encode())
        and account_sid == settings.account_sid
    )
    if not good:
        raise SandboxError(401, 20003, "Authenticate")


@bp.errorhandler(SandboxError)
def _sandbox_error(exc: SandboxError) -> tuple[Response, int]:
    return jsonify(exc.to_json()), exc.status


@bp.errorhandler(AppError)
def _app_error(exc: AppError) -> tuple[Response, int]:
    return jsonify({"code": 20001, "message": exc.message, "status": 400}), 400


@bp.route(f"{BASE}/Messages.json", methods=["GET", "POST"])
@public(BASIC_AUTH)
def messages(account_sid: str) -> Any:
    """List (GET) or create (POST) messages."""
    _check_auth(account_sid)
    sandbox = get_sandbox()
    if request.method == "POST":
        return jsonify(sandbox.create(request.form, request.form.getlist("MediaUrl"))), 201
    base_path = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"
    return jsonify(sandbox.list_messages(request.args, base_path))


@bp.route(f"{BASE}/Messages/<sid>.json", methods=["GET", "POST", "DELETE"])
@public(BASIC_AUTH)
def message(account_sid: str, sid: str) -> Any:
    """Fetch, update (redact/cancel) or delete one message."""
    _check_auth(account_sid)
    sandbox = get_sandbox()
    if request.method == "GET":
        return jsonify(sandbox.fetch(sid))
    if request.method == "POST":
        return jsonify(sandbox.update(sid, request.form))
    sandbox.delete(sid)
    return Response(status=204)


@bp.route(f"{BASE}/SimulatedInbound.json", methods=["POST"])
@public(BASIC_AUTH)
def simulated_inbound(account_sid: str) -> Any:
    """Text the app from a simulated handset (the sandbox's own, not a Twilio resource)."""
    _check_auth(account_sid)
    result = get_sandbox().simulate_inbound(
        request.form.get("From", ""),
        request.form.get("Body", ""),
        request.form.getlist("MediaUrl"),
        request.form.get("To") or None,
    )
    return jsonify(result), 201


@bp.route(f"{BASE}/Faults.json", methods=["POST"])
@public(BASIC_AUTH)
def faults(account_sid: str) -> Any:
    """Make the next create calls answer 429 or 500 (for tests)."""
    _check_auth(account_sid)
    try:
        status = int(request.form.get("Status", ""))
        count = int(request.form.get("Count", "1"))
        code = int(request.form["Code"]) if request.form.get("Code") else None
    except ValueError:
        raise SandboxError(400, 20001, "Status, Count and Code must be integers") from None
    get_sandbox().inject_fault(status, count, code)
    return jsonify({"status": status, "count": count, "code": code}), 201


@bp.get(f"/{API_VERSION}/Accounts/<account_sid>.json")
@public(BASIC_AUTH)
def account(account_sid: str) -> Any:
    """Fetch the sandbox's account (status active, friendly name "Sandbox")."""
    _check_auth(account_sid)
    return jsonify(get_sandbox().account())


@bp.get(f"{BASE}/IncomingPhoneNumbers.json")
@public(BASIC_AUTH)
def incoming_phone_numbers(account_sid: str) -> Any:
    """List the account's phone numbers: the sandbox's one number (filter `PhoneNumber`)."""
    _check_auth(account_sid)
    base_path = f"/{API_VERSION}/Accounts/{account_sid}/IncomingPhoneNumbers.json"
    return jsonify(get_sandbox().list_numbers(request.args, base_path))


@bp.get("/messaging/v1/Services/<sid>")
@public(BASIC_AUTH)
def messaging_service(sid: str) -> Any:
    """Fetch a Messaging Service as messaging.twilio.com does (only the configured one exists)."""
    settings = current_app.extensions["settings"]
    _check_auth(settings.account_sid)
    return jsonify(get_sandbox().messaging_service(sid))


def _sample_png() -> bytes:
    """A small picture (a teal square) for simulated MMS."""
    import struct
    import zlib

    width = height = 64
    row = b"\x00" + bytes((0, 128, 128)) * width
    raw = row * height

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@bp.get("/media/sample.png")
@public(BASIC_AUTH)
def sample_media() -> Response:
    """Serve a sample picture behind Basic auth, as Twilio serves MMS media."""
    settings = current_app.extensions["settings"]
    _check_auth(settings.account_sid)
    return Response(_sample_png(), mimetype="image/png")
