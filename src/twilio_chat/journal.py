"""The inbound journal: a webhook's text is made durable in a file, and stored a moment later.

Why. Under gunicorn on a SQLite file, every text used to travel to the writer process and wait
there for its turn, its transaction and its fsync before the webhook could answer: a round trip
between processes per text, and a transaction and an fsync per handful of texts. Now the web
process appends the text to a file of its own and waits only for that file's fsync (shared by
every text written meanwhile); the writer process (ingest_process.py) stores the files' lines in
large batches. A 200 still means the text is durable; it reaches the database, the panel and
its reply a few milliseconds later (bench/README.md, ingest).

Files, in ``<database file>-inbound/`` beside the database:

- ``journal-<pid>-<n>.jsonl``: texts web process ``<pid>`` took, one JSON object per line
  (`encode`), followed by zero bytes up to the file's size. A web process writes one file at a
  time, each line with one ``pwrite`` after the one before, and holds a shared ``flock`` on it for
  as long as it may write there. A file is made FILE_BYTES long, filled with zeros and fsynced
  before its first line: an fdatasync then only writes the lines' pages, where a file that grows
  makes every fdatasync commit the file system's journal too (about a third more CPU and time
  per fsync, measured on ext4; bench/README.md). The zeros also mark where the lines end: a
  line never holds a zero byte (JSON escapes it). When a line no longer fits, the web process
  moves on to ``<n + 1>`` (made ready ahead by its sync thread) and closes the old file. A file
  is created under a temporary name (``.new``), locked, and only then renamed, so a file seen
  under its name and not locked is one whose writer is done with it.
- ``journal-bad.jsonl``: lines that can never be stored, each kept with its error.
- ``drain.lock``: held (exclusively) by whichever process drains, so only one does.
- ``serving.lock``: held (exclusively) by the writer process for as long as it runs. A web
  process writes to its journal only while it is held; otherwise it stores the text itself, as
  before (`ingest.InboundWriter`: the development server, PostgreSQL, another system). A reply
  worker drains what such a server left behind (``drain.lock`` only), without this lock.

The drain (`Drain`): reads each file's whole lines from where it stopped, stores them in arrival
order, MAX_BATCH to a transaction (`messaging.store_inbound_batch`), and wakes the web processes'
reply workers. A file read to its end whose writer has let it go (an exclusive ``flock`` is free
at once) is dropped: the database is made durable (fsync), then the file is deleted. Where a
file was read up to is kept only in memory: a drain that starts afresh reads every file from its
start again, and storing is idempotent by MessageSid, so nothing is stored twice and nothing a
200 answered is lost. A drain that cannot reach the database keeps every line for later.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import heapq
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from .db import Database
from .jobs import has_listeners, notify_enqueued
from .messaging import InboundFields, InboundResult, store_inbound, store_inbound_batch
from .metrics import WEBHOOKS
from .settings import Settings
from .spool import database_unavailable

if TYPE_CHECKING:
    from .ingest import InboundWriter

log = logging.getLogger(__name__)
FILE_BYTES = 4 << 20  # a journal file's size: a web process moves on when a line no longer fits
READ_BYTES = 4 << 20  # the most a drain reads of one file at a time
MAX_BATCH = 64  # texts per transaction of the drain
PROBE_SECONDS = 1.0  # how long a web process trusts its last look at drain.lock
DRAIN_LOCK = "drain.lock"
SERVING_LOCK = "serving.lock"
BAD_FILE = "journal-bad.jsonl"
_NAME = re.compile(r"^journal-(\d+)-(\d+)\.jsonl$")
_NEW = re.compile(r"^journal-\d+-\d+\.jsonl\.new$")
_WAKE_DRAIN = "\0twilio-chat-drain-"
_WAKE_WEB = "\0twilio-chat-wake-"


class BadLine(ValueError):
    """A journal line that is not a text this app wrote."""


def folder(settings: Settings) -> Path | None:
    """Return the journal's folder for this database, or None where there is no journal.

    Only a SQLite file on Linux has one (its wake-ups use Linux's abstract socket namespace).
    """
    if not sys.platform.startswith("linux"):
        return None
    url = make_url(settings.sqlalchemy_url)
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return Path(os.path.realpath(database) + "-inbound")


def _address(prefix: str, where: Path, pid: int | None = None) -> str:
    """Return an abstract socket address for this journal (and web process)."""
    digest = hashlib.sha256(str(where).encode()).hexdigest()[:32]
    return prefix + digest + ("" if pid is None else f"-{pid}")


_senders: dict[int, socket.socket] = {}  # this process's socket for wake-ups, by pid


def _sender() -> socket.socket:
    """Return this process's socket for sending wake-ups (one per process, kept for its life)."""
    pid = os.getpid()
    sock = _senders.get(pid)
    if sock is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        sock = _senders.setdefault(pid, sock)
    return sock


@atexit.register
def _close_senders() -> None:
    """Close this process's wake-up socket at exit."""
    for sock in _senders.values():
        sock.close()


def _poke(sock: socket.socket, address: str) -> None:
    """Send a one-byte wake-up; nobody listening, or a full queue, is fine."""
    with contextlib.suppress(OSError):
        sock.sendto(b".", address)


# The format --------------------------------------------------------------------------------


def encode(fields: InboundFields, at: datetime) -> bytes:
    """Return a text's journal line: one JSON object and a newline."""
    record = {
        "sid": fields.sid,
        "from": fields.sender,
        "to": fields.our_number,
        "service": fields.service_sid,
        "body": fields.body,
        "media": fields.media,
        "segments": fields.num_segments,
        "account": fields.account_sid,
        "opt_out": fields.opt_out_type,
        "phone": fields.sender_is_phone,
        "at": at.isoformat(),
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _text(value: Any, name: str, optional: bool = False) -> Any:
    """Return a field of a line that must be a string (or None when optional)."""
    if isinstance(value, str) or (optional and value is None):
        return value
    raise BadLine(f"{name}: not a string")


def decode(raw: bytes) -> InboundFields:
    """Read a journal line back into the text it holds; BadLine when it is not one."""
    try:
        record = json.loads(raw)
    except ValueError as exc:  # also a UnicodeDecodeError
        raise BadLine(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise BadLine("not a JSON object")
    media = record.get("media")
    if not isinstance(media, list) or not all(
        isinstance(m, dict) and all(isinstance(v, str) for v in m.values()) for m in media
    ):
        raise BadLine("media: not a list of objects of strings")
    segments, phone = record.get("segments"), record.get("phone")
    if not isinstance(segments, int) or isinstance(segments, bool):
        raise BadLine("segments: not a whole number")
    if phone is not None and not isinstance(phone, bool):
        raise BadLine("phone: not true, false or null")
    try:
        at = datetime.fromisoformat(_text(record.get("at"), "at"))
    except ValueError:
        raise BadLine("at: not an ISO time") from None
    sid = _text(record.get("sid"), "sid")
    sender = _text(record.get("from"), "from")
    if not sid or not sender:
        raise BadLine("sid and from must not be empty")
    return InboundFields(
        sid=sid,
        sender=sender,
        our_number=_text(record.get("to"), "to"),
        service_sid=_text(record.get("service"), "service", optional=True),
        body=_text(record.get("body"), "body"),
        media=media,
        num_segments=segments,
        account_sid=_text(record.get("account"), "account", optional=True),
        received_at=at if at.tzinfo else at.replace(tzinfo=UTC),
        opt_out_type=_text(record.get("opt_out"), "opt_out", optional=True),
        sender_is_phone=phone,
    )


# The web process's side --------------------------------------------------------------------


def drain_running(where: Path) -> bool:
    """Tell whether a writer process holds serving.lock (so a line written now is stored)."""
    try:
        fd = os.open(where / SERVING_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also lets go of a shared lock just taken
    return False


@dataclass(eq=False)
class _File:
    """The journal file a web process writes to."""

    fd: int
    name: str
    capacity: int
    size: int = 0  # the lines written so far


@dataclass(eq=False, slots=True)
class _Wait:
    """A line waiting for its file's fsync; `done` is released once that fsync has run."""

    done: threading.Lock
    file: _File
    finished: bool = False  # an fsync covering the line ran
    ok: bool = False  # and it succeeded
    lead: bool = False  # its thread is to run the next fsync


class JournalWriter:
    """A web process's inbound writer: its journal while a drain runs, else `InboundWriter`.

    Group fsync without a thread of its own: a request thread that finds no fsync running runs
    one itself, for every line written so far; threads that write meanwhile wait, and the one
    that ran it wakes them, and hands the next fsync to the first of those it did not cover.
    At a steady few hundred texts a second per process most requests find no fsync running and
    wake nobody. (A sync thread woken for each line cost about a fifth of the interpreter's
    time in the wake-up alone, made while holding the interpreter lock; bench/README.md.)
    """

    def __init__(self, where: Path, local: InboundWriter) -> None:
        self.folder = where
        self.local = local
        self._pid = -1
        self._fork_lock = threading.Lock()

    def _start(self) -> None:
        """Set up this process's state (at first use, and again in a forked child)."""
        self._mutex = threading.Lock()
        self._syncing = False  # a request thread runs an fsync (or is about to)
        self._waiting: list[_Wait] = []  # lines written and not yet covered by an fsync
        self._retired: list[_File] = []  # files moved on from, closed after their last fsync
        self._file: _File | None = None
        self._spare: _File | None = None  # the next file, made ready ahead
        self._preparing = False  # a thread makes the spare
        self._count = 0
        self._count_lock = threading.Lock()
        self._threads = threading.local()
        self._probe_until = 0.0
        self._running = False
        self._listening = False  # the reply workers' wake-up thread, at the first line written
        self._drain_address = _address(_WAKE_DRAIN, self.folder)
        self._pid = os.getpid()

    def store(self, fields: InboundFields) -> InboundResult | None:
        """Make a text durable: in the journal (None: stored a moment later) or stored here."""
        if self._pid != os.getpid():
            with self._fork_lock:
                if self._pid != os.getpid():
                    self._start()
        if not self._drain_running():
            return self.local.store(fields)
        wait = self._write(fields)
        if wait is None:
            return self.local.store(fields)
        while not wait.finished:
            if wait.lead:
                self._sync()  # covers this line: the first one waiting
            else:
                wait.done.acquire()  # released once an fsync covered it, or to lead the next
        if not wait.ok:  # the fsync failed: the line may be lost, so store it here too
            return self.local.store(fields)
        return None

    def _drain_running(self) -> bool:
        """Tell whether a drain runs, looking at serving.lock at most once a PROBE_SECONDS."""
        now = time.monotonic()
        if now >= self._probe_until:
            self._running = drain_running(self.folder)
            self._probe_until = now + PROBE_SECONDS
        return self._running

    def _write(self, fields: InboundFields) -> _Wait | None:
        """Write the text's line after the last; None if the file cannot take it.

        The returned wait leads (`lead`) when no fsync runs: its thread runs the next one.
        """
        line = encode(fields, datetime.now(UTC))
        done: threading.Lock | None = getattr(self._threads, "done", None)
        if done is None:
            done = self._threads.done = threading.Lock()
            done.acquire()
        with self._mutex:
            file = self._file
            try:
                if file is not None and file.size + len(line) > file.capacity:
                    self._retire(file)
                    file = None
                if file is None:
                    file = self._file = self._next_file(len(line))
                written = os.pwrite(file.fd, line, file.size)
                file.size += written
                if written != len(line):
                    raise OSError(errno.EIO, f"short write ({written} of {len(line)} bytes)")
            except OSError as exc:
                log.warning("journal: cannot write %s (%s); storing it here", fields.sid, exc)
                if file is not None:  # a torn line must stay the file's last
                    self._retire(file)
                return None
            wait = _Wait(done, file)
            self._waiting.append(wait)
            if not self._syncing:
                self._syncing = wait.lead = True
            if not self._listening:
                self._listening = True
                if has_listeners():  # reply workers run here (started before any request)
                    threading.Thread(target=self._listen, name="journal-wake", daemon=True).start()
        return wait

    def _sync(self) -> None:
        """Fsync every line written so far, wake their threads, and hand on the next fsync."""
        with self._mutex:
            batch, self._waiting = self._waiting, []
            retired, self._retired = self._retired, []
        files = {w.file for w in batch}
        failed: set[_File] = set()
        for file in files:
            try:
                os.fdatasync(file.fd)
            except OSError as exc:
                log.error("journal: fsync of %s failed (%s)", file.name, exc)
                failed.add(file)
        for file in retired:  # every line of these was in this batch or an earlier one
            os.close(file.fd)  # lets go of its lock: the drain may drop it once read
        with self._mutex:
            for file in failed:
                self._retire(file)
            after = self._waiting[0] if self._waiting else None
            if after is None:
                self._syncing = False
            else:
                after.lead = True
            current = self._file
            spare_needed = (
                current is not None
                and self._spare is None
                and not self._preparing
                and current.size >= current.capacity // 2
            )
            self._preparing = self._preparing or spare_needed
        mine = getattr(self._threads, "done", None)
        for wait in batch:
            wait.ok = wait.file not in failed
            wait.lead = False
            wait.finished = True
            if wait.done is not mine:
                wait.done.release()
        if after is not None:
            after.done.release()  # its thread runs the next fsync
        _poke(_sender(), self._drain_address)  # the drain reads them now
        if spare_needed:
            threading.Thread(target=self._prepare_spare, name="journal-spare", daemon=True).start()

    def _retire(self, file: _File) -> None:
        """Move on from a file (under the mutex): it is closed after its last fsync."""
        if self._file is file:
            self._file = None
            self._retired.append(file)

    def _next_file(self, needed: int) -> _File:
        """Return the file made ready ahead, or make one now (under the mutex)."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.capacity >= needed:
            return spare
        if spare is not None:
            self._retired.append(spare)
        return self._open(max(FILE_BYTES, needed))

    def _open(self, capacity: int) -> _File:
        """Create, fill with zeros, lock and name this process's next journal file."""
        self.folder.mkdir(mode=0o700, exist_ok=True)
        pid = os.getpid()
        while True:
            with self._count_lock:
                self._count += 1
                name = f"journal-{pid}-{self._count}.jsonl"
            if (self.folder / name).exists():  # left by an earlier process with our pid
                continue
            new = self.folder / (name + ".new")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            try:
                fd = os.open(new, flags, 0o600)
            except FileExistsError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                zeros = bytes(1 << 20)
                for start in range(0, capacity, len(zeros)):
                    os.pwrite(fd, zeros[: capacity - start], start)
                os.fsync(fd)
                os.rename(new, self.folder / name)
                _sync_folder(self.folder)
            except OSError:
                os.close(fd)
                with contextlib.suppress(OSError):
                    new.unlink()
                raise
            return _File(fd, name, capacity)

    def _prepare_spare(self) -> None:
        """Make the next file ready ahead, in a thread of its own (the current is half full)."""
        try:
            spare: _File | None = self._open(FILE_BYTES)
        except OSError as exc:  # a writer makes it itself when it needs it
            log.warning("journal: cannot make the next file ready (%s)", exc)
            spare = None
        with self._mutex:
            self._preparing = False
            if spare is not None and self._spare is None:
                self._spare, spare = spare, None
        if spare is not None:  # not expected: one thread makes a spare at a time
            os.close(spare.fd)

    def _listen(self) -> None:
        """Wake this process's reply workers whenever the drain has stored a text to answer."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(_address(_WAKE_WEB, self.folder, os.getpid()))
        except OSError as exc:  # the workers then find their jobs by polling
            log.warning("journal: no wake-up socket for the reply workers (%s)", exc)
            return
        while True:
            sock.recv(64)
            notify_enqueued()


def _sync_folder(where: Path) -> None:
    """Fsync a folder, so that a file created or renamed in it stays."""
    fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The drain ---------------------------------------------------------------------------------


@dataclass(eq=False)
class _Reader:
    """A journal file being drained: where its whole lines were stored up to."""

    name: str
    pid: int
    fd: int
    offset: int = 0  # stored up to here
    read: int = 0  # read up to here (whole lines)


@dataclass(order=True)
class _Line:
    """A whole line read from a file, in arrival order."""

    at: datetime
    seq: int
    reader: _Reader = field(compare=False)
    end: int = field(compare=False)  # the file's offset after this line
    raw: bytes = field(compare=False)
    fields: InboundFields | None = field(compare=False)
    error: str = field(compare=False, default="")


@dataclass
class DrainResult:
    """What one pass of a drain did."""

    stored: int = 0
    duplicates: int = 0
    set_aside: int = 0
    dropped: int = 0

    @property
    def lines(self) -> int:
        """Return how many lines the pass handled."""
        return self.stored + self.duplicates + self.set_aside


class Drain:
    """Stores what the web processes' journals hold: whole lines, in arrival order, each once."""

    def __init__(self, where: Path, db: Database, settings: Settings) -> None:
        self.folder = where
        self.db = db
        self.settings = settings
        self._readers: dict[str, _Reader] = {}
        self._lock_fd: int | None = None
        self._serving_fd: int | None = None
        self._seq = 0

    def acquire(self, wait: bool = True) -> bool:
        """Take drain.lock (this is then the journal's one drain); False if another holds it."""
        if self._lock_fd is not None:
            return True
        self.folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.folder / DRAIN_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def serve(self, tries: int = 50) -> bool:
        """Take serving.lock too: web processes then write their texts to the journal.

        A web process looking at the lock holds it for an instant; False if it stays taken.
        """
        fd = os.open(self.folder / SERVING_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        for _ in range(tries):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            self._serving_fd = fd
            return True
        os.close(fd)
        return False

    def release(self) -> None:
        """Let go of the locks and of every file this drain has open."""
        for reader in self._readers.values():
            os.close(reader.fd)
        self._readers.clear()
        for fd in (self._serving_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._serving_fd = self._lock_fd = None

    def wake_address(self) -> str:
        """Return the address web processes poke once they have written lines."""
        return _address(_WAKE_DRAIN, self.folder)

    def pending(self) -> bool:
        """Tell whether the folder holds a journal file (a cheap look, no lock taken)."""
        try:
            return any(_NAME.match(name) for name in os.listdir(self.folder))
        except FileNotFoundError:
            return False

    def drain(self) -> DrainResult:
        """Store every whole line there is now, then drop the files that are done.

        Raises the error when the database cannot be reached (or the file system fails): every
        line not yet stored is read again by the next call.
        """
        assert self._lock_fd is not None, "acquire() first"
        result = DrainResult()
        while True:
            lines = list(heapq.merge(*(self._read(r) for r in self._open_new())))
            if not lines:
                break
            for start in range(0, len(lines), MAX_BATCH):
                self._store(lines[start : start + MAX_BATCH], result)
        result.dropped = self._drop(result)
        return result

    def _open_new(self) -> list[_Reader]:
        """Return a reader for each journal file, opening the ones seen for the first time."""
        for entry in os.scandir(self.folder):
            match = _NAME.match(entry.name)
            if match and entry.name not in self._readers:
                try:
                    fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                self._readers[entry.name] = _Reader(entry.name, int(match[1]), fd)
            elif _NEW.match(entry.name):
                self._drop_unnamed(entry.path)
        return list(self._readers.values())

    def _drop_unnamed(self, path: str) -> None:
        """Delete a file whose creator died before naming it (it holds no line)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        except (BlockingIOError, FileNotFoundError):
            pass  # being named right now
        finally:
            os.close(fd)

    def _read(self, reader: _Reader) -> Iterator[_Line]:
        """Read the whole lines after what was read before (a line being written waits)."""
        reader.read = reader.offset
        data = _written(os.pread(reader.fd, READ_BYTES, reader.offset))
        end = data.rfind(b"\n") + 1
        position = reader.offset
        lines = []
        last = datetime.min.replace(tzinfo=UTC)
        raws = data[:end].splitlines(keepends=True)
        for index, raw in enumerate(raws):
            try:
                fields: InboundFields | None = decode(raw)
                error = ""
            except BadLine as exc:
                if index == len(raws) - 1 and _in_use(reader.fd):
                    break  # perhaps seen half-copied: read again once its writer is done
                fields, error = None, str(exc)
            position += len(raw)
            self._seq += 1
            if fields is not None and fields.received_at is not None:
                last = max(last, fields.received_at)
            lines.append(_Line(last, self._seq, reader, position, raw, fields, error))
        reader.read = position
        return iter(lines)

    def _store(self, lines: list[_Line], result: DrainResult) -> None:
        """Store a batch in one transaction (each alone if that fails), then count it done."""
        good = [line for line in lines if line.fields is not None]
        results: list[InboundResult | None] = []
        if good:
            batch = [line.fields for line in good if line.fields is not None]
            try:
                with self.db.write_turn(), self.db.session() as session:
                    results += store_inbound_batch(session, self.settings, batch)
            except Exception as exc:
                if _transient(exc):
                    raise
                results = [self._store_one(line) for line in good]
        for stored in results:
            if stored is not None:
                _count(result, stored)
        for line in lines:
            if line.fields is None:
                self._set_aside(line)
                result.set_aside += 1
            line.reader.offset = max(line.reader.offset, line.end)
        if any(r is not None and r.reply_enqueued for r in results):
            notify_enqueued()
            for pid in {line.reader.pid for line in lines}:
                _poke(_sender(), _address(_WAKE_WEB, self.folder, pid))

    def _store_one(self, line: _Line) -> InboundResult | None:
        """Store one line in a transaction of its own; set it aside if it can never be stored."""
        assert line.fields is not None
        try:
            with self.db.write_turn(), self.db.session() as session:
                return store_inbound(session, self.settings, line.fields)
        except Exception as exc:
            if _transient(exc):
                raise
            log.exception("journal: %s could not be stored", line.fields.sid)
            line.error = f"{type(exc).__name__}: {str(exc)[:300]}"
            line.fields = None
            return None

    def _set_aside(self, line: _Line) -> None:
        """Keep a line that can never be stored in journal-bad.jsonl, and say so in the log."""
        name = line.reader.name
        log.error("journal: a line of %s is set aside in %s: %s", name, BAD_FILE, line.error)
        record = {
            "error": line.error,
            "file": line.reader.name,
            "line": line.raw.decode("utf-8", errors="replace").rstrip("\n"),
            "at": datetime.now(UTC).isoformat(),
        }
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self.folder / BAD_FILE, flags, 0o600)
        try:
            os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _drop(self, result: DrainResult) -> int:
        """Delete the files read to their end whose writers let them go; return how many.

        A last line without its newline in a file its writer let go of was never answered
        (the writer stopped half-way): it is set aside.
        """
        done = []
        for reader in self._readers.values():
            if _in_use(reader.fd):
                continue  # its web process may still write to it
            rest = _written(os.pread(reader.fd, READ_BYTES, reader.offset))
            if b"\n" in rest:
                continue  # whole lines to store first: the next pass
            if rest:
                line = _Line(datetime.now(UTC), 0, reader, reader.offset + len(rest), rest, None)
                line.error = "torn: the line's writer stopped before its end"
                self._set_aside(line)
                result.set_aside += 1
                reader.offset = line.end
            done.append(reader)
        if not done:
            return 0
        self.db.make_durable()  # the lines are only in the database from here on
        for reader in done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / reader.name)
            os.close(reader.fd)
            del self._readers[reader.name]
        return len(done)


def _in_use(fd: int) -> bool:
    """Tell whether a journal file's web process may still write to it (holds its lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def _written(data: bytes) -> bytes:
    """Return what was written of a journal file's bytes: up to its first zero byte."""
    end = data.find(0)
    return data if end < 0 else data[:end]


def _transient(error: BaseException) -> bool:
    """Tell whether an error may pass (the database away, a file system error): keep the lines.

    Anything else (a constraint, a bug) would fail the same way every time: the line it
    happened to is set aside, so it does not hold up the lines after it.
    """
    return database_unavailable(error) or isinstance(error, OSError)


def _count(result: DrainResult, stored: InboundResult) -> None:
    """Count a text the drain stored (or found stored already), as the webhook used to."""
    if stored.created:
        result.stored += 1
        WEBHOOKS.labels("inbound", "stored").inc()
    else:
        result.duplicates += 1
        WEBHOOKS.labels("inbound", "duplicate").inc()
