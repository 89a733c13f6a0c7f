"""Benchmark, live updates: Twilio's webhooks while 48 open panel tabs wait for news.

gunicorn with the production config (gunicorn.conf.py) serves the app on 127.0.0.1 with SQLite,
as in bench/latency.py: a reply worker thread in each of its processes, the built-in Twilio
sandbox in the same server, the chat engine `echo` answering every text. Twelve people log in,
each with four tabs open: the dashboard, the conversation list and two chats (24 numbers in
all). Each tab, in a process of its own, does what the panel's app.js does: it asks for its
page's live part with the cursor of its last answer (204 when nothing it shows is new, else
the HTML, and the next cursor in X-Live-Cursor), then waits 0.5 s and asks again; every tab is
visible, the worst case (a hidden tab asks every 5 s). Meanwhile one person clicks through
other pages and API calls, one every 0.25 s, and during the load four API clients long-poll
`/api/events?timeout=20`, asking again at once.

Phases: the server alone (5 s) and with the 48 tabs polling (10 s) give what a poll costs (the
server's CPU time per poll, beyond its idle work); then signed inbound webhooks are posted
open-loop at a steady rate (50/s for 20 s), each from its own number except one in ten, which
comes from the number of an open chat, in turn.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import multiprocessing
import os
import random
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import requests
from twilio.request_validator import RequestValidator

from bench.common import (
    ADMIN_PASSWORD,
    Figure,
    app_env,
    at_most,
    cpu_seconds,
    equal,
    free_port,
    gunicorn,
    log,
    percentile,
    twilio_chat,
    write_result,
)
from bench.latency import Text, make_texts, send_open_loop

PEOPLE = 12
TABS_PER_PERSON = 4  # the dashboard, the conversation list and two chats
CHAT_SHARE = 10  # one text in this many comes from a number whose chat is open
POLL_SECONDS = 0.5  # app.js: POLL_MS
GIVE_UP_SECONDS = 5.0  # app.js: GIVE_UP_MS
API_LONG_POLLERS = 4
WEBHOOK_P99_MS = 200
WEBHOOK_MAX_MS = 1000
PAGES_MAX_MS = 1000
NEWS_MAX_MS = 1000


def login(base: str) -> str:
    """Log in to the panel as the admin; return the session cookie's value.

    The production cookie is Secure, which requests will not send over http://127.0.0.1, so
    the cookie travels in a Cookie header of our own.
    """
    session = requests.Session()
    page = session.get(base + "/login", timeout=10)
    cookie = page.cookies["session"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, "no CSRF token on the login page"
    answer = session.post(
        base + "/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
        headers={"Cookie": f"session={cookie}"},
        allow_redirects=False,
        timeout=30,
    )
    if answer.status_code != 302:
        raise RuntimeError(f"login failed: {answer.status_code} {answer.text[:200]}")
    return str(answer.cookies["session"])


@dataclass
class Tab:
    """One open panel page: where it polls and what it shows."""

    cookie: str
    partial: str  # the page's live partial
    number: str | None = None  # a chat shows only this number's messages


@dataclass
class TabLog:
    """What the tabs saw: each poll, and each render with the newest message id it covers."""

    polls: list[tuple[float, float, int]] = field(default_factory=list)  # (start, ms, status)
    renders: list[tuple[int, float, int]] = field(default_factory=list)  # (tab, done, id)


def run_tab(base: str, index: int, tab: Tab, stop: Event, out: TabLog) -> None:
    """Poll as app.js does until `stop`: the live part with the last cursor, every 0.5 s."""
    session = requests.Session()
    session.headers.update({"Cookie": f"session={tab.cookie}", "Accept": "text/html"})
    time.sleep(random.random() * POLL_SECONDS)  # tabs opened at different moments
    cursor = ""
    while not stop.is_set():
        started = time.time()
        try:
            answer = session.get(
                base + tab.partial,
                params={"cursor": cursor} if cursor else None,
                timeout=GIVE_UP_SECONDS,
                allow_redirects=False,
            )
            status = answer.status_code
        except requests.RequestException:
            answer, status = None, -1
        done = time.time()
        out.polls.append((started, (done - started) * 1000, status))
        if answer is not None and status in (200, 204):
            cursor = answer.headers["X-Live-Cursor"]
            if status == 200:  # the page now shows every message up to the cursor's
                out.renders.append((index, done, int(cursor.split(".")[0])))
        stop.wait(POLL_SECONDS)


def tabs_process(base: str, tabs: list[Tab], stop: Event, pipe: Connection) -> None:
    """Run every tab in a thread of this process; send back their TabLog when `stop` is set."""
    out = TabLog()
    threads = [
        threading.Thread(target=run_tab, args=(base, i, tab, stop, out), daemon=True)
        for i, tab in enumerate(tabs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pipe.send(out)
    pipe.close()


def news_latencies(
    tabs: list[Tab], texts: list[Text], ids: dict[str, int], renders: list[tuple[int, float, int]]
) -> tuple[list[float], int]:
    """For each tab and each text its page shows: ms from the webhook's 200 to the first render
    that covers the text's id. Return them and how many pairs were never shown."""
    by_tab: dict[int, list[tuple[float, int]]] = {}
    for index, done, newest in sorted(renders, key=lambda r: r[1]):
        by_tab.setdefault(index, []).append((done, newest))
    latencies: list[float] = []
    missed = 0
    for index, tab in enumerate(tabs):
        seen = by_tab.get(index, [])
        reach, highest = [], 0
        for _, newest in seen:
            highest = max(highest, newest)
            reach.append(highest)
        for text in texts:
            if tab.number not in (None, text.sender):
                continue
            at = bisect.bisect_left(reach, ids.get(text.sid, 1 << 62))
            if at == len(reach):
                missed += 1
            else:
                latencies.append((seen[at][0] - text.answered_at) * 1000)
    return latencies, missed


