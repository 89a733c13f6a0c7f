"""A durable local spool for the webhooks the database could not take.

Twilio does not retry a webhook that was answered 5xx, so when the database is away an inbound
message or status callback is written here (fsynced) and answered 200; a worker replays the
spool once the database is back. Replaying is safe to repeat: inbound messages are stored once
per MessageSid and the worker skips a status callback already kept for that sid and status.

Files, all in one folder (``SPOOL_DIR``, a local file system: the locks are ``flock``):

- ``spool-<pid>.jsonl``: what process ``<pid>`` spooled, one JSON object per line,
  ``{"kind": "inbound"|"status", "form": {...}, "mid": int|null, "at": "<UTC ISO time>"}``.
  A line is written with one ``write`` on an ``O_APPEND`` descriptor and fsynced (the folder too
  when the file is new) before the webhook is answered.
- ``spool-<pid>.jsonl.replaying-<pid>-<n>``: a file taken by a replayer; writers never touch it.
- ``spool-bad.jsonl``: lines that can never be handled (invalid JSON, a wrong shape, or a line
  the handler rejected with ``BadEntry``), each kept as ``{"error", "file", "line", "at"}``.
- ``spool.lock``: held (exclusively) by a writer while it opens, writes and fsyncs, and by a
  replayer while it renames the writers' files; so a line is either completely in a file before
  the rename or written to a fresh file after it, never lost in a file being replayed.
- ``replay.lock``: held by the one replayer at work. Another replayer finds it taken and returns
  at once (``ReplayResult.busy``), so two replayers never handle the same line.

How a replay goes (``replay()``), holding ``replay.lock`` throughout:

1. Files already named ``*.replaying-*`` are left from an earlier replay: one that stopped
   because the handler failed, or whose process died (the kernel released its lock). They are
   replayed first, since every line in them is older than any writer's current file. Holding
   ``replay.lock`` proves their earlier owner is gone, whatever its pid was (pids are reused,
   e.g. in containers), so nothing needs to compare pids.
2. Only when none is left, each ``spool-<pid>.jsonl`` is renamed (under ``spool.lock``) to a
   fresh ``*.replaying-<our pid>-<n>`` name, and those are replayed.
3. The lines of the files being replayed are merged by their ``at`` time (within one file,
   always in file order), and the handler is called for each. A file is deleted as soon as
   every line in it has been handled. A line whose handler raises ``BadEntry`` is set aside.
4. Any other exception from the handler (the database is still away) stops the replay: each
   unfinished file is rewritten to hold only its lines not yet handled (a fsynced copy renamed
   over it) and stays as ``*.replaying-*`` for the next replay, which starts with it.

A replayer killed half-way leaves its files as ``*.replaying-*``; the next replay handles them
again from their last rewrite, so a few lines may be handled twice: the handlers deduplicate.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)

KINDS = ("inbound", "status")
SPOOL_LOCK = "spool.lock"
REPLAY_LOCK = "replay.lock"
BAD_FILE = "spool-bad.jsonl"
_LIVE = re.compile(r"^spool-\d+\.jsonl$")
_REPLAYING = re.compile(r"^spool-\d+\.jsonl\.replaying-\d+-\d+$")
_TMP_SUFFIX = ".tmp"
_MAX_MID_DIGITS = 18  # a BIGINT holds 18 digits for sure


class BadEntry(Exception):
    """A spooled line that no retry can handle: it is set aside in spool-bad.jsonl."""


@dataclass(frozen=True)
class Entry:
    """One spooled webhook."""

    kind: str
    form: dict[str, str]
    mid: int | None
    at: str


@dataclass
class ReplayResult:
    """What a replay did."""

    replayed: int = 0
    set_aside: int = 0
    busy: bool = False  # another replayer was at work: nothing was done
    error: Exception | None = None  # why the replay stopped early; its lines wait for next time


def database_unavailable(error: BaseException) -> bool:
    """Tell whether a database error means "cannot write now" rather than "this is wrong".

    Lost or refused connections, operational errors (a server shutting down, a lock timeout,
    a serialization failure) and an exhausted pool: yes. Integrity, data and programming
    errors: no.
    """
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError))


def parse_mid(value: str | None) -> int | None:
    """Return our message id from a status callback's `mid` query parameter, if it is one."""
    if value and value.isascii() and value.isdigit() and len(value) <= _MAX_MID_DIGITS:
        return int(value)
    return None


