"""Tasks by name: the worker runs whatever the services registered, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from support import Live

from twilio_chat.db.models import Job
from twilio_chat.jobs import queue as jobs
from twilio_chat.jobs.queue import ClaimedJob
from twilio_chat.jobs.tasks import Context, Tasks, get_tasks
from twilio_chat.jobs.worker import Worker


def test_the_app_registers_the_services_tasks() -> None:
    from twilio_chat import create_app
    from twilio_chat.settings import build_settings

    app = create_app(build_settings({"SECRET_KEY": "x" * 32, "APP_ENV": "test"}))
    tasks = get_tasks(app)
    assert set(tasks.jobs) == {"reply", "sync"}
    assert set(tasks.periodic) == {"spool-replay", "schedule-sync", "search-index"}


def test_a_registered_task_runs_for_its_kind_with_its_payload(live: Live) -> None:
    seen: list[dict[str, Any]] = []
    extra = Tasks()

    @extra.job("wave")
    def wave(ctx: Context, job: ClaimedJob) -> None:
        seen.append(job.payload)

    live.app.extensions["tasks"] = get_tasks(live.app).merge([extra])
    with live.db.session() as session:
        jobs.enqueue(session, "wave", {"to": "everyone"})
    assert Worker(live.app, name="waver").run_once()
    assert seen == [{"to": "everyone"}]


def test_a_job_of_an_unknown_kind_fails_for_good(live: Live) -> None:
    with live.db.session() as session:
        jobs.enqueue(session, "nobody-knows", {})
    assert Worker(live.app, name="puzzled").run_once()
    with live.db.read() as session:
        job = session.scalars(select(Job)).one()
    assert (job.status, job.last_error) == ("failed", "unknown job kind 'nobody-knows'")


def test_a_chore_runs_when_due_and_not_before(live: Live) -> None:
    runs: list[bool] = []
    extra = Tasks()

    @extra.every("count", 3600)
    def count(ctx: Context, first: bool) -> int:
        runs.append(first)
        return len(runs)

    live.app.extensions["tasks"] = get_tasks(live.app).merge([extra])
    worker = Worker(live.app, name="chores")
    assert worker.run_chore("count") == 1
    assert worker.run_chore("count") is None  # not due for an hour
    assert worker.run_chore("count", force=True) == 2
    assert runs == [True, False]


def test_a_kind_or_chore_cannot_be_registered_twice() -> None:
    tasks = Tasks()
    tasks.job("reply")(lambda ctx, job: None)
    with pytest.raises(ValueError, match="registered already"):
        tasks.job("reply")(lambda ctx, job: None)
    tasks.every("tick", 1)(lambda ctx, first: None)
    with pytest.raises(ValueError, match="registered already"):
        tasks.every("tick", 2)(lambda ctx, first: None)
