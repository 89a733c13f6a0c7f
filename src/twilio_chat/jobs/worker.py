"""The worker: claims jobs from the database and runs their tasks (a thread in dev, processes
in prod), and runs the periodic chores when they are due. Which tasks exist is the registry's
business (jobs/tasks.py), not the loop's."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from flask import Flask

from twilio_chat.db.engine import Database, get_db
from twilio_chat.db.models import WorkerHeartbeat, utcnow
from twilio_chat.errors import AppError, Upstream
from twilio_chat.jobs import queue as jobs
from twilio_chat.jobs.tasks import PermanentJobError, Tasks, get_tasks
from twilio_chat.settings import Settings
from twilio_chat.twilio import spool
from twilio_chat.twilio.gateway import HTTP_TIMEOUT_SECONDS, TwilioGateway, get_gateway

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0  # how often a worker records that it is alive (/readyz reads it)
STOP_CHECK_SECONDS = 0.25  # an idle worker notices `stop` at least this often
MAX_ERROR_PAUSE_SECONDS = 2.0  # the longest pause between tries while the loop keeps failing
QUIET_ERROR_LOG_SECONDS = 30.0  # while the database stays away, say so at most this often


class Worker:
    """Runs one app's jobs and chores until stopped."""

    def __init__(self, app: Flask, name: str | None = None) -> None:
        self.app = app
        self.settings: Settings = app.extensions["settings"]
        self.db: Database = get_db(app)
        self.gateway: TwilioGateway = get_gateway(app)
        self.tasks: Tasks = get_tasks(app)
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._due: dict[str, float] = {}  # each chore's next run (monotonic time)
        self._next_heartbeat = 0.0
        self._next_error_log = 0.0
        self._wake = threading.Event()  # set when this process commits a new job
        self._claimed: tuple[int, float] | None = None  # (job id, monotonic time of its claim)

    # What a task is given (jobs.tasks.Context) --------------------------------------------

    def still_ours(self, job: jobs.ClaimedJob) -> bool:
        """Tell whether this worker still holds the job, with a lease long enough to send.

        A lease taken moments ago (at least half of it left, and the Twilio call's whole
        time-out) is ours without asking; otherwise it is renewed, which fails when the lease
        ran out and another worker claimed the job: the caller must then not send.
        """
        lease = self.settings.job_lease_seconds
        if self._claimed is not None and self._claimed[0] == job.id:
            left = lease - (time.monotonic() - self._claimed[1])
            if left >= max(lease / 2, HTTP_TIMEOUT_SECONDS):
                return True
        return jobs.renew(self.db, job.id, self.id, lease)

    # Jobs -------------------------------------------------------------------------------

    def run_once(self) -> bool:
        """Claim one job and run its task; tell whether there was a job."""
        claimed_at = time.monotonic()  # no later than the lease's own start
        job = jobs.claim(self.db, self.id, self.settings.job_lease_seconds)
        if job is None:
            return False
        self._claimed = (job.id, claimed_at)
        if self._execute(job):
            jobs.complete(self.db, job.id, self.id)
        return True

    def _execute(self, job: jobs.ClaimedJob) -> bool:
        """Run a claimed job's task; tell True if it succeeded, or record its failure."""
        task = self.tasks.jobs.get(job.kind)
        retry_base = self.settings.job_retry_base_seconds
        try:
            if task is None:
                raise PermanentJobError(f"unknown job kind {job.kind!r}")
            task(self, job)
        except Upstream as exc:
            status = exc.twilio_status
            retry = status is None or status == 429 or status >= 500
            jobs.fail(self.db, job.id, self.id, exc.message, retry, retry_base)
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc.message)
        except (PermanentJobError, AppError) as exc:
            # Bad input or an opt-out: another try would meet the same refusal.
            jobs.fail(self.db, job.id, self.id, str(exc), False, retry_base)
            log.warning("job %s (%s) failed for good: %s", job.id, job.kind, exc)
        except Exception as exc:
            log.exception("job %s (%s) crashed", job.id, job.kind)
            jobs.fail(self.db, job.id, self.id, f"{type(exc).__name__}: {exc}", True, retry_base)
        else:
            return True
        return False

    # Chores -----------------------------------------------------------------------------

    def run_chores(self) -> None:
        """Record a heartbeat and run every chore that is due."""
        self.heartbeat()
        for name in self.tasks.periodic:
            self.run_chore(name)

    def run_chore(self, name: str, force: bool = False) -> Any:
        """Run the chore `name` if it is due (or `force`); return what it returned, or None."""
        chore = self.tasks.periodic[name]
        every = chore.every(self.settings)
        now = time.monotonic()
        due = self._due.get(name)
        if not force and (every <= 0 or (due is not None and now < due)):
            return None
        self._due[name] = now + every
        return chore.run(self, due is None)

    def heartbeat(self, every: float = HEARTBEAT_SECONDS) -> None:
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

    # The loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Run jobs and chores until `stop` is set, waiting for work when there is nothing to do.

        An idle worker wakes at once when this process commits a job (`jobs.notify_enqueued`),
        and otherwise looks again every WORKER_POLL_SECONDS with a read that takes no lock.
        Nothing stops the loop but `stop`: while the database is away every step fails, and the
        loop retries with a pause that doubles up to MAX_ERROR_PAUSE_SECONDS.
        """
        log.info("worker %s started", self.id)
        jobs.subscribe(self._wake)
        try:
            self._loop(stop)
        finally:
            jobs.unsubscribe(self._wake)
        log.info("worker %s stopped", self.id)

    def _loop(self, stop: threading.Event) -> None:
        failures = 0
        look = True  # claim without looking first: just started, busy, or woken
        while not stop.is_set():
            self._wake.clear()  # a job committed from here on sets it again
            try:
                self.run_chores()
                busy = (look or jobs.has_runnable(self.db)) and self.run_once()
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


def start_thread(app: Flask) -> tuple[threading.Thread, threading.Event]:
    """Start a worker in a daemon thread beside the web server; return it and its stop event."""
    stop = threading.Event()
    worker = Worker(app)
    thread = threading.Thread(target=worker.run, args=(stop,), name="worker", daemon=True)
    thread.start()
    return thread, stop
