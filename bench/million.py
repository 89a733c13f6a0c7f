"""Benchmarks 3 and 4, a million messages: reading the inbox through HTTP at full size.

A bulk generator writes 1,000,000 messages over 100,000 conversations straight into a database
the app migrated itself (`twilio-chat prepare`): SQLite through sqlite3's executemany in large
transactions, PostgreSQL through COPY. The rows are what the app writes: inbound texts, their
automatic replies (with reply jobs) and some human sends, statuses and error codes, a year of
timestamps, unique sids, and each contact's conversation summary (last message, unread count).
gunicorn with the production config then serves the app, and one keep-alive client times the
JSON API's answers to what people open: the conversation list, threads, inbound messages, a
text search and the dashboard's statistics. The SQL each one runs is captured in-process and
its query plan recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench.common import (
    BIN,
    Figure,
    app_env,
    at_most,
    equal,
    free_port,
    gunicorn,
    log,
    percentile,
    rss_mib,
    twilio_chat,
    write_result,
)

OUR_NUMBER = "+15005550006"
ACCOUNT_SID = "AC" + "0" * 32
BENCH_DATABASE = "bench_million"
SEED = 20261126

# Search words: each message gets at most one, with these shares; MISSING occurs nowhere.
SEARCH_WORDS = {"order": 0.08, "refund": 0.01, "invoice": 0.001, "passport": 0.0001}
MISSING = "xylophone"

# The words bodies are made of: none contains a search word (the search is by substring).
OPENINGS = ["Hi", "Hello", "Hey", "Good morning", "Good evening", "Thanks", "Quick question", ""]
SUBJECTS = [
    "the shop",
    "my appointment",
    "the delivery",
    "the parcel",
    "my booking",
    "the table for two",
    "the repair",
    "my account",
    "the new menu",
    "the opening hours",
    "the parking",
    "the class on Monday",
    "my subscription",
    "the gift card",
    "the pickup",
]
VERBS = [
    "is",
    "can you check",
    "what about",
    "please confirm",
    "any news on",
    "I need help with",
    "can I change",
    "I want to cancel",
    "how long for",
    "is there space at",
]
TAILS = [
    "today?",
    "tomorrow?",
    "this weekend?",
    "at 5 pm?",
    "thanks!",
    "please.",
    "asap",
    "when you can.",
    "no rush.",
    ":)",
    "",
]
AUTO_REPLY = "Thanks for your message! We answer within the hour, 9-17 on weekdays."
AI_REPLIES = [
    "Sure, I have checked it for you: everything is on track.",
    "We are open 9-17 on weekdays and 10-14 on Saturdays.",
    "Your booking is confirmed. See you soon!",
    "I am sorry for the trouble; a colleague will call you today.",
    "Yes, you can change it until the day before.",
]
HUMAN_SENDS = [
    "Hi, your parcel is ready for pickup.",
    "Reminder: your appointment is tomorrow at 10.",
    "Thanks for visiting us today!",
    "We have a new menu this week, come and try it.",
]
# Outbound end states: (status, error code, weight); the codes are Twilio's.
OUTBOUND_STATES = [
    ("delivered", None, 86),
    ("sent", None, 5),
    ("undelivered", 30003, 3),
    ("undelivered", 30005, 1),
    ("undelivered", 30007, 2),
    ("failed", 30008, 2),
    ("read", None, 1),
]


# The generator -----------------------------------------------------------------------------


@dataclass
class Generated:
    """What the generator wrote, and what the timed requests need to know about it."""

    messages: int = 0
    contacts: int = 0
    jobs: int = 0
    opt_outs: int = 0
    inbound: int = 0
    outbound: int = 0
    word_counts: dict[str, int] = field(default_factory=dict)
    numbers: list[str] = field(default_factory=list)  # contact numbers, by rank (busiest first)
    messages_per_contact: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


class Stamp:
    """Format microsecond UNIX times as the app stores them (UTC), quickly."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix  # "" for SQLite's naive UTC text, "+00" for PostgreSQL
        self.days: dict[int, str] = {}

    def __call__(self, micros: int) -> str:
        """Return `micros` as 'YYYY-MM-DD HH:MM:SS.ffffff' (plus the suffix)."""
        seconds, fraction = divmod(micros, 1_000_000)
        day, second = divmod(seconds, 86_400)
        prefix = self.days.get(day)
        if prefix is None:
            prefix = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
            self.days[day] = prefix
        hour, rest = divmod(second, 3600)
        minute, sec = divmod(rest, 60)
        return f"{prefix} {hour:02d}:{minute:02d}:{sec:02d}.{fraction:06d}{self.suffix}"


