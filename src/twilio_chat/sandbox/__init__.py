"""The built-in Twilio sandbox: an emulator of the Messages resource and a phone simulator.

It stands for another company's service, so it keeps its state in a store of its own (see
`store`) and uses none of the app's services or tables: only the twilio gateway (to sign as
Twilio signs), segment counting, settings and errors.
"""

from __future__ import annotations

from flask import Flask, current_app

from twilio_chat.sandbox.state import Sandbox
from twilio_chat.sandbox.store import SandboxStore
from twilio_chat.settings import Settings
from twilio_chat.twilio.gateway import get_gateway

STORE = "sandbox_store"  # the app.extensions key of the sandbox's store


def init_app(app: Flask, settings: Settings) -> None:
    """Attach the sandbox's store (its SQLite file, not opened until first used) to the app."""
    app.extensions[STORE] = SandboxStore(settings.sandbox_path)


def get_store(app: Flask | None = None) -> SandboxStore:
    """Return the app's sandbox store (the app must be in sandbox mode)."""
    target = app or current_app
    store: SandboxStore | None = target.extensions.get(STORE)
    if store is None:
        raise RuntimeError("the built-in sandbox is off (TWILIO_SANDBOX / Twilio credentials)")
    return store


def get_sandbox(app: Flask | None = None) -> Sandbox:
    """Return a Sandbox over its own store, the app's settings and the gateway (its signer)."""
    target = app or current_app
    return Sandbox(get_store(target), target.extensions["settings"], get_gateway(target))
