"""The framework's ceiling: a bare Flask app whose inbound webhook only parses the form.

Served by the same gunicorn config as the real app (bench/ingest.py), it shows what Flask and
gunicorn alone can do on this machine; the app's ingest is reported as a fraction of it.
"""

from __future__ import annotations

from flask import Flask, Response, request

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'

app = Flask(__name__)


@app.post("/twilio/inbound")
def inbound() -> Response:
    """Parse the webhook's form, as the app does, and answer empty TwiML."""
    form = request.form
    if not form.get("MessageSid") or not form.get("From"):
        return Response("missing MessageSid or From", status=400)
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


@app.get("/healthz")
def healthz() -> Response:
    """Answer 200 once the server is up."""
    return Response("ok", mimetype="text/plain")