def body_pool(rng: random.Random, size: int) -> list[str]:
    """Return `size` plausible texts, none holding a search word."""
    pool = []
    for _ in range(size):
        parts = [rng.choice(OPENINGS), rng.choice(VERBS), rng.choice(SUBJECTS), rng.choice(TAILS)]
        text = " ".join(p for p in parts if p)
        pool.append(text[0].upper() + text[1:])
    words = [*SEARCH_WORDS, MISSING]
    bad = [
        t
        for t in pool + AI_REPLIES + HUMAN_SENDS + [AUTO_REPLY]
        if any(w in t.lower() for w in words)
    ]
    assert not bad, f"a generated text holds a search word: {bad[0]!r}"
    return pool


def contact_ranks(rng: random.Random, contacts: int, exchanges: int) -> list[int]:
    """Return the contact (rank) of each exchange: all contacts at least once, busy ones often."""
    weights = [1 / (rank + 100) for rank in range(contacts)]
    owners = list(range(contacts)) + rng.choices(
        range(contacts), weights=weights, k=exchanges - contacts
    )
    rng.shuffle(owners)
    return owners


MessageRow = tuple[Any, ...]
JobRow = tuple[Any, ...]


def generate(
    total: int,
    contacts: int,
    stamp: Stamp,
    now: datetime,
    write_messages: Callable[[list[MessageRow]], None],
    write_jobs: Callable[[list[JobRow]], None],
    batch: int = 50_000,
) -> tuple[Generated, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Make `total` messages over `contacts` conversations, handing rows over in batches.

    Each exchange is an inbound text, usually answered automatically (with the done reply job
    the worker would have left), sometimes followed by a person's send. Messages are spread
    evenly over the year before `now`, ids in time order as the app writes them. Returns the
    summary, the contact rows and the opt-out rows.
    """
    rng = random.Random(SEED)
    random_ = rng.random
    pool = body_pool(rng, 5000)
    # About 1.92 messages per exchange: a slightly shorter list of owners is used up whole (and
    # then a little again), so every contact has messages.
    exchanges = max(int(total / 1.92 * 0.97), contacts)
    owners = contact_ranks(rng, contacts, exchanges)
    numbers = [f"+1555{2_000_000 + rank:07d}" for rank in range(contacts)]
    end = int(now.timestamp() * 1_000_000) - 60_000_000
    start = end - 365 * 86_400 * 1_000_000
    step = (end - start) // total  # between two messages: about 30 s for a million

    def at(message_id: int) -> int:
        return start + (message_id - 1) * step + int(random_() * step * 0.5)

    out_states = [(s, c) for s, c, w in OUTBOUND_STATES for _ in range(w)]
    engine_share, auto_share = 0.55, 0.75  # cumulative: engine 55 %, auto_reply 20 %, ai 25 %
    words = list(SEARCH_WORDS.items())
    thresholds = []
    acc = 0.0
    for word, share in sorted(words, key=lambda w: w[1]):
        acc += share
        thresholds.append((acc, word))

    result = Generated(numbers=numbers, word_counts={w: 0 for w in SEARCH_WORDS})
    last_id = [0] * contacts
    last_at = [""] * contacts
    first_at = [""] * contacts
    last_out_at = [""] * contacts
    unread = [0] * contacts
    per_contact = [0] * contacts
    rows: list[MessageRow] = []
    jobs: list[JobRow] = []
    mid = 0
    jid = 0
    media_photo = '[{"url": "https://api.twilio.com/2010-04-01/Accounts/' + ACCOUNT_SID
    media_photo += '/Messages/MM0/Media/ME0", "content_type": "image/jpeg"}]'
    choice = rng.choice
    k = 0
    while mid < total:
        owner = owners[k % exchanges]
        k += 1
        number = numbers[owner]
        # The inbound text: most texts are unique, as people's are.
        body = pool[int(random_() * 5000)]
        if random_() < 0.7:
            body = f"{body} ({int(random_() * 100_000)})"
        u = random_()
        for threshold, word in thresholds:
            if u < threshold:
                body = f"{body} {word}"
                result.word_counts[word] += 1
                break
        mid += 1
        in_sid = f"SM{mid:032x}"
        when = stamp(at(mid))
        media = media_photo if random_() < 0.02 else "[]"
        rows.append(
            (mid, in_sid, ACCOUNT_SID, "inbound", OUR_NUMBER, None, number, body, media,
             "received", None, None, 1, None, None, 0, when, when, None)
        )  # fmt: skip
        result.inbound += 1
        per_contact[owner] += 1
        if not first_at[owner]:
            first_at[owner] = when
        last_id[owner], last_at[owner] = mid, when
        unread[owner] += 1
        # The automatic reply, and the reply job the worker finished.
        if random_() < 0.88 and mid < total:
            reply_at = at(mid + 1)
            v = random_()
            if v < engine_share:
                source, text = "engine", f"Echo: {body}"
            elif v < auto_share:
                source, text = "auto_reply", AUTO_REPLY
            else:
                source, text = "ai", choice(AI_REPLIES)
            status, code = choice(out_states)
            mid += 1
            sent = stamp(reply_at + 400_000)
            rows.append(
                (mid, f"SM{mid:032x}", ACCOUNT_SID, "outbound", OUR_NUMBER, None, number, text,
                 "[]", status, code, None, 1 + len(text) // 161, source, in_sid, 0,
                 stamp(reply_at), stamp(reply_at + 3_000_000), sent)
            )  # fmt: skip
            jid += 1
            jobs.append(
                (jid, "reply", f'{{"message_id": {mid - 1}}}', "done", f"reply:{in_sid}", 1, 5,
                 when, None, "bench", None, when, sent)
            )  # fmt: skip
            result.outbound += 1
            per_contact[owner] += 1
            last_id[owner], last_at[owner] = mid, stamp(reply_at)
        # Sometimes a person writes too (and has read the conversation by then).
        if random_() < 0.04 and mid < total:
            human_at = at(mid + 1)
            status, code = choice(out_states)
            mid += 1
            text = choice(HUMAN_SENDS)
            human = stamp(human_at)
            rows.append(
                (mid, f"SM{mid:032x}", ACCOUNT_SID, "outbound", OUR_NUMBER, None, number, text,
                 "[]", status, code, None, 1, choice(("panel", "api")), None, 0,
                 human, stamp(human_at + 3_000_000), stamp(human_at + 400_000))
            )  # fmt: skip
            result.outbound += 1
            per_contact[owner] += 1
            last_id[owner], last_at[owner] = mid, human
            last_out_at[owner] = human
            unread[owner] = 0
        if len(rows) >= batch:
            write_messages(rows)
            rows = []
        if len(jobs) >= batch:
            write_jobs(jobs)
            jobs = []
    if rows:
        write_messages(rows)
    if jobs:
        write_jobs(jobs)
    result.messages = mid
    result.jobs = jid
    result.messages_per_contact = per_contact

    contact_rows = []
    for rank in range(contacts):
        if not last_id[rank]:
            continue
        name = f"Customer {rank}" if rank % 3 == 0 else None
        contact_rows.append(
            (rank + 1, numbers[rank], name, last_out_at[rank] or None, last_id[rank],
             last_at[rank], unread[rank], None, first_at[rank])
        )  # fmt: skip
    result.contacts = len(contact_rows)
    opt_rows = []
    for i, rank in enumerate(range(contacts - 1, 0, -100)):  # 1 % of contacts opted out
        opt_rows.append((i + 1, OUR_NUMBER, numbers[rank], 1, "keyword STOP", last_at[rank]))
    result.opt_outs = len(opt_rows)
    return result, contact_rows, opt_rows


MESSAGE_COLUMNS = (
    "id, sid, account_sid, direction, our_number, messaging_service_sid, contact_number, body, "
    "media, status, error_code, error_message, num_segments, source, reply_to_sid, redacted, "
    "created_at, updated_at, sent_at"
)
JOB_COLUMNS = (
    "id, kind, payload, status, unique_key, attempts, max_attempts, run_at, lease_until, "
    "locked_by, last_error, created_at, finished_at"
)
CONTACT_COLUMNS = (
    "id, number, name, last_read_at, last_message_id, last_message_at, unread_count, "
    "replies_paused_until, created_at"
)
OPT_OUT_COLUMNS = "id, sender, number, opted_out, reason, changed_at"


def _insert(table: str, columns: str) -> str:
    marks = ", ".join("?" for _ in columns.split(","))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - our own names


def load_sqlite(path: Path, total: int, contacts: int, now: datetime) -> Generated:
    """Fill the app's SQLite tables with executemany, in transactions of 50,000 rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a benchmark's data: rebuilt when lost
    conn.execute("PRAGMA cache_size=-262144")
    insert_message = _insert("messages", MESSAGE_COLUMNS)
    insert_job = _insert("jobs", JOB_COLUMNS)

    def write(sql: str) -> Callable[[list[tuple[Any, ...]]], None]:
        def run(rows: list[tuple[Any, ...]]) -> None:
            conn.execute("BEGIN")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")

        return run

    # The text-search triggers (body changes and deletes of indexed rows) are dropped for the
    # load; the index is built for all rows at once after (FTS5's 'rebuild') and marked as
    # holding them, then the same triggers are put back.
    # Likewise, secondary indexes are built faster from sorted rows than row by row.
    triggers = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'messages'"
    ).fetchall()
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        " AND tbl_name IN ('messages', 'jobs')"
    ).fetchall()
    fts = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'").fetchone()
    started = time.perf_counter()
    for name, _sql in triggers:
        conn.execute(f'DROP TRIGGER "{name}"')
    for name, _sql in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    result, contact_rows, opt_rows = generate(
        total, contacts, Stamp(""), now, write(insert_message), write(insert_job)
    )
    loaded = time.perf_counter()
    write(_insert("contacts", CONTACT_COLUMNS))(contact_rows)
    write(_insert("opt_outs", OPT_OUT_COLUMNS))(opt_rows)
    summarized = time.perf_counter()
    for _name, sql in indexes:
        conn.execute(sql)
    indexed = time.perf_counter()
    if fts:
        conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
        # The index now holds every message (migration 0005: the worker indexes newer ones).
        conn.execute("UPDATE search_index SET indexed_through = (SELECT max(id) FROM messages)")
    for _name, sql in triggers:
        conn.execute(sql)
    searchable = time.perf_counter()
    conn.execute("ANALYZE")
    analyzed = time.perf_counter()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    result.seconds = {
        "messages_and_jobs": round(loaded - started, 2),
        "contacts_and_opt_outs": round(summarized - loaded, 2),
        "indexes": round(indexed - summarized, 2),
        "search_index": round(searchable - indexed, 2),
        "analyze": round(analyzed - searchable, 2),
    }
    return result


