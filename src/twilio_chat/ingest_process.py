"""The inbound writer process: on SQLite under gunicorn, one process stores every inbound text.

Why a process of its own. SQLite takes one writer at a time. Inside a web process, a writer
thread shares the interpreter lock with the request threads: each of its statements gives the
interpreter up while SQLite works, and it then waits for a request thread to hand it back, so
the write lock was held two to four times as long as the writer's own CPU time, and that lock
bounds ingest (bench/README.md). A process of its own stores with no request threads beside it.

How. Each web process makes a text durable in its own journal file and answers (journal.py);
this process drains the files into the database in large batches (`journal.Drain`) and wakes
the web processes' reply workers. gunicorn's master starts `python -m twilio_chat.ingest_process`
before it forks its workers (`when_ready` in gunicorn.conf.py); that process forks the one that
serves, and forks a new one whenever it ends. The one that serves holds the journal's
serving.lock: web processes write to the journal only while it does. It drains whenever a web
process pokes it (a datagram on a Unix socket in Linux's abstract namespace, named after the
journal's folder, saying "lines were written"), and every POLL_SECONDS in any case; on SIGTERM
it drains what is left before it ends.

Nothing depends on it. While the process is not running (the development server, another
system, PostgreSQL, a restart), web processes store their texts themselves
(`ingest.InboundWriter`) and a reply worker drains whatever a journal still holds. Storing is
idempotent by MessageSid, so a line drained twice is stored once: never stored twice, never lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

from .db import Database
from .journal import Drain, folder
from .settings import Settings
from .spool import database_unavailable

log = logging.getLogger("twilio_chat.ingest_process")  # also when run as __main__
RESTART_SECONDS = 1.0  # how long before a writer that ended is started again
POLL_SECONDS = 0.5  # how often the processes look whether they were told to stop, or orphaned
RETRY_SECONDS = 1.0  # how long before a drain that could not reach the database tries again
IN_USE = 3  # the exit code of a writer that found the journal taken (another server's writer)
IN_USE_SECONDS = 30.0  # how long before trying again then
# Group commit. While texts keep coming, the drain waits this long after a poke before it reads
# the files: a transaction costs about the same for 1 text or 64 (bench/README.md, ingest). A
# text that arrives alone, after a quiet moment, is stored at once.
GATHER_SECONDS = 0.002


class WriterServer:
    """The writer process's loop: drain the journal whenever web processes wrote to it."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        where = folder(settings)
        if where is None:
            raise ValueError("no journal for this database (SQLite on Linux only)")
        self.settings = settings
        self.db = db or Database(settings.sqlalchemy_url)
        self.drain = Drain(where, self.db, settings)
        self.stop = threading.Event()
        self._wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._busy = False  # the last pass stored something

    def start(self) -> bool:
        """Take the journal's locks and listen for pokes; False if another writer has them."""
        if not self.drain.acquire(wait=False):
            return False
        self._wake.bind(self.drain.wake_address())
        if not self.drain.serve():
            self.drain.release()
            return False
        return True

    def serve(self) -> None:
        """Drain until `stop` is set, then drain what is left and let go of the journal."""
        try:
            while not self.stop.is_set():
                self._wait()
                self._pass()
            self._pass()  # the web processes have stopped: what they wrote last
        finally:
            self.close()

    def close(self) -> None:
        """Let go of the journal (web processes then store their texts themselves)."""
        self.stop.set()
        self.drain.release()
        self._wake.close()
        self.db.dispose()

    def _wait(self) -> None:
        """Wait for a poke (at most POLL_SECONDS), then for more lines while texts keep coming."""
        self._wake.settimeout(POLL_SECONDS)
        with contextlib.suppress(TimeoutError):
            self._wake.recv(64)
        if self._busy:
            self.stop.wait(GATHER_SECONDS)
        self._wake.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # one pass serves every poke so far
                self._wake.recv(64)

    def _pass(self) -> None:
        """Drain once; a database that cannot be reached is tried again after RETRY_SECONDS."""
        try:
            result = self.drain.drain()
        except Exception as exc:
            if database_unavailable(exc):
                log.warning("inbound writer process: database unavailable (%s); retrying", exc)
            else:
                log.exception("inbound writer process: the drain failed; retrying")
            self._busy = False
            self.stop.wait(RETRY_SECONDS)
            return
        self._busy = result.lines > 0


def main() -> int:
    """Run the writer process for the settings' database, and start it again if it ends.

    This process (started by gunicorn's master) only supervises: it forks the process that
    serves, and forks a new one when that one ends, until SIGTERM or until the master is gone.
    """
    from .logs import setup_logging
    from .settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: bad setting: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    if folder(settings) is None:
        log.error("no inbound writer process for this database (SQLite on Linux only)")
        return 2
    master = os.getppid()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    while not stopping.is_set():
        child = os.fork()  # this process has no other thread: forking is safe
        if child == 0:
            os._exit(_serve(settings))
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


def _serve(settings: Settings) -> int:
    """Serve in the forked child until SIGTERM, or until the supervising process is gone."""
    parent = os.getppid()
    server = WriterServer(settings)
    if not server.start():  # another server's writer drains this journal
        log.error("inbound writer process: another process drains %s", server.drain.folder)
        server.close()
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
    if folder(settings) is None:
        return None
    argv = [sys.executable, "-m", "twilio_chat.ingest_process"]
    return subprocess.Popen(argv)  # noqa: S603 - our own module


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Stop the writer process (it stores what the journal holds first)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


if __name__ == "__main__":
    raise SystemExit(main())
