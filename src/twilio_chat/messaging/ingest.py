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

On a SQLite file under gunicorn, a process of its own does this for every web process
(ingest_process.py, with the same `write_batch`); this thread is then the fallback.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from flask import Flask, current_app
from sqlalchemy import Connection

from twilio_chat.db.engine import Database, get_db
from twilio_chat.messaging import (
    InboundFields,
    InboundResult,
    changes_opt_outs,
    store_inbound,
    store_inbound_batch,
    store_plain_batch,
)
from twilio_chat.settings import Settings, is_e164

log = logging.getLogger(__name__)
P = TypeVar("P", bound="Pending")
MAX_BATCH = 64
IDLE_SECONDS = 30  # a writer with nothing to do for this long ends; the next message starts one


@dataclass
class Pending:
    """One inbound message waiting to be stored, and what became of it."""

    fields: InboundFields
    result: InboundResult | None = None
    error: BaseException | None = None

    def finish(self) -> None:
        """Hand the result (or the error) to whoever waits for it."""


@dataclass
class _Pending(Pending):
    """A message of one of this process's request threads, which waits on `done`."""

    done: threading.Event = field(default_factory=threading.Event)

    def finish(self) -> None:
        """Wake the request thread."""
        self.done.set()


def write_batch(
    db: Database,
    settings: Settings,
    batch: list[P],
    top_up: Callable[[list[P]], None] | None = None,
    conn: Connection | None = None,
) -> None:
    """Store a batch durably in one transaction, then finish each item with its own result.

    Waits for this process's turn to write first; `top_up(batch)` may then add whatever queued
    up meanwhile (up to MAX_BATCH). `conn`: a Core connection the caller keeps for its batches
    (the writer process); a batch without an opt-out or opt-in keyword is then stored on it
    with no ORM session (`store_plain_batch`), the caller wakes any reply workers, and a batch
    that fails there leaves the connection to open a fresh driver connection next time. The
    commit is fsynced once the turn is given back (`Database.make_durable`), and only then is
    each item finished. If the batch fails, each message is stored again in a durable
    transaction of its own, so an error reaches only its own item.
    """
    plain: Connection | None = None  # the kept connection, when this batch is stored on it
    try:
        with db.write_turn():  # the other processes' turn: requests run meanwhile
            if top_up is not None:
                top_up(batch)
            fields = [item.fields for item in batch]
            if conn is not None and not changes_opt_outs(fields):
                plain = conn
            if plain is not None:
                with plain.begin():
                    results = store_plain_batch(plain, settings, fields)
            else:
                with db.session() as session:
                    results = store_inbound_batch(session, settings, fields)
        db.make_durable()  # the fsync, once the other processes may write again
    except Exception:
        if plain is not None:
            with contextlib.suppress(Exception):
                plain.invalidate()  # the next batch on it opens a fresh driver connection
        if len(batch) == 1:
            raise
        for item in batch:
            _write_one(db, settings, item)
        return
    for item, result in zip(batch, results, strict=True):
        item.result = result
        item.finish()


def _write_one(db: Database, settings: Settings, item: Pending) -> None:
    """Store one message in its own transaction, handing back its result or its error."""
    try:
        with db.session(durable=True) as session:
            item.result = store_inbound(session, settings, item.fields)
    except Exception as exc:
        item.error = exc
    item.finish()


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
        # Whether the sender is a phone number decides whether it is answered: asked before
        # the writer needs it inside the write lock (a webhook's fields carry it already).
        if fields.sender_is_phone is None:
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
                        item.finish()

    def _write(self, batch: list[_Pending]) -> None:
        """Store a batch, topped up once the write turn is ours (see `write_batch`)."""
        write_batch(self.db, self.settings, batch, self._top_up)

    def _top_up(self, batch: list[_Pending]) -> None:
        """Add whatever queued up while the writer waited for its turn."""
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break


class Writer(Protocol):
    """What the webhook hands its message to."""

    def store(self, fields: InboundFields) -> InboundResult:
        """Store one inbound message (with its reply job) and return once it is committed."""
        ...


def get_writer(app: Flask | None = None) -> Writer:
    """Return the app's inbound writer, made on first use.

    On a SQLite file on Linux, that is the writer process when it runs (ingest_process.py,
    started by gunicorn's master), falling back to this process's own writer thread.
    """
    target = app or current_app
    writer: Writer | None = target.extensions.get("inbound_writer")
    if writer is None:  # setdefault: two first requests at once still share one writer
        from twilio_chat.messaging.ingest_process import ProcessWriter, address

        settings: Settings = target.extensions["settings"]
        local = InboundWriter(get_db(target), settings)
        where = address(settings)
        made: Writer = local if where is None else ProcessWriter(settings, local, where)
        writer = target.extensions.setdefault("inbound_writer", made)
    return writer