def _pg_conninfo(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if database:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def fresh_pg_database(admin_url: str, name: str) -> str:
    """Drop and create database `name` on admin_url's server; return its SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    with psycopg.connect(_pg_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, name: str) -> None:
    """Drop database `name` on admin_url's server."""
    import psycopg

    with psycopg.connect(_pg_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load_postgresql(url: str, total: int, contacts: int, now: datetime) -> Generated:
    """Fill the app's PostgreSQL tables with COPY, then ANALYZE them."""
    import psycopg

    conn = psycopg.connect(_pg_conninfo(url), autocommit=True)
    conn.execute("SET synchronous_commit = off")

    def write(table: str, columns: str) -> Callable[[list[tuple[Any, ...]]], None]:
        def run(rows: list[tuple[Any, ...]]) -> None:
            sql = f"COPY {table} ({columns}) FROM STDIN"
            with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)

        return run

    # Secondary indexes (the trigram one above all) are built faster from all rows at once
    # than row by row: drop them for the load and create the same ones after. Indexes that
    # back a primary key or unique constraint stay.
    indexes = conn.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x"
        " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
        " WHERE t.relname IN ('messages', 'jobs')"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)"
    ).fetchall()
    started = time.perf_counter()
    for name, _sql in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    result, contact_rows, opt_rows = generate(
        total,
        contacts,
        Stamp("+00"),
        now,
        write("messages", MESSAGE_COLUMNS),
        write("jobs", JOB_COLUMNS),
    )
    loaded = time.perf_counter()
    write("contacts", CONTACT_COLUMNS)(contact_rows)
    write("opt_outs", OPT_OUT_COLUMNS)([(*row[:3], bool(row[3]), *row[4:]) for row in opt_rows])
    summarized = time.perf_counter()
    build_indexes(url, [sql for _name, sql in indexes])
    indexed = time.perf_counter()
    for table in ("messages", "jobs", "contacts", "opt_outs"):
        sequence = f"pg_get_serial_sequence('{table}', 'id')"
        conn.execute(f"SELECT setval({sequence}, max(id)) FROM {table}")  # noqa: S608
    conn.execute("VACUUM ANALYZE")  # and the visibility map that index-only scans need
    analyzed = time.perf_counter()
    conn.close()
    result.seconds = {
        "messages_and_jobs": round(loaded - started, 2),
        "contacts_and_opt_outs": round(summarized - loaded, 2),
        "indexes": round(indexed - summarized, 2),
        "analyze": round(analyzed - indexed, 2),
    }
    return result