def click_around(
    base: str,
    cookie: str,
    token: str,
    paths: list[str],
    stop: threading.Event,
    out: list[tuple[float, str, float, int]],
) -> None:
    """Fetch pages and API calls in turn, one every 0.25 s: (start, path, ms, status)."""
    session = requests.Session()
    for path in itertools.cycle(paths):
        if stop.is_set():
            return
        headers = (
            {"Authorization": f"Bearer {token}"}
            if path.startswith("/api/")
            else {"Cookie": f"session={cookie}"}
        )
        started = time.time()
        try:
            status = session.get(base + path, headers=headers, timeout=30).status_code
        except requests.RequestException:
            status = -1
        out.append((started, path, (time.time() - started) * 1000, status))
        stop.wait(0.25)


def long_poll(base: str, token: str, stop: threading.Event, out: list[tuple[float, int]]) -> None:
    """Long-poll /api/events as a plain API client does, asking again at once: (ms, messages)."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    cursor = session.get(base + "/api/events", timeout=10).json()["cursor"]
    while not stop.is_set():
        started = time.time()
        try:
            answer = session.get(
                base + "/api/events", params={"cursor": cursor, "timeout": 20}, timeout=30
            )
            data = answer.json()
            cursor = data["cursor"]
            out.append(((time.time() - started) * 1000, len(data["messages"])))
        except (requests.RequestException, ValueError):
            out.append(((time.time() - started) * 1000, -1))
            stop.wait(1)


def _query(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(sql).fetchall()


def spread(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of values (rounded), and how many there are."""
    return {
        "p50": round(percentile(values, 50), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values, default=0.0), 1),
        "count": len(values),
    }


def make_tabs(cookies: list[str], chats: list[str], per_person: int) -> list[Tab]:
    """Each person's tabs: the dashboard, the conversation list, then chats of their own."""
    tabs = []
    numbers = iter(chats)
    for cookie in cookies:
        pages = [Tab(cookie, "/partials/dashboard"), Tab(cookie, "/partials/conversations")]
        for _ in range(per_person - 2):
            number = next(numbers)
            pages.append(Tab(cookie, f"/partials/chat/{number}", number))
        tabs += pages
    return tabs


def _from(url: str, token: str, texts: list[Text], senders: dict[int, str]) -> None:
    """Have text i come from senders[i] (signed again); the others keep their own number."""
    validator = RequestValidator(token)
    for i, sender in senders.items():
        text = texts[i]
        text.sender = text.form["From"] = sender
        text.signature = validator.compute_signature(url, text.form)