# Writing ---------------------------------------------------------------------------------


def append(
    spool_dir: str | os.PathLike[str],
    kind: str,
    form: Mapping[str, str],
    query_args: Mapping[str, str],
) -> Path:
    """Append one webhook to this process's spool file, durably; return the file's path.

    Raises OSError when it cannot be written (then nothing may be acknowledged).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown spool kind {kind!r}")
    directory = Path(spool_dir)
    _ensure_directory(directory)
    fields = {str(k): str(v) for k, v in form.items()}
    mid = parse_mid(query_args.get("mid"))
    path = directory / f"spool-{os.getpid()}.jsonl"
    with _flock(directory / SPOOL_LOCK):
        record = {"kind": kind, "form": fields, "mid": mid, "at": _now()}
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            fd = os.open(
                path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
            new = True
        except FileExistsError:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            new = False
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A process that died mid-write (and whose pid we now have) left half a line:
                # end it, so our line stays whole (the half one is set aside at replay).
                line = b"\n" + line
            _write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            _fsync_directory(directory)
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _ensure_directory(directory: Path) -> None:
    if directory.is_dir():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _fsync_directory(directory.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `path` (created if needed); yield False if it is taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            if blocking or exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            locked = False
        yield locked
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# Replaying -------------------------------------------------------------------------------


def pending(spool_dir: str | os.PathLike[str]) -> bool:
    """Tell cheaply whether anything waits in the spool (no lock is taken)."""
    try:
        with os.scandir(spool_dir) as entries:
            return any(_LIVE.match(e.name) or _REPLAYING.match(e.name) for e in entries)
    except FileNotFoundError:
        return False


def replay(spool_dir: str | os.PathLike[str], handler: Callable[[Entry], None]) -> ReplayResult:
    """Hand every spooled webhook to `handler`, in order; see the module's description.

    The handler raises BadEntry for a line no retry can handle (it is set aside) and anything
    else to stop (the line and those after it are kept for the next replay).
    """
    directory = Path(spool_dir)
    result = ReplayResult()
    if not directory.is_dir():
        return result
    with _flock(directory / REPLAY_LOCK, blocking=False) as locked:
        if not locked:
            result.busy = True
            return result
        for tmp in directory.glob(f"*.replaying-*{_TMP_SUFFIX}"):
            tmp.unlink()  # a rewrite cut short: the file it was to replace is still whole
        _Replay(directory, handler, result).run()
    return result


def _replaying_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if _REPLAYING.match(p.name))


def _claim_live_files(directory: Path) -> list[Path]:
    """Rename each writer's file to a replaying name (writers then start fresh files)."""
    claimed = []
    with _flock(directory / SPOOL_LOCK):
        for live in sorted(p for p in directory.iterdir() if _LIVE.match(p.name)):
            n = 0
            while (target := live.with_name(f"{live.name}.replaying-{os.getpid()}-{n}")).exists():
                n += 1  # a name left by an earlier process that had our pid
            live.rename(target)
            claimed.append(target)
        if claimed:
            _fsync_directory(directory)
    return claimed