def build_indexes(url: str, statements: list[str]) -> None:
    """Run CREATE INDEX statements on two connections at once: the trigram index alone.

    Building the GIN trigram index over a million bodies takes one core for most of the
    index time (more memory does not shorten it); the B-tree indexes are built meanwhile on
    the other core.
    """
    import psycopg

    gin = [sql for sql in statements if " USING gin " in sql]
    others = [sql for sql in statements if sql not in gin]
    failures: list[BaseException] = []

    def run(batch: list[str]) -> None:
        try:
            with psycopg.connect(_pg_conninfo(url), autocommit=True) as conn:
                conn.execute("SET maintenance_work_mem = '256MB'")
                for sql in batch:
                    conn.execute(sql)
        except BaseException as exc:  # reported in the caller's thread
            failures.append(exc)

    helper = threading.Thread(target=run, args=(gin,), name="gin-index")
    helper.start()
    run(others)
    helper.join()
    if failures:
        raise failures[0]


# Query plans -------------------------------------------------------------------------------


@dataclass
class Captured:
    """One SQL statement the app ran, its parameters and its query plan."""

    sql: str
    params: Any
    plan: list[str] = field(default_factory=list)
    full_scan: bool = False


def _jsonable(params: Any) -> Any:
    if isinstance(params, dict):
        return {k: _jsonable(v) for k, v in params.items()}
    if isinstance(params, list | tuple):
        return [_jsonable(v) for v in params]
    if isinstance(params, str | int | float | bool) or params is None:
        return params
    return str(params)


