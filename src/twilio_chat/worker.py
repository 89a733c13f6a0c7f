"""The worker: claims jobs from the database and runs them (a thread in dev, processes in prod)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from flask import Flask
from sqlalchemy import func, select

from . import ai, jobs, replies
from .db import Database, get_db
from .errors import AppError, Upstream
from .messaging import SendRequest, send
from .models import Message, WorkerHeartbeat, utcnow
from .settings import Settings
from .sync import sync
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
        self.retry_base = self.settings.job_retry_base_seconds
        self.handlers: dict[str, Callable[[jobs.ClaimedJob], None]] = {
            "reply": self._reply,
            "sync": self._sync,
        }
        interval = self.settings.sync_interval_seconds
        self.sync_interval = (
            interval
            if interval and (not self.settings.sandbox or self.settings.sync_in_sandbox)
            else 0
        )
        self._next_sync = 0.0
        self._next_heartbeat = 0.0
        self._first_sync = True

    def run_once(self) -> bool:
        """Claim and run one job; tell whether there was one."""
        job = jobs.claim(self.db, self.id, self.settings.job_lease_seconds)
        if job is None:
            return False
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise PermanentJobError(f"unknown job kind {job.kind!r}")
            handler(job)
        except Upstream as exc:
            retry = (
                exc.twilio_status is None or exc.twilio_status == 429 or (exc.twilio_status >= 500)
            )
            jobs.fail(self.db, job.id, self.id, exc.message, retry, self.retry_base)
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc.message)
        except (PermanentJobError, AppError) as exc:
            # Bad input or an opt-out: another try would meet the same refusal.
            jobs.fail(self.db, job.id, self.id, str(exc), False, self.retry_base)
        except Exception as exc:
            log.exception("job %s (%s) crashed", job.id, job.kind)
            jobs.fail(
                self.db, job.id, self.id, f"{type(exc).__name__}: {exc}", True, self.retry_base
            )
        else:
            jobs.complete(self.db, job.id, self.id)
        return True

    def run(self, stop: threading.Event) -> None:
        """Run jobs until `stop` is set, sleeping briefly when there is nothing to do."""
        log.info("worker %s started", self.id)
        while not stop.is_set():
            try:
                self.heartbeat()
                self.schedule_sync()
                busy = self.run_once()
            except Exception:
                log.exception("worker loop error; retrying")
                busy = False
            if not busy:
                stop.wait(self.settings.worker_poll_seconds)
        log.info("worker %s stopped", self.id)

    def heartbeat(self, every: float = 10.0) -> None:
        """Record that this worker is alive (at most every `every` seconds); /readyz reads it."""
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + every
        with self.db.session() as session:
            row = session.get(WorkerHeartbeat, self.id[:64])
            if row is None:
                session.add(WorkerHeartbeat(worker_id=self.id[:64], seen_at=utcnow()))
            else:
                row.seen_at = utcnow()

    def schedule_sync(self) -> None:
        """Enqueue the periodic sync when due; the unique key lets one worker per period win."""
        if not self.sync_interval or time.monotonic() < self._next_sync:
            return
        self._next_sync = time.monotonic() + self.sync_interval
        period = int(time.time() // self.sync_interval)
        # After a start, look back to the newest stored message: texts that came while down.
        payload: dict[str, object] = {"since_latest": self._first_sync}
        self._first_sync = False
        with self.db.session() as session:
            jobs.enqueue(session, "sync", payload, unique_key=f"sync:{period}", max_attempts=1)

    def _sync(self, job: jobs.ClaimedJob) -> None:
        payload = job.payload
        lookback = timedelta(seconds=max(2 * self.sync_interval, 3600))
        since = utcnow() - lookback
        if payload.get("since_latest"):
            with self.db.read() as session:
                latest = session.scalar(select(func.max(Message.created_at)))
            if latest is not None:
                since = max(
                    min(since, latest - timedelta(minutes=10)), utcnow() - timedelta(days=7)
                )
        result = sync(self.db, self.gateway, self.settings, date_sent_after=since)
        log.info(
            "sync: %d fetched, %d new, %d updated, %d replies enqueued",
            result.fetched,
            result.inserted,
            result.updated,
            result.replies_enqueued,
        )

    def _reply(self, job: jobs.ClaimedJob) -> None:
        message_id = job.payload.get("message_id")
        if not isinstance(message_id, int):
            raise PermanentJobError("reply job without a message id")
        with self.db.read() as session:
            message = session.get(Message, message_id)
            if message is None or message.sid is None:
                return  # deleted since: nothing to answer
            decision = replies.decide(session, self.settings, message)
            turns = []
            if decision.ai is not None:
                turns = ai.build_prompt(
                    decision.ai.system_prompt,
                    ai.history(session, message, decision.ai.history_limit),
                )
            to, sid = message.contact_number, message.sid
        if decision.mode == "none":
            log.info("no automatic reply to %s: %s", sid, decision.reason)
            return
        text = decision.text
        if decision.ai is not None:
            try:
                answer = ai.complete(decision.ai, turns, self.settings.ai_timeout_seconds)
                text = ai.trim_to_segments(answer, decision.ai.max_segments)
            except ai.AIError as exc:
                if not decision.ai.fallback_text:
                    raise PermanentJobError(f"AI reply failed: {exc.message}") from None
                log.warning("AI reply to %s failed (%s); sending the fallback", sid, exc.message)
                text = decision.ai.fallback_text
        if not text:
            return
        send(
            self.db,
            self.gateway,
            self.settings,
            SendRequest(
                to=to,
                body=text,
                source=decision.mode,
                reply_to_sid=sid,
                final_try=job.attempt >= job.max_attempts,
            ),
        )


def start_thread(app: Flask) -> tuple[threading.Thread, threading.Event]:
    """Start a worker in a daemon thread beside the web server; return it and its stop event."""
    stop = threading.Event()
    worker = Worker(app)
    thread = threading.Thread(target=worker.run, args=(stop,), name="worker", daemon=True)
    thread.start()
    return thread, stop