class _Reader:
    """Reads one spool file line by line, remembering how far the lines were handled."""

    def __init__(self, replay: _Replay, index: int, path: Path) -> None:
        self.replay = replay
        self.index = index
        self.path = path
        self.file: IO[bytes] = path.open("rb")
        self.line_no = 0
        self.done_offset = 0  # every line before this offset has been handled
        self.next_offset = 0
        self.current: Entry | None = None
        self.current_raw = b""

    def key(self) -> tuple[str, int, int]:
        assert self.current is not None
        return (self.current.at, self.index, self.line_no)

    def advance(self) -> bool:
        """Load the next good line; set bad ones aside. At the end, delete the file."""
        while True:
            self.done_offset = self.next_offset
            raw = self.file.readline()
            if not raw:
                self.close()
                self.path.unlink()
                self.replay.deleted = True
                self.current = None
                return False
            self.line_no += 1
            self.next_offset = self.file.tell()
            if not raw.strip():
                continue
            try:
                self.current = _parse(raw)
                self.current_raw = raw
                return True
            except ValueError as exc:
                self.replay.set_aside(self.path, raw, f"line {self.line_no}: {exc}")

    def keep_rest(self) -> None:
        """Keep only the lines not handled yet, for the next replay."""
        self.close()
        if self.done_offset == 0:
            return
        tmp = self.path.with_name(self.path.name + _TMP_SUFFIX)
        with self.path.open("rb") as source, tmp.open("wb") as target:
            source.seek(self.done_offset)
            while chunk := source.read(1 << 20):
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())
        tmp.replace(self.path)

    def close(self) -> None:
        self.file.close()


def _parse(raw: bytes) -> Entry:
    """Turn a spool line into an Entry; ValueError says what is wrong with it."""
    if not raw.endswith(b"\n"):
        raise ValueError("incomplete line (a writer died mid-write)")
    data: Any = json.loads(raw)  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    kind, form, mid, at = data.get("kind"), data.get("form"), data.get("mid"), data.get("at")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if not isinstance(form, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in form.items()
    ):
        raise ValueError("form is not an object of strings")
    if not form.get("MessageSid"):
        raise ValueError("form has no MessageSid")
    if mid is not None and (isinstance(mid, bool) or not isinstance(mid, int)):
        raise ValueError("mid is not a whole number")
    return Entry(kind, form, mid, at if isinstance(at, str) else "")


class _Replay:
    """One replay, run while holding replay.lock."""

    def __init__(
        self, directory: Path, handler: Callable[[Entry], None], result: ReplayResult
    ) -> None:
        self.directory = directory
        self.handler = handler
        self.result = result
        self.deleted = False
        self._bad: IO[bytes] | None = None

    def run(self) -> None:
        try:
            leftovers = _replaying_files(self.directory)
            if leftovers and not self._replay_files(leftovers):
                return
            claimed = _claim_live_files(self.directory)
            if claimed:
                self._replay_files(claimed)
        finally:
            if self._bad is not None:
                self._bad.close()
            if self.deleted:
                _fsync_directory(self.directory)

    def _replay_files(self, paths: list[Path]) -> bool:
        """Replay these files' lines merged in time order; tell whether all were handled."""
        readers: list[_Reader] = []
        try:
            for index, path in enumerate(paths):
                readers.append(_Reader(self, index, path))
            heap = [(r.key(), r.index) for r in readers if r.advance()]
            heapq.heapify(heap)
            while heap:
                _key, index = heapq.heappop(heap)
                reader = readers[index]
                assert reader.current is not None
                try:
                    self.handler(reader.current)
                    self.result.replayed += 1
                except BadEntry as exc:
                    self.set_aside(reader.path, reader.current_raw, str(exc))
                except Exception as exc:
                    self.result.error = exc
                    for r in readers:
                        if not r.file.closed:
                            r.keep_rest()
                    return False
                if reader.advance():
                    heapq.heappush(heap, (reader.key(), reader.index))
            return True
        finally:
            for r in readers:
                r.close()

    def set_aside(self, path: Path, raw: bytes, reason: str) -> None:
        """Keep a line that cannot be handled in spool-bad.jsonl, and say so in the log."""
        log.error("spool: a line of %s is set aside in %s: %s", path.name, BAD_FILE, reason)
        if self._bad is None:
            self._bad = (self.directory / BAD_FILE).open("ab")
        record = {
            "error": reason,
            "file": path.name,
            "line": raw.decode("utf-8", errors="replace").rstrip("\n"),
            "at": _now(),
        }
        self._bad.write((json.dumps(record, ensure_ascii=False) + "\n").encode())
        self._bad.flush()
        os.fsync(self._bad.fileno())
        self.result.set_aside += 1