# The newest messages with no filter walk the primary key backwards and stop at the limit.
PK_WALK = re.compile(r"FROM messages ORDER BY messages\.id DESC LIMIT", re.S)


def _sqlite_plan(conn: sqlite3.Connection, sql: str, params: Any) -> tuple[list[str], bool]:
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    depth: dict[int, int] = {0: -1}
    lines = []
    full = False
    for node, parent, _unused, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
        if re.match(r"SCAN messages\b(?!_)", detail) and "USING" not in detail:
            full = full or not PK_WALK.search(" ".join(sql.split()))
    return lines, full


# On PostgreSQL a walk down the primary key that filters out this many rows read a tenth of
# the table: a full scan in all but name (a search for a rare word did that before 0004).
PG_WALK_LIMIT = 100_000


def _pg_plan(conn: Any, sql: str, params: Any) -> tuple[list[str], bool]:
    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
    lines = [r[0] for r in rows]
    full = False
    node = ""
    for line in lines:
        if "Scan" in line and " on " in line:
            node = line
        if re.search(r"Seq Scan on messages\b(?!_)", line):
            full = True
        removed = re.search(r"Rows Removed by Filter: (\d+)", line)
        if removed and re.search(r" on messages\b(?!_)", node):
            full = full or int(removed.group(1)) >= PG_WALK_LIMIT
    return lines, full


