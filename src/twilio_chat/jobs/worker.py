"""The worker: claims jobs from the database and runs them (a thread in dev, processes in prod)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import func, select

from twilio_chat import messaging
from twilio_chat.db.engine import Database, get_db
from twilio_chat.db.models import Message, StatusEvent, WorkerHeartbeat, utcnow
from twilio_chat.errors import AppError, Upstream
from twilio_chat.inbox import search
from twilio_chat.jobs import queue as jobs
from twilio_chat.messaging import SendRequest, send
from twilio_chat.messaging.sync import sync
from twilio_chat.replies import ai
from twilio_chat.replies import policy as replies
from twilio_chat.settings import Settings
from twilio_chat.twilio import spool
from twilio_chat.twilio.gateway import HTTP_TIMEOUT_SECONDS, TwilioGateway, get_gateway

log = logging.getLogger(__name__)

SPOOL_REPLAY_SECONDS = 1.0  # how often the worker looks at the webhook spool
SEARCH_INDEX_SECONDS = 1.0  # how often new messages are added to SQLite's search index
STOP_CHECK_SECONDS = 0.25  # an idle worker notices `stop` at least this often
MAX_ERROR_PAUSE_SECONDS = 2.0  # the longest pause between tries while the loop keeps failing
QUIET_ERROR_LOG_SECONDS = 30.0  # while the database stays away, say so at most this often


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
        self._next_replay = 0.0
        self._next_index = 0.0
        self._next_error_log = 0.0
        self._wake = threading.Event()  # set when this process commits a new job
        self._claimed: tuple[int, float] | None = None  # (job id, monotonic time of its claim)
        self._next: jobs.ClaimedJob | None = None  # claimed with the last completion, not yet run
        self._stop: threading.Event | None = None  # set while `run` runs

    def run_once(self) -> bool:
        """Run one job: the one claimed with the previous job's completion, or a new one.

        Inside `run`, a job that succeeds is completed and the next one claimed in the same
        write transaction (one instead of two per job under load); called on its own, the job
        is simply completed. Tell whether there was a job.
        """
        job, self._next = self._next, None
        if job is None:
            job = self._claim(lambda: jobs.claim(self.db, self.id, self.settings.job_lease_seconds))
            if job is None:
                return False
        if self._execute(job):
            if self._stop is not None and not self._stop.is_set():
                self._next = self._claim(
                    lambda: jobs.complete_and_claim(
                        self.db, job.id, self.id, self.settings.job_lease_seconds
                    )
                )
            else:
                jobs.complete(self.db, job.id, self.id)
        return True

    def _claim(self, claim: Callable[[], jobs.ClaimedJob | None]) -> jobs.ClaimedJob | None:
        """Claim a job through `claim`, noting when (for `_lease_fresh`)."""
        claimed_at = time.monotonic()  # no later than the lease's own start
        job = claim()
        if job is not None:
            self._claimed = (job.id, claimed_at)
        return job

    def _execute(self, job: jobs.ClaimedJob) -> bool:
        """Run a claimed job's handler; tell True if it succeeded, or record its failure."""
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
            return True
        return False

    def run(self, stop: threading.Event) -> None:
        """Run jobs until `stop` is set, waiting for work when there is nothing to do.

        An idle worker wakes at once when this process commits a job (`jobs.notify_enqueued`),
        and otherwise looks again every WORKER_POLL_SECONDS with a read that takes no lock.
        Nothing stops the loop but `stop`: while the database is away every step fails, and the
        loop retries with a pause that doubles up to MAX_ERROR_PAUSE_SECONDS.
        """
        log.info("worker %s started", self.id)
        jobs.subscribe(self._wake)
        self._stop = stop
        try:
            self._loop(stop)
        finally:
            self._stop = None
            jobs.unsubscribe(self._wake)
            self._give_back()
        log.info("worker %s stopped", self.id)

    def _loop(self, stop: threading.Event) -> None:
        failures = 0
        look = True  # claim without looking first: just started, busy, or woken
        while not stop.is_set():
            self._wake.clear()  # a job committed from here on sets it again
            try:
                self.heartbeat()
                self.schedule_sync()
                self.replay_spool()
                self.index_for_search()
                ready = look or self._next is not None or jobs.has_runnable(self.db)
                busy = ready and self.run_once()
            except Exception as exc:
                failures += 1
                self._log_loop_error(exc, failures)
                busy = False
            else:
                if failures:
                    log.info("worker loop recovered after %d failed rounds", failures)
                failures = 0
            # Busy: go on at once. Idle: wait for a wake-up or the next poll. After a failure,
            # try again in full once the pause is over.
            look = busy or self._idle(stop, self._pause(failures)) or failures > 0

    def _give_back(self) -> None:
        """Put back a job claimed with the last completion but never started (on stop)."""
        job, self._next = self._next, None
        if job is None:
            return
        try:
            jobs.release(self.db, job.id, self.id)
        except Exception:
            log.warning(
                "job %s: could not give it back; it is claimed again after its lease", job.id
            )

    def _idle(self, stop: threading.Event, seconds: float) -> bool:
        """Wait up to `seconds` for a job committed in this process; tell whether one came."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._wake.wait(min(left, STOP_CHECK_SECONDS)):
                return True
        return False

    def _pause(self, failures: int) -> float:
        poll = self.settings.worker_poll_seconds
        if not failures:
            return poll
        return max(poll, min(poll * (1 << min(failures, 16)), MAX_ERROR_PAUSE_SECONDS))

    def _log_loop_error(self, exc: Exception, failures: int) -> None:
        """Log a loop error; while the database stays away, one short line every 30 s."""
        now = time.monotonic()
        if failures == 1 or not spool.database_unavailable(exc):
            log.exception("worker loop error; retrying")
        elif now >= self._next_error_log:
            log.warning(
                "worker loop: the database is still unavailable (%s); retrying",
                type(getattr(exc, "orig", None) or exc).__name__,
            )
        else:
            return
        self._next_error_log = now + QUIET_ERROR_LOG_SECONDS

    def replay_spool(self, force: bool = False) -> spool.ReplayResult | None:
        """Store the webhooks spooled while the database was away (at most once a second).

        Replaying is idempotent: inbound messages are stored once per MessageSid, and a status
        callback already kept (same sid and status) is skipped. Returns None when not due or
        when the spool is empty.
        """
        now = time.monotonic()
        if not force and now < self._next_replay:
            return None
        self._next_replay = now + SPOOL_REPLAY_SECONDS
        folder = self.settings.spool_path
        if not spool.pending(folder):
            return None
        result = spool.replay(folder, self._replay_entry)
        if result.replayed or result.set_aside:
            log.info("spool: %d webhooks replayed, %d set aside", result.replayed, result.set_aside)
        if result.error is not None and now >= self._next_error_log:
            self._next_error_log = now + QUIET_ERROR_LOG_SECONDS
            log.warning(
                "spool: replay stopped, the database is unavailable (%s); retrying",
                type(getattr(result.error, "orig", None) or result.error).__name__,
            )
        return result

    def _replay_entry(self, entry: spool.Entry) -> None:
        """Store one spooled webhook; a database outage stops the replay, anything else is bad."""
        try:
            if entry.kind == "inbound":
                messaging.record_inbound(
                    self.db, self.settings, entry.form, received_at=_arrival(entry.at)
                )
            elif not self._status_kept(entry.form):
                messaging.record_status(self.db, entry.form, entry.mid)
        except Exception as exc:
            if spool.database_unavailable(exc):
                raise
            log.exception("spool: %s webhook %s failed", entry.kind, entry.form.get("MessageSid"))
            raise spool.BadEntry(f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    def _status_kept(self, form: dict[str, str]) -> bool:
        """Tell whether this status callback (sid and status) is already kept as an event."""
        status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
        with self.db.read() as session:
            found = session.scalar(
                select(StatusEvent.id)
                .where(StatusEvent.message_sid == form["MessageSid"], StatusEvent.status == status)
                .limit(1)
            )
        return found is not None

    def index_for_search(self, every: float = SEARCH_INDEX_SECONDS) -> int:
        """Add new messages to SQLite's search index, at most once every `every` seconds.

        Off the webhook's path (see search.py): at most this much of the newest mail is read
        directly by a search instead of through the index.
        """
        now = time.monotonic()
        if now < self._next_index:
            return 0
        self._next_index = now + every
        return search.index_new_messages(self.db)

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

    def _lease_fresh(self, job_id: int) -> bool:
        """Tell whether the lease this worker took on the job still has long enough to run.

        Long enough: at least half the lease and the Twilio call's whole time-out, counted from
        just before run_once claimed the job (a job claimed elsewhere is never fresh).
        """
        if self._claimed is None or self._claimed[0] != job_id:
            return False
        lease = self.settings.job_lease_seconds
        left = lease - (time.monotonic() - self._claimed[1])
        return left >= max(lease / 2, HTTP_TIMEOUT_SECONDS)

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
        # The AI call may have taken long: make sure the job is still ours, with a fresh lease
        # for the Twilio call, so a worker that stalled never sends beside its successor. A
        # lease taken moments ago is ours without asking: one write transaction less per reply.
        if not self._lease_fresh(job.id) and not jobs.renew(
            self.db, job.id, self.id, self.settings.job_lease_seconds
        ):
            log.warning("job %s: lease lost before sending; another worker has it", job.id)
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


def _arrival(value: str) -> datetime | None:
    """Parse a spooled webhook's arrival time (None if unreadable)."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def start_thread(app: Flask) -> tuple[threading.Thread, threading.Event]:
    """Start a worker in a daemon thread beside the web server; return it and its stop event."""
    stop = threading.Event()
    worker = Worker(app)
    thread = threading.Thread(target=worker.run, args=(stop,), name="worker", daemon=True)
    thread.start()
    return thread, stop