def main(argv: list[str] | None = None) -> int:
    """Run the live-updates benchmark and write its result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50, help="inbound webhooks per second")
    parser.add_argument("--seconds", type=float, default=20, help="how long the load runs")
    parser.add_argument("--people", type=int, default=PEOPLE, help="people, four tabs each")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no-write", action="store_true", help="print, do not write a result")
    args = parser.parse_args(argv)
    if args.people < 1:
        parser.error("--people: at least 1")

    load_average = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    port = free_port()
    db_path = work / "app.db"
    env = app_env(port, db_path, CHAT_MODE="echo", AUTO_REPLY_MAX_PER_HOUR="1000")
    twilio_chat(env, "prepare")
    token = twilio_chat(env, "create-token", "--user", "admin", "--name", "bench").split()[-1]
    from twilio_chat.settings import build_settings

    auth_token = build_settings(env).auth_token
    base = f"http://127.0.0.1:{port}"
    url = base + "/twilio/inbound"
    count = int(args.rate * args.seconds)
    chats = [f"+1555300{n:04d}" for n in range(2 * args.people)]
    warm = make_texts(url, auth_token, len(chats) * 2, 1)
    _from(url, auth_token, warm, dict(enumerate(chats)))  # every chat has a conversation
    texts = make_texts(url, auth_token, count, 2)
    share = range(0, count, CHAT_SHARE)  # one text in ten to a chat that is open, in turn
    _from(url, auth_token, texts, {i: chats[n % len(chats)] for n, i in enumerate(share)})

    server = gunicorn("app", env, work)
    fork = multiprocessing.get_context("fork")
    stop_tabs = fork.Event()
    stop = threading.Event()
    clicks: list[tuple[float, str, float, int]] = []
    long_polls: list[tuple[float, int]] = []
    others: list[threading.Thread] = []
    paths = [
        "/",
        "/conversations",
        f"/chat/{chats[-1]}",
        "/api/messages?limit=50",
        "/api/stats",
        "/api/conversations",
        "/automation",
        f"/api/conversations/{chats[-2]}",
    ]
    try:
        server.wait_ready()
        pids = [server.popen.pid, *server.worker_pids()]
        log(f"warming up: {len(warm)} texts at 10/s")
        send_open_loop(url, warm, 10)
        time.sleep(2)
        cookies = [login(base) for _ in range(args.people)]
        tabs = make_tabs(cookies, chats, TABS_PER_PERSON)

        log("the server alone: 5 s")
        alone_start, cpu_start = time.time(), cpu_seconds(pids)
        time.sleep(5)
        alone_cpu = (cpu_seconds(pids) - cpu_start) / (time.time() - alone_start)

        log(f"{len(tabs)} tabs polling, no texts: 10 s")
        receive, send = fork.Pipe(duplex=False)
        tabs_proc = fork.Process(
            target=tabs_process, args=(base, tabs, stop_tabs, send), daemon=True
        )
        tabs_proc.start()
        time.sleep(2)  # every tab has loaded its page and is polling
        polls_start, cpu_start = time.time(), cpu_seconds(pids)
        time.sleep(10)
        polls_end = time.time()
        polls_cpu = (cpu_seconds(pids) - cpu_start) / (polls_end - polls_start)

        others += [
            threading.Thread(
                target=click_around, args=(base, cookies[0], token, paths, stop, clicks)
            ),
            *(
                threading.Thread(target=long_poll, args=(base, token, stop, long_polls))
                for _ in range(API_LONG_POLLERS)
            ),
        ]
        for thread in others:
            thread.start()
        log(f"load: {count} signed webhooks at {args.rate:g}/s, open loop, the tabs polling")
        load_start, cpu_start = time.time(), cpu_seconds(pids)
        ours = [os.getpid(), tabs_proc.pid or 0]
        ours_start = cpu_seconds(ours)
        took = send_open_loop(url, texts, args.rate)
        time.sleep(2)  # the last texts reach the tabs
        load_end = time.time()
        load_cpu = (cpu_seconds(pids) - cpu_start) / (load_end - load_start)
        clients_cpu = (cpu_seconds(ours) - ours_start) / (load_end - load_start)
        stop.set()
        stop_tabs.set()
        tab_log: TabLog = receive.recv()
        tabs_proc.join(10)
    finally:
        stop.set()
        stop_tabs.set()
        server.stop()  # which answers the waiting long polls at once
    for thread in others:
        thread.join(10)
    log(f"sent in {took:.1f} s")
    ids = dict(_query(db_path, "SELECT sid, id FROM messages WHERE direction = 'inbound'"))

    idle_polls = [p for p in tab_log.polls if polls_start <= p[0] < polls_end]
    polls_per_second = len(idle_polls) / (polls_end - polls_start)
    cpu_per_poll_ms = 1000 * (polls_cpu - alone_cpu) / polls_per_second if idle_polls else 0.0
    during = [p for p in tab_log.polls if load_start <= p[0] < load_end]
    polls_204 = spread([p[1] for p in during if p[2] == 204])
    polls_200 = spread([p[1] for p in during if p[2] == 200])
    poll_errors = sum(1 for p in tab_log.polls if p[2] not in (200, 204))
    webhook = spread([t.answer_ms for t in texts])
    not_200 = sum(1 for t in texts if t.status != 200)
    news, never = news_latencies(tabs, texts, ids, tab_log.renders)
    shown = spread(news)
    chat_tabs = [i for i, tab in enumerate(tabs) if tab.number]
    chat_news, _ = news_latencies(
        [tabs[i] for i in chat_tabs],
        texts,
        ids,
        [(chat_tabs.index(r[0]), r[1], r[2]) for r in tab_log.renders if r[0] in chat_tabs],
    )
    pages = spread([c[2] for c in clicks if load_start <= c[0] < load_end])
    page_errors = sum(1 for c in clicks if c[3] != 200)
    by_path = {
        path: spread([c[2] for c in clicks if c[1] == path and load_start <= c[0] < load_end])
        for path in paths
    }
    early = sum(1 for ms, n in long_polls if n == 0 and ms < 19_000)

    log(
        f"webhooks: p50 {webhook['p50']} ms, p99 {webhook['p99']} ms, max {webhook['max']} ms; "
        f"not 200: {not_200}"
    )
    log(
        f"other pages and API calls: p50 {pages['p50']} ms, p99 {pages['p99']} ms, "
        f"max {pages['max']} ms; errors {page_errors}"
    )
    log(
        f"a text in a tab: p50 {shown['p50']} ms, p99 {shown['p99']} ms, max {shown['max']} ms; "
        f"never shown {never}"
    )
    log(
        f"a poll costs {cpu_per_poll_ms:.2f} ms of server CPU ({polls_per_second:.0f} polls/s); "
        f"under load a 204 takes p50 {polls_204['p50']} ms, a render p50 {polls_200['p50']} ms"
    )
    log(
        f"server CPU share: alone {alone_cpu:.2f}, tabs {polls_cpu:.2f}, load {load_cpu:.2f}; "
        f"the clients' {clients_cpu:.2f}; load average before {load_average:.2f}"
    )
    log(f"API long polls: {len(long_polls)} answers, {early} early with nothing")

    figures = [
        at_most("webhook answer p99", webhook["p99"], "ms", WEBHOOK_P99_MS),
        at_most("webhook answer max", webhook["max"], "ms", WEBHOOK_MAX_MS),
        Figure("webhook answer p50", webhook["p50"], "ms"),
        at_most("other pages and API calls, max", pages["max"], "ms", PAGES_MAX_MS),
        at_most("webhook's 200 to the text in a tab, max", shown["max"], "ms", NEWS_MAX_MS),
        Figure("webhook's 200 to the text in a tab, p50", shown["p50"], "ms"),
        Figure("server CPU per poll with nothing new", round(cpu_per_poll_ms, 2), "ms"),
        Figure("a poll's answer under load, p99", polls_204["p99"], "ms"),
        equal("webhooks not answered 200", not_200, "", 0),
        equal("texts a tab never showed", never, "", 0),
        equal("polls and pages not answered", poll_errors + page_errors, "", 0),
    ]
    details = {
        "rate_per_second": args.rate,
        "seconds": args.seconds,
        "texts_sent": len(texts),
        "inbound_rate_sent": round(count / took, 1),
        "texts_to_open_chats": len(share),
        "tabs": len(tabs),
        "tabs_by_page": dict(Counter(tab.partial.split("/")[2] for tab in tabs)),
        "webhook_answer_ms": webhook,
        "other_pages_ms": pages,
        "other_pages_by_path_ms": by_path,
        "text_in_a_tab_ms": shown,
        "text_in_a_chat_tab_ms": spread(chat_news),
        "texts_never_shown": never,
        "polls_under_load_204_ms": polls_204,
        "polls_under_load_200_ms": polls_200,
        "polls_per_second_no_texts": round(polls_per_second, 1),
        "polls_no_texts_ms": spread([p[1] for p in idle_polls]),
        "server_cpu_share": {
            "alone": round(alone_cpu, 3),
            "tabs_no_texts": round(polls_cpu, 3),
            "tabs_and_load": round(load_cpu, 3),
            "load_generators_during_the_load": round(clients_cpu, 3),
        },
        "server_cpu_ms_per_poll": round(cpu_per_poll_ms, 2),
        "polls_not_answered": poll_errors,
        "pages_not_answered": page_errors,
        "api_long_polls": {
            "clients": API_LONG_POLLERS,
            "answers": len(long_polls),
            "answered_early_with_nothing": early,
        },
        "load_average_before": round(load_average, 2),
        "measured": "webhook: from sending to its 200, at the load; a text in a tab: from the "
        "webhook's 200 to the end of the first render of a tab's live part that covers the "
        "text (X-Live-Cursor at least its id), for every tab whose page shows it (lists: every "
        "text; a chat: its number's); a poll's CPU: the server's CPU share with the tabs "
        "polling minus without, per poll",
        "server": "gunicorn.conf.py: gthread, 2 processes x 8 threads, a reply worker thread in "
        "each; the sandbox in the same server; SQLite; CHAT_MODE=echo",
    }
    if not args.no_write:
        write_result("live", "Live updates (SQLite)", figures, details)
    if args.keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
