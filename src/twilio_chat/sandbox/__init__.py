"""The built-in Twilio sandbox: an emulator of the Messages resource and a phone simulator."""

from __future__ import annotations

from flask import Flask, current_app

from ..db import get_db
from ..twilio_gateway import get_gateway
from .state import Sandbox


def get_sandbox(app: Flask | None = None) -> Sandbox:
    """Return a Sandbox over the app's database, settings and signer."""
    target = app or current_app
    return Sandbox(get_db(target), target.extensions["settings"], get_gateway(target))