def capture_plans(
    env: dict[str, str], token: str, requests_by_endpoint: dict[str, list[str]], database: str
) -> dict[str, list[Captured]]:
    """Run each endpoint's requests in-process, capture their SQL and record its plans."""
    from sqlalchemy import event

    from twilio_chat import create_app
    from twilio_chat.db.engine import get_db
    from twilio_chat.settings import build_settings

    app = create_app(build_settings(env))
    db = get_db(app)
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", record)
    captured: dict[str, list[Captured]] = {}
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for name, paths in requests_by_endpoint.items():
        out: list[Captured] = []
        for path in paths:
            seen.clear()
            answer = client.get(path, headers=headers)
            assert answer.status_code == 200, (path, answer.status_code)
            for statement, params in seen:
                if any(c.sql == statement and c.params == params for c in out):
                    continue
                out.append(Captured(statement, params))
        captured[name] = out
    event.remove(db.engine, "before_cursor_execute", record)
    db.dispose()

    if database == "sqlite":
        lite = sqlite3.connect(env["DB_PATH"])
        for items in captured.values():
            for c in items:
                c.plan, c.full_scan = _sqlite_plan(lite, c.sql, c.params)
        lite.close()
    else:
        import psycopg

        with psycopg.connect(_pg_conninfo(env["DATABASE_URL"])) as pg:
            for items in captured.values():
                for c in items:
                    c.plan, c.full_scan = _pg_plan(pg, c.sql, c.params)
    return captured


# Timing over HTTP ---------------------------------------------------------------------------


def endpoint_requests(generated: Generated, count: int, rng: random.Random) -> dict[str, list[str]]:
    """Return the paths to time for each endpoint (`count` each, parameters varied)."""
    busy = [n for n, c in zip(generated.numbers, generated.messages_per_contact, strict=True) if c]
    weights = [c for c in generated.messages_per_contact if c]
    threads = []
    for i in range(count):
        # Half the threads are opened where the traffic is, half anywhere.
        number = rng.choices(busy, weights=weights)[0] if i % 2 else rng.choice(busy)
        threads.append(f"/api/conversations/{number}")
    words = [*SEARCH_WORDS, MISSING]
    return {
        "conversations": ["/api/conversations?limit=50"] * count,
        "thread": threads,
        "inbound": ["/api/messages?direction=inbound&limit=50"] * count,
        "search": [search_path(words[i % len(words)]) for i in range(count)],
        "dashboard": ["/api/stats"] * count,
    }


def search_path(word: str) -> str:
    """The API's text search for a word: the 50 newest messages holding it."""
    return f"/api/messages?text={word}&limit=50"


ENDPOINT_TITLES = {
    "conversations": "conversations, first page (50)",
    "thread": "a thread (100 latest)",
    "inbound": "inbound messages (50)",
    "search": "text search (50)",
    "dashboard": "dashboard statistics",
}


