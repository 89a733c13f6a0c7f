"""Stand-ins for the inbound store, served by gunicorn to see what the rest of a webhook costs.

`python -m bench.processes --app 'bench.standin:noop()'` serves the real app whose webhook hands
its text to a store that does nothing; `'bench.standin:sleep(2)'` to one that waits 2 ms without
working, as a request waits for its commit. Everything else (the signature, the form, the hooks,
gunicorn's production config) is the app's own. Only for measuring: nothing is stored.
"""

from __future__ import annotations

import time

from flask import Flask

from twilio_chat import create_app
from twilio_chat.messaging import InboundFields, InboundResult


class _NoStore:
    """Answers every text at once as newly stored, and stores nothing."""

    def store(self, fields: InboundFields) -> InboundResult:
        """Return a made-up result for the text."""
        return InboundResult(0, True, None, False)


class _Wait(_NoStore):
    """Waits a fixed time without working, then answers as `_NoStore`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def store(self, fields: InboundFields) -> InboundResult:
        """Sleep (giving the interpreter up), then return a made-up result."""
        time.sleep(self.seconds)
        return super().store(fields)


def noop() -> Flask:
    """Return the app with a store that does nothing."""
    app = create_app()
    app.extensions["inbound_writer"] = _NoStore()
    return app


def sleep(milliseconds: float = 2) -> Flask:
    """Return the app with a store that only waits `milliseconds`."""
    app = create_app()
    app.extensions["inbound_writer"] = _Wait(milliseconds / 1000)
    return app
