"""The worker: claims jobs from the database and runs them (a thread in dev, processes in prod)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from flask import Flask

from . import jobs
from .db import Database, get_db
from .errors import AppError, Upstream
from .messaging import SendRequest, send
from .models import Message
from .replies import choose_reply
from .settings import Settings
from .twilio_gateway import TwilioGateway, get_gateway

log = logging.getLogger(__name__)


class PermanentJobError(Exception):
    """A job failed in a way another try cannot fix."""


class Worker:
    """Runs jobs for one app until stopped."""

    def __init__(self, app: Flask, name: str | None = None) -> None:
        self.app = app
        self.settings: Settings = app.extensions["settings"]
        self.db: Database = get_db(app)
        self.gateway: TwilioGateway = get_gateway(app)
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.handlers: dict[str, Callable[[dict[str, object]], None]] = {
            "reply": self._reply,
        }

    def run_once(self) -> bool:
        """Claim and run one job; tell whether there was one."""
        job = jobs.claim(self.db, self.id, self.settings.job_lease_seconds)
        if job is None:
            return False
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise PermanentJobError(f"unknown job kind {job.kind!r}")
            handler(job.payload)
        except Upstream as exc:
            retry = (
                exc.twilio_status is None or exc.twilio_status == 429 or (exc.twilio_status >= 500)
            )
            jobs.fail(self.db, job.id, self.id, exc.message, retry=retry)
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc.message)
        except (PermanentJobError, AppError) as exc:
            # Bad input or an opt-out: another try would meet the same refusal.
            jobs.fail(self.db, job.id, self.id, str(exc), retry=False)
        except Exception as exc:
            log.exception("job %s (%s) crashed", job.id, job.kind)
            jobs.fail(self.db, job.id, self.id, f"{type(exc).__name__}: {exc}", retry=True)
        else:
            jobs.complete(self.db, job.id, self.id)
        return True

    def run(self, stop: threading.Event) -> None:
        """Run jobs until `stop` is set, sleeping briefly when there is nothing to do."""
        log.info("worker %s started", self.id)
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("worker loop error; retrying")
                busy = False
            if not busy:
                stop.wait(self.settings.worker_poll_seconds)
        log.info("worker %s stopped", self.id)

    def _reply(self, payload: dict[str, object]) -> None:
        message_id = payload.get("message_id")
        if not isinstance(message_id, int):
            raise PermanentJobError("reply job without a message id")
        with self.db.read() as session:
            message = session.get(Message, message_id)
            if message is None or message.sid is None:
                return  # deleted since: nothing to answer
            reply = choose_reply(session, self.settings, message)
            to, sid = message.contact_number, message.sid
        if reply is None:
            return
        send(
            self.db,
            self.gateway,
            self.settings,
            SendRequest(to=to, body=reply.text, source=reply.source, reply_to_sid=sid),
        )


def start_thread(app: Flask) -> tuple[threading.Thread, threading.Event]:
    """Start a worker in a daemon thread beside the web server; return it and its stop event."""
    stop = threading.Event()
    worker = Worker(app)
    thread = threading.Thread(target=worker.run, args=(stop,), name="worker", daemon=True)
    thread.start()
    return thread, stop
