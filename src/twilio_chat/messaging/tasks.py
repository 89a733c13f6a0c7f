"""The spool's replay: store the webhooks kept while the database was away, once it is back."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from twilio_chat.jobs.tasks import Context, Tasks
from twilio_chat.messaging.inbound import record_inbound
from twilio_chat.messaging.status import record_status
from twilio_chat.twilio import spool

log = logging.getLogger(__name__)
TASKS = Tasks()
SPOOL_REPLAY_SECONDS = 1.0  # how often a worker looks at the spool
QUIET_ERROR_LOG_SECONDS = 30.0  # while the database stays away, say so at most this often
_quiet_until = [0.0]  # when replay may next log that the database is away (per process)


@TASKS.every("spool-replay", SPOOL_REPLAY_SECONDS)
def replay_spool(ctx: Context, first: bool = False) -> spool.ReplayResult | None:
    """Store the webhooks spooled while the database was away; None when the spool is empty.

    Replaying is idempotent: inbound messages are stored once per MessageSid, and a status
    callback already kept (same sid and status) adds nothing.
    """
    folder = ctx.settings.spool_path
    if not spool.pending(folder):
        return None

    def store(entry: spool.Entry) -> None:
        """Store one spooled webhook; a database outage stops the replay, anything else is bad."""
        try:
            if entry.kind == "inbound":
                record_inbound(ctx.db, ctx.settings, entry.form, received_at=_arrival(entry.at))
            else:
                record_status(ctx.db, entry.form, entry.mid)
        except Exception as exc:
            if spool.database_unavailable(exc):
                raise
            log.exception("spool: %s webhook %s failed", entry.kind, entry.form.get("MessageSid"))
            raise spool.BadEntry(f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    result = spool.replay(folder, store)
    if result.replayed or result.set_aside:
        log.info("spool: %d webhooks replayed, %d set aside", result.replayed, result.set_aside)
    now = time.monotonic()
    if result.error is not None and now >= _quiet_until[0]:
        _quiet_until[0] = now + QUIET_ERROR_LOG_SECONDS
        log.warning(
            "spool: replay stopped, the database is unavailable (%s); retrying",
            type(getattr(result.error, "orig", None) or result.error).__name__,
        )
    return result


def _arrival(value: str) -> datetime | None:
    """Parse a spooled webhook's arrival time (None if unreadable)."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
