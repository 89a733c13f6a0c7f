"""The inbound writer process: on SQLite under gunicorn, one process stores every inbound text.

Why a process of its own. SQLite takes one writer at a time, so every inbound batch holds the
write lock (ingest.py). Inside a web process, the writer thread shares the interpreter lock with
the request threads: each of its statements gives the interpreter up while SQLite works, and it
then waits for a request thread to hand it back. The write lock was held two to four times as
long as the writer's own CPU time, and that lock bounds ingest (bench/README.md). A process of
its own runs the writer with no request threads beside it, and the web processes no longer take
turns at the lock among themselves for their webhooks.

How. gunicorn's master starts `python -m twilio_chat.messaging.ingest_process` before it forks
(`when_ready` in gunicorn.conf.py); that process forks the one that serves, and forks a new one
whenever it ends. It listens on a Unix socket in Linux's abstract namespace (no file; named after
the database's path) with `multiprocessing.connection`, whose HMAC handshake admits only
processes holding a key derived from SECRET_KEY. Each request thread keeps one connection, sends
its `InboundFields` and waits for `("ok", InboundResult)`. The process stores whatever is waiting
on all its connections as one batch (`ingest.write_batch`: one transaction, fsynced, on a Core
connection it keeps), then answers each. While texts keep coming, a small batch first waits up
to half a millisecond for more to join it (group commit): every batch pays one commit and one
fsync, whatever its size.

Nothing depends on it. If the process is not running (the development server, another system,
PostgreSQL, a restart), is gone mid-request, or reports an error, the web process stores the
text itself (`ingest.InboundWriter`), which reports a real database error as before (the webhook
then spools). Storing is idempotent by MessageSid, so a text the writer process stored just
before it failed is found as a duplicate there: never stored twice, never lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from typing import Any, cast

from sqlalchemy import Connection as DbConnection
from sqlalchemy.engine import make_url

from twilio_chat.db.engine import Database
from twilio_chat.jobs.queue import notify_enqueued
from twilio_chat.messaging import InboundFields, InboundResult
from twilio_chat.messaging.ingest import MAX_BATCH, InboundWriter, Pending, write_batch
from twilio_chat.settings import Settings, is_e164

log = logging.getLogger("twilio_chat.messaging.ingest_process")  # also when run as __main__
ADDRESS_PREFIX = "\0twilio-chat-inbound-"
RETRY_SECONDS = 1.0  # after a failed connection, how long a web process stores on its own
RESTART_SECONDS = 1.0  # how long before a writer that ended is started again
POLL_SECONDS = 0.5  # how often the processes look whether they were told to stop, or orphaned
IN_USE = 3  # the exit code of a writer that found its address taken (another server's writer)
IN_USE_SECONDS = 30.0  # how long before trying again then
# Group commit. Under load, a batch smaller than GATHER_TARGET waits up to GATHER_SECONDS for
# more texts to join it: a batch costs one transaction, commit and fsync whatever its size
# (bench/README.md, ingest). A text that arrives alone after a batch of one never waits.
GATHER_SECONDS = 0.0005
GATHER_TARGET = 4


def _dumps(value: object) -> bytes:
    """Pickle a message for the other end.

    Plain `pickle.dumps`: `Connection.send` builds a `ForkingPickler` (and copies its dispatch
    table) for every message, which cost the writer process more than the pickling itself.
    Both ends unpickle only what comes over a connection whose other end proved it holds the
    key (`authkey`), as `Connection.recv` would.
    """
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def address(settings: Settings) -> str | None:
    """Return the socket address of the writer process for this database, or None if none runs.

    Only a SQLite file on Linux (the abstract namespace is Linux's) has one.
    """
    if not sys.platform.startswith("linux"):
        return None
    url = make_url(settings.sqlalchemy_url)
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    digest = hashlib.sha256(os.path.realpath(database).encode()).hexdigest()[:32]
    return ADDRESS_PREFIX + digest


def authkey(settings: Settings) -> bytes:
    """Return the key both ends prove they hold (derived from SECRET_KEY, never the key itself)."""
    return hmac.new(settings.secret_bytes, b"inbound-writer-process", hashlib.sha256).digest()


# The web process's side --------------------------------------------------------------------


class ProcessWriter:
    """A web process's inbound writer: the writer process when it runs, else `InboundWriter`."""

    def __init__(self, settings: Settings, local: InboundWriter, where: str) -> None:
        self.local = local
        self.address = where
        self.key = authkey(settings)
        self._threads = threading.local()
        self._retry_at = 0.0

    def store(self, fields: InboundFields) -> InboundResult:
        """Store one inbound message (with its reply job) and return once it is committed."""
        conn = self._connection()
        if conn is not None:
            try:
                conn.send_bytes(_dumps(fields))
                kind, value = pickle.loads(conn.recv_bytes())  # noqa: S301 - see _dumps
            except (OSError, EOFError, pickle.UnpicklingError) as exc:  # it ended, or restarted
                self._forget(conn)
                log.warning(
                    "inbound writer process unreachable (%s); storing %s here",
                    type(exc).__name__,
                    fields.sid,
                )
            else:
                if kind == "ok" and isinstance(value, InboundResult):
                    if value.reply_enqueued:  # committed elsewhere: no commit hook fired here
                        notify_enqueued()  # this process's reply workers take it at once
                    return value
                log.warning("inbound writer process: %s; storing %s here", value, fields.sid)
        return self.local.store(fields)

    def _connection(self) -> Connection | None:
        """Return this thread's connection, opening it unless a recent attempt failed."""
        conn: Connection | None = getattr(self._threads, "conn", None)
        if conn is not None or time.monotonic() < self._retry_at:
            return conn
        try:
            conn = Client(self.address, family="AF_UNIX", authkey=self.key)
        except (OSError, EOFError, ValueError, AuthenticationError) as exc:  # away, or not ours
            # The development server and a restart land here: no log line per request, and
            # another attempt only after RETRY_SECONDS.
            self._retry_at = time.monotonic() + RETRY_SECONDS
            log.debug("no inbound writer process at this database (%s)", exc)
            return None
        self._threads.conn = conn
        return conn

    def _forget(self, conn: Connection) -> None:
        """Drop a broken connection; the next message opens a new one."""
        self._threads.conn = None
        with contextlib.suppress(OSError):
            conn.close()


# The writer process ------------------------------------------------------------------------


@dataclass
class _Remote(Pending):
    """A message that came over a connection; finishing sends the answer back over it."""

    conn: Connection | None = None

    def finish(self) -> None:
        """Send the result, or a short description of the error, to the web process."""
        assert self.conn is not None
        if self.error is not None:
            answer: tuple[str, Any] = ("error", f"{type(self.error).__name__}: {self.error}")
        else:
            answer = ("ok", self.result)
        # A web process that hung up gets no answer: the text is stored all the same.
        with contextlib.suppress(OSError):
            self.conn.send_bytes(_dumps(answer))


class WriterServer:
    """The writer process's loop: take what every connection sent, store it as one batch."""

    def __init__(self, settings: Settings, where: str, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db or Database(settings.sqlalchemy_url)
        self.listener = Listener(where, family="AF_UNIX", authkey=authkey(settings))
        self.stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._new: list[Connection] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._under_load = False  # the last batch had more than one text
        self._db_conn: DbConnection | None = None  # the Core connection batches are stored on

    def serve(self) -> None:
        """Serve until `stop` is set (or the listener is closed)."""
        acceptor = threading.Thread(target=self._accept, name="inbound-accept", daemon=True)
        acceptor.start()
        try:
            while not self.stop.is_set():
                self._turn()
        finally:
            self.close()

    def close(self) -> None:
        """Stop accepting and close every connection: web processes then store on their own."""
        self.stop.set()
        self.listener.close()
        with self._lock:
            conns, self._new = self._connections() + self._new, []
        for conn in conns:
            conn.close()
        self._forget_db_connection()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        self.db.dispose()

    def _connections(self) -> list[Connection]:
        """Return the open connections of web processes."""
        keys = self._selector.get_map().values()
        return [cast(Connection, k.fileobj) for k in keys if k.fileobj is not self._wake_r]

    def _accept(self) -> None:
        """Admit connections that pass the handshake, and wake the loop for each."""
        while not self.stop.is_set():
            try:
                conn = self.listener.accept()
            except OSError:  # closed: the process is stopping
                return
            except Exception as exc:  # a wrong key, or a client that hung up
                log.warning("inbound writer process refused a connection: %s", exc)
                continue
            with self._lock:
                if self.stop.is_set():  # closing meanwhile
                    conn.close()
                    return
                self._new.append(conn)
                self._wake_w.send(b".")

    def _ready(self, timeout: float) -> list[Connection]:
        """Wait up to `timeout` for connections with a message; admit new connections."""
        ready: list[Connection] = []
        for key, _events in self._selector.select(timeout):
            if key.fileobj is self._wake_r:
                self._wake_r.recv(4096)
                with self._lock:
                    for conn in self._new:
                        self._selector.register(conn, selectors.EVENT_READ)
                    self._new.clear()
            else:
                ready.append(cast(Connection, key.fileobj))
        return ready

    def _turn(self) -> None:
        """Wait for messages; store all that arrived as one batch and answer each."""
        batch = self._receive(self._ready(POLL_SECONDS))
        if not batch:
            return
        if self._under_load:
            self._gather(batch)
        try:
            write_batch(self.db, self.settings, batch, self._top_up, self._db_connection())
        except Exception as exc:  # one text that could not be stored (a batch retries each)
            log.exception("inbound writer process: %s not stored", batch[0].fields.sid)
            for item in batch:
                item.error = exc
                item.finish()
        self._under_load = len(batch) > 1

    def _db_connection(self) -> DbConnection:
        """Return the connection batches are stored on, opened on first use and then kept.

        A batch on a kept connection pays no pool checkout and no ORM session, which cost
        this process more per batch than the batch's own statements (bench/README.md, ingest).
        """
        if self._db_conn is None:
            self._db_conn = self.db.engine.connect()
        return self._db_conn

    def _forget_db_connection(self) -> None:
        """Close the kept connection, if any."""
        conn, self._db_conn = self._db_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # must not fail the rest of close()
                conn.close()

    def _gather(self, batch: list[_Remote]) -> None:
        """Let more texts join a small batch, for at most GATHER_SECONDS (group commit)."""
        deadline = time.monotonic() + GATHER_SECONDS
        while len(batch) < GATHER_TARGET:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            batch += self._receive(self._ready(left))

    def _top_up(self, batch: list[_Remote]) -> None:
        """Add what arrived while the batch waited for the write turn."""
        if len(batch) < MAX_BATCH:
            batch += self._receive(self._ready(0))

    def _receive(self, ready: list[Connection]) -> list[_Remote]:
        """Read one message from each ready connection; drop the ones that closed."""
        batch = []
        for conn in ready:
            try:
                fields = pickle.loads(conn.recv_bytes())  # noqa: S301 - see _dumps
            except (OSError, EOFError, pickle.UnpicklingError):  # gone, or not our message
                self._selector.unregister(conn)
                conn.close()
                continue
            if not isinstance(fields, InboundFields):
                log.warning("inbound writer process: not a message (%s)", type(fields).__name__)
                conn.send_bytes(_dumps(("error", "not an inbound message")))
                continue
            if fields.sender_is_phone is None:  # a webhook's fields carry the web's answer
                is_e164(fields.sender)  # cached before the write lock, as the web process does
            batch.append(_Remote(fields, conn=conn))
        return batch


def main() -> int:
    """Run the writer process for the settings' database, and start it again if it ends.

    This process (started by gunicorn's master) only supervises: it forks the process that
    serves, and forks a new one when that one ends, until SIGTERM or until the master is gone.
    """
    from twilio_chat.ops.logs import setup_logging
    from twilio_chat.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: bad setting: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    where = address(settings)
    if where is None:
        log.error("no inbound writer process for this database (SQLite on Linux only)")
        return 2
    master = os.getppid()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    while not stopping.is_set():
        child = os.fork()  # this process has no other thread: forking is safe
        if child == 0:
            os._exit(_serve(settings, where))
        status = _wait(child, stopping, master)
        if status is None:  # told to stop, or orphaned
            os.kill(child, signal.SIGTERM)
            os.waitpid(child, 0)
            return 0
        code = os.waitstatus_to_exitcode(status)
        delay = IN_USE_SECONDS if code == IN_USE else RESTART_SECONDS
        log.warning(
            "inbound writer process %d ended (exit code %d); starting it again in %.0f s",
            child,
            code,
            delay,
        )
        stopping.wait(delay)
    return 0


def _wait(child: int, stopping: threading.Event, master: int) -> int | None:
    """Wait for the child to end and return its status; None if told to stop or orphaned."""
    while not stopping.is_set() and os.getppid() == master:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            return status
        stopping.wait(POLL_SECONDS)
    return None


def _serve(settings: Settings, where: str) -> int:
    """Serve in the forked child until SIGTERM, or until the supervising process is gone."""
    parent = os.getppid()
    try:
        server = WriterServer(settings, where)
    except OSError as exc:  # another one serves this database already
        log.error("inbound writer process cannot listen: %s", exc)
        return IN_USE
    signal.signal(signal.SIGTERM, lambda *_: server.stop.set())
    signal.signal(signal.SIGINT, lambda *_: server.stop.set())

    def watch_parent() -> None:
        while not server.stop.wait(POLL_SECONDS):
            if os.getppid() != parent:  # the supervisor is gone (and with it gunicorn)
                server.stop.set()

    threading.Thread(target=watch_parent, name="inbound-parent", daemon=True).start()
    log.info("inbound writer process %d serving %s", os.getpid(), settings.db_path)
    try:
        server.serve()
    except Exception:
        log.exception("inbound writer process %d failed", os.getpid())
        return 1
    return 0


# gunicorn's master -------------------------------------------------------------------------


def start(settings: Settings) -> subprocess.Popen[bytes] | None:
    """Start the writer process where the database has one (SQLite on Linux), else None.

    Call it from gunicorn's master before any worker is forked (`when_ready`): a worker forked
    while the master is starting a process could hold on to that process's start-up pipe.
    """
    if address(settings) is None:
        return None
    argv = [sys.executable, "-m", "twilio_chat.messaging.ingest_process"]
    return subprocess.Popen(argv)  # noqa: S603 - our own module


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Stop the writer process (its current batch is finished first)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


if __name__ == "__main__":
    raise SystemExit(main())
