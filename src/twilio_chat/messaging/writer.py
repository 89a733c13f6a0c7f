"""Group commit for inbound webhooks: a process's requests share transactions.

Every webhook thread of a process hands its text to one writer thread and waits. The writer
takes whatever has queued up (at most MAX_BATCH texts), stores them with `store_inbound_many`
in one durable transaction, and then wakes each waiting request with its own result: a
request is still answered only once its text is on disk. One thread holding the database's
write lock for a whole batch, instead of each request thread for its own text, keeps the
request threads (which share one interpreter lock) from queueing behind each other. The
writer keeps one connection open for its batches, so a batch costs no pool checkout and no
liveness ping; after an error it lets that connection go and opens a new one.

If a batch fails, each of its texts is stored again in a transaction of its own, so an error
reaches only the request it belongs to, and a connection the database closed costs nothing (a
database outage reaches them all, and each spools).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass, field

from flask import Flask
from sqlalchemy import Connection

from twilio_chat.db.engine import Database
from twilio_chat.messaging.inbound import InboundFields, InboundResult, store_inbound_many
from twilio_chat.settings import Settings

MAX_BATCH = 64  # the most texts one transaction stores
EXTENSION = "inbound_writer"  # app.extensions key


@dataclass
class _Pending:
    """One text waiting to be stored, and what became of it."""

    fields: InboundFields
    done: threading.Event = field(default_factory=threading.Event)
    result: InboundResult | None = None
    error: BaseException | None = None


class InboundWriter:
    """Stores the inbound texts of all of a process's request threads, a batch at a time."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._connection: Connection | None = None  # the writer thread's own

    def store(self, fields: InboundFields) -> InboundResult:
        """Store one inbound text with its reply job; return once it is durably committed."""
        pending = _Pending(fields)
        self._queue.put(pending)
        self._ensure_thread()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _ensure_thread(self) -> None:
        """Start the writer thread of this process on first use (after gunicorn's fork)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="inbound-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        """Store the queued texts a batch at a time, for as long as the process lives."""
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except BaseException as exc:  # never leave a request waiting
                for item in batch:
                    if not item.done.is_set():
                        item.error = exc
                        item.done.set()

    def _write(self, batch: list[_Pending]) -> None:
        """Store a batch in one durable transaction; if it fails, each text on its own."""
        try:
            if self._connection is None:
                self._connection = self.db.engine.connect()
            with self.db.session(durable=True, bind=self._connection) as session:
                texts = [item.fields for item in batch]
                results = store_inbound_many(session, self.settings, texts)
        except Exception:
            self._drop_connection()
            for item in batch:  # again, each alone, on a connection from the pool
                self._write_one(item)
            return
        for item, result in zip(batch, results, strict=True):
            item.result = result
            item.done.set()

    def _drop_connection(self) -> None:
        """Let go of the writer's connection after an error; the next batch opens a new one."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # it may be broken already
                connection.close()

    def _write_one(self, item: _Pending) -> None:
        """Store one text in a transaction of its own, handing back its result or its error."""
        try:
            with self.db.session(durable=True) as session:
                item.result = store_inbound_many(session, self.settings, [item.fields])[0]
        except Exception as exc:
            item.error = exc
        item.done.set()


def get_writer(app: Flask, db: Database, settings: Settings) -> InboundWriter:
    """Return the app's inbound writer, made on first use."""
    writer: InboundWriter | None = app.extensions.get(EXTENSION)
    if writer is None:  # setdefault: two first requests at once still share one writer
        writer = app.extensions.setdefault(EXTENSION, InboundWriter(db, settings))
    return writer
