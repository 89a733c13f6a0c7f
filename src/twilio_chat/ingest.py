"""Group commit for inbound webhooks: many requests, one transaction, each answered once stored.

Every webhook thread of a process hands its message to one writer thread and waits. The writer
waits for its turn to write (on SQLite, one process at a time), then takes whatever has queued
up meanwhile (at most MAX_BATCH), stores it all in one transaction (`messaging.store_inbound_batch`,
in arrival order) and commits; once the turn is given back it fsyncs the commit
(`Database.make_durable`) and only then wakes each waiting request with its own result. A
request is therefore still answered only after its message is durably stored, but a burst
costs one write turn, one commit and one fsync per batch instead of per message, and threads
no longer queue on SQLite's write lock (whose busy handler sleeps).

If a batch fails, each of its messages is stored again in a transaction of its own, so an error
reaches only the request it belongs to (a database outage reaches them all, and each spools).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

from flask import Flask, current_app

from .db import Database, get_db
from .messaging import InboundFields, InboundResult, store_inbound, store_inbound_batch
from .settings import Settings, is_e164

log = logging.getLogger(__name__)
MAX_BATCH = 64
IDLE_SECONDS = 30  # a writer with nothing to do for this long ends; the next message starts one


@dataclass
class _Pending:
    """One webhook's message waiting to be stored, and what became of it."""

    fields: InboundFields
    done: threading.Event = field(default_factory=threading.Event)
    result: InboundResult | None = None
    error: BaseException | None = None


class InboundWriter:
    """Stores inbound messages for all of a process's request threads, a batch at a time."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def store(self, fields: InboundFields) -> InboundResult:
        """Store one inbound message (with its reply job) and return once it is committed."""
        # Whether the sender is a phone number decides whether it is answered; asked here, the
        # answer is cached (settings.is_e164) before the writer needs it inside the write lock.
        is_e164(fields.sender)
        pending = _Pending(fields)
        self._queue.put(pending)
        self._ensure_thread()  # after the put: a writer about to retire sees this message
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _ensure_thread(self) -> None:
        """Start the writer thread in this process (after a fork, on first use)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="inbound-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        """Take the queued messages a batch at a time, for as long as the process lives."""
        while True:
            try:
                batch = [self._queue.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # retire; the next store() starts a new writer
                        self._thread = None
                        return
                continue
            try:
                self._write(batch)
            except BaseException as exc:  # never leave a request waiting forever
                log.exception("inbound writer: a batch of %d failed", len(batch))
                for item in batch:
                    if not item.done.is_set():
                        item.error = exc
                        item.done.set()

    def _write(self, batch: list[_Pending]) -> None:
        """Store a batch in one transaction; on failure, each message in its own."""
        try:
            with self.db.write_turn():  # the other processes' turn: requests run meanwhile
                # Whatever queued up while waiting for the turn goes in this batch too.
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                with self.db.session() as session:
                    results = store_inbound_batch(
                        session, self.settings, [item.fields for item in batch]
                    )
            self.db.make_durable()  # the fsync, once the other processes may write again
        except Exception:
            if len(batch) == 1:
                raise
            for item in batch:
                self._write_one(item)
            return
        for item, result in zip(batch, results, strict=True):
            item.result = result
            item.done.set()

    def _write_one(self, item: _Pending) -> None:
        """Store one message in its own transaction, handing back its result or its error."""
        try:
            with self.db.session(durable=True) as session:
                item.result = store_inbound(session, self.settings, item.fields)
        except Exception as exc:
            item.error = exc
        item.done.set()


def get_writer(app: Flask | None = None) -> InboundWriter:
    """Return the app's inbound writer, made on first use."""
    target = app or current_app
    writer: InboundWriter | None = target.extensions.get("inbound_writer")
    if writer is None:  # setdefault: two first requests at once still share one writer
        writer = target.extensions.setdefault(
            "inbound_writer", InboundWriter(get_db(target), target.extensions["settings"])
        )
    return writer
