"""The inbox's tasks: catching up with Twilio's message list, and the search index."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import func, select

from twilio_chat.db.models import Message, utcnow
from twilio_chat.inbox import search
from twilio_chat.inbox.sync import sync
from twilio_chat.jobs import queue as jobs
from twilio_chat.jobs.queue import ClaimedJob
from twilio_chat.jobs.tasks import Context, Tasks
from twilio_chat.settings import Settings

log = logging.getLogger(__name__)
TASKS = Tasks()
SEARCH_INDEX_SECONDS = 1.0  # how often new messages are added to SQLite's search index


def sync_interval(settings: Settings) -> float:
    """Return how often to sync with Twilio's list (0: never; the sandbox only when asked)."""
    interval = settings.sync_interval_seconds
    if not interval or (settings.sandbox and not settings.sync_in_sandbox):
        return 0
    return float(interval)


@TASKS.every("schedule-sync", sync_interval)
def schedule_sync(ctx: Context, first: bool = False) -> None:
    """Enqueue the periodic sync; its unique key lets one worker per period win.

    The first sync after a worker starts looks back to the newest stored message, to catch
    the texts that came while the app was down.
    """
    period = int(time.time() // sync_interval(ctx.settings))
    with ctx.db.session() as session:
        jobs.enqueue(
            session, "sync", {"since_latest": first}, unique_key=f"sync:{period}", max_attempts=1
        )


@TASKS.job("sync")
def run_sync(ctx: Context, job: ClaimedJob) -> None:
    """Fetch the recent messages from Twilio's list and store what is missing."""
    lookback = timedelta(seconds=max(2 * sync_interval(ctx.settings), 3600))
    since = utcnow() - lookback
    if job.payload.get("since_latest"):
        with ctx.db.read() as session:
            latest = session.scalar(select(func.max(Message.created_at)))
        if latest is not None:
            since = max(min(since, latest - timedelta(minutes=10)), utcnow() - timedelta(days=7))
    result = sync(ctx.db, ctx.gateway, ctx.settings, date_sent_after=since)
    log.info(
        "sync: %d fetched, %d new, %d updated, %d replies enqueued",
        result.fetched,
        result.inserted,
        result.updated,
        result.replies_enqueued,
    )


@TASKS.every("search-index", SEARCH_INDEX_SECONDS)
def index_for_search(ctx: Context, first: bool = False) -> int:
    """Add new messages to SQLite's search index (off the webhook's path; see search.py)."""
    return search.index_new_messages(ctx.db)
