"""The built-in Twilio sandbox: an emulator of the Messages resource and a phone simulator."""

from __future__ import annotations

from flask import Flask, current_app

from twilio_chat.db.engine import get_db
from twilio_chat.sandbox.state import Sandbox
from twilio_chat.twilio.gateway import get_gateway


def get_sandbox(app: Flask | None = None) -> Sandbox:
    """Return a Sandbox over the app's database, settings and signer."""
    target = app or current_app
    return Sandbox(get_db(target), target.extensions["settings"], get_gateway(target))