def time_requests(base: str, token: str, paths: Sequence[str], warmup: int) -> dict[str, Any]:
    """GET the first `warmup` paths untimed, then time the rest over one keep-alive connection."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    for path in paths[:warmup]:
        session.get(base + path, timeout=30).raise_for_status()
    times: list[float] = []
    by_path: dict[str, list[float]] = {}
    errors = 0
    timed = paths[warmup:]
    for path in timed:
        began = time.perf_counter()
        answer = session.get(base + path, timeout=30)
        _ = answer.content
        elapsed = (time.perf_counter() - began) * 1000
        if answer.status_code != 200:
            errors += 1
        times.append(elapsed)
        by_path.setdefault(path, []).append(elapsed)
    session.close()
    return {
        "requests": len(timed),
        "errors": errors,
        "p50_ms": round(percentile(times, 50), 2),
        "p95_ms": round(percentile(times, 95), 2),
        "p99_ms": round(percentile(times, 99), 2),
        "max_ms": round(max(times), 2),
        "by_path": by_path,
    }


def start_profiles(pids: list[int], folder: Path, seconds: int) -> list[Any]:
    """Record each process with py-spy (collapsed stacks in folder/profile-<pid>.txt)."""
    import subprocess

    spies = []
    for pid in pids:
        out = folder / f"profile-{pid}.txt"
        log(f"profiling pid {pid} into {out}")
        argv = [str(BIN / "py-spy"), "record", "--format", "raw", "-o", str(out)]
        argv += ["-d", str(seconds)]
        spies.append(subprocess.Popen([*argv, "-p", str(pid)], stdout=subprocess.DEVNULL))  # noqa: S603
    return spies


# The benchmark ------------------------------------------------------------------------------


def _message_count(database: str, env: dict[str, str]) -> int:
    if database == "sqlite":
        if not Path(env["DB_PATH"]).exists():
            return 0
        with sqlite3.connect(env["DB_PATH"]) as conn:
            try:
                return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
            except sqlite3.OperationalError:
                return 0
    import psycopg

    try:
        with psycopg.connect(_pg_conninfo(env["DATABASE_URL"])) as conn:
            row = conn.execute("SELECT count(*) FROM messages").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def main(argv: list[str] | None = None) -> int:
    """Run the million-messages benchmark on SQLite or PostgreSQL and write its result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per endpoint")
    parser.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and database")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the data already generated in --work"
    )
    parser.add_argument("--profile", action="store_true", help="record the workers with py-spy")
    parser.add_argument("--no-result", action="store_true", help="print, do not write a result")
    args = parser.parse_args(argv)
    postgres = args.database == "postgresql"
    admin_url = os.environ.get("TEST_DATABASE_URL", "")
    if postgres and not admin_url:
        raise SystemExit("error: the PostgreSQL run needs TEST_DATABASE_URL")

    work = args.work or Path(tempfile.mkdtemp(prefix=f"bench-million-{args.database}-"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    db_path = work / "app.db"
    url = None
    if postgres:
        from sqlalchemy.engine import make_url

        url = make_url(admin_url).set(database=BENCH_DATABASE).render_as_string(False)
    env = app_env(port, db_path, url, WORKER_ENABLED="false")
    reuse = args.reuse and _message_count(args.database, env) >= args.messages
    if not reuse:
        if postgres:
            fresh_pg_database(admin_url, BENCH_DATABASE)
        elif db_path.exists():
            for stale in work.glob("app.db*"):
                stale.unlink()

    log(f"{args.database}: twilio-chat prepare (migrations, first admin)")
    began = time.perf_counter()
    twilio_chat(env, "prepare", timeout=1800)
    prepare_seconds = round(time.perf_counter() - began, 2)
    now = datetime.now(UTC)
    state_file = work / "generated.json"
    if reuse:
        log(f"reusing the data in {work}")
        generated = Generated(**json.loads(state_file.read_text()))
    else:
        log(f"generating {args.messages:,} messages over {args.contacts:,} contacts")
        if postgres:
            assert url is not None
            generated = load_postgresql(url, args.messages, args.contacts, now)
        else:
            generated = load_sqlite(db_path, args.messages, args.contacts, now)
        state_file.write_text(json.dumps(generated.__dict__))
    load_seconds = sum(generated.seconds.values())
    per_100k = round(load_seconds / (generated.messages / 100_000), 2)
    log(f"generated in {load_seconds:.1f} s: {per_100k} s per 100k messages {generated.seconds}")

    token = twilio_chat(env, "create-token", "--user", "admin", "--scope", "read").split()[-1]
    rng = random.Random(SEED + 1)
    paths = endpoint_requests(generated, args.requests + args.warmup, rng)

    log("capturing the SQL of each endpoint and its query plans")
    plan_paths = {
        "conversations": paths["conversations"][:1],
        "thread": [f"/api/conversations/{generated.numbers[0]}", paths["thread"][0]],
        "inbound": paths["inbound"][:1],
        "search": [search_path(w) for w in [*SEARCH_WORDS, MISSING]],
        "dashboard": paths["dashboard"][:1],
    }
    captured = capture_plans(env, token, plan_paths, args.database)
    full_scans = sum(c.full_scan for items in captured.values() for c in items)

    log("timing the endpoints over HTTP (gunicorn, production config)")
    server = gunicorn("app", env, work)
    timings: dict[str, dict[str, Any]] = {}
    try:
        server.wait_ready()
        pids = server.worker_pids()
        spies = start_profiles(pids, work, 60) if args.profile else []
        for name, endpoint_paths in paths.items():
            timings[name] = time_requests(server.url, token, endpoint_paths, args.warmup)
            log(
                f"{name}: p50 {timings[name]['p50_ms']} ms, p95 {timings[name]['p95_ms']} ms, "
                f"errors {timings[name]['errors']}"
            )
        rss = {pid: rss_mib(pid) for pid in server.worker_pids()}
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it recorded so far
            spy.wait()
    finally:
        server.stop()
    worst_rss = max(rss.values()) if rss else 0.0
    log(f"worker RSS {rss} MiB")

    label = "SQLite" if not postgres else "PostgreSQL"
    figures: list[Figure] = [
        at_most("generator, per 100k messages", per_100k, "s", 5),
    ]
    for name, title in ENDPOINT_TITLES.items():
        figures.append(Figure(f"{title}: p50", timings[name]["p50_ms"], "ms"))
        figures.append(at_most(f"{title}: p95", timings[name]["p95_ms"], "ms", 50))
    figures += [
        at_most("web worker RSS (max)", worst_rss, "MiB", 150),
        equal("full scans of messages in the plans", full_scans, "", 0),
        equal("errors", sum(t["errors"] for t in timings.values()), "", 0),
    ]
    search_words = {}
    for word in [*SEARCH_WORDS, MISSING]:
        found = timings["search"]["by_path"].get(search_path(word), [])
        search_words[word] = {
            "messages_holding_it": generated.word_counts.get(word, 0),
            "p50_ms": round(percentile(found, 50), 2),
            "p95_ms": round(percentile(found, 95), 2),
        }
    details = {
        "database": args.database,
        "messages": generated.messages,
        "inbound": generated.inbound,
        "outbound": generated.outbound,
        "contacts": generated.contacts,
        "reply_jobs": generated.jobs,
        "opt_outs": generated.opt_outs,
        "busiest_contact_messages": max(generated.messages_per_contact),
        "prepare_seconds": prepare_seconds,
        "reused_data": reuse,
        "generator_seconds": generated.seconds,
        "requests_per_endpoint": args.requests,
        "warmup_per_endpoint": args.warmup,
        "endpoints": {
            name: {
                "what": ENDPOINT_TITLES[name],
                "example": paths[name][0],
                **{k: v for k, v in t.items() if k != "by_path"},
            }
            for name, t in timings.items()
        },
        "search_words": search_words,
        "worker_rss_mib": list(rss.values()),
        "plans": {
            name: [
                {
                    "sql": " ".join(c.sql.split()),
                    "params": _jsonable(c.params),
                    "plan": c.plan,
                    "full_scan_of_messages": c.full_scan,
                }
                for c in items
            ]
            for name, items in captured.items()
        },
        "server": "gunicorn.conf.py: gthread, 2 processes x 8 threads; WORKER_ENABLED=false",
        "client": "one keep-alive requests.Session, one request at a time, bearer token (read)",
    }
    if args.no_result:
        data = {"figures": [f.as_dict() for f in figures], "details": details}
        (work / "result.json").write_text(json.dumps(data, indent=1))
        for f in figures:
            print(f"{f.label:50} {f.value:>10} {f.unit:4} {f.target:6} {f.met}")
    else:
        write_result(f"million-{args.database}", f"A million messages ({label})", figures, details)
    if args.keep or args.work:
        log(f"kept {work}" + (f" and database {BENCH_DATABASE}" if postgres else ""))
    else:
        shutil.rmtree(work, ignore_errors=True)
        if postgres:
            drop_pg_database(admin_url, BENCH_DATABASE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
