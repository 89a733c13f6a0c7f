"""Tasks by name: what a worker runs for a queued job's kind, and the chores it runs on a timer.

Each service declares its own tasks in a `Tasks` registry (replies: "reply"; messaging: "sync",
the spool's replay; inbox: the search index) and the app factory hands them all to the worker
(`init_app`). The worker's loop knows none of them: it claims a job and runs the task
registered for its kind, and runs each chore when it is due.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import Flask

from twilio_chat.db.engine import Database
from twilio_chat.jobs.queue import ClaimedJob
from twilio_chat.settings import Settings
from twilio_chat.twilio.gateway import TwilioGateway


class PermanentJobError(Exception):
    """A job failed in a way another try cannot fix."""


class Context(Protocol):
    """What a task is given: the app's parts, and for a job, a way to check its lease."""

    @property
    def settings(self) -> Settings:
        """Return the app's settings."""

    @property
    def db(self) -> Database:
        """Return the app's database."""

    @property
    def gateway(self) -> TwilioGateway:
        """Return the app's Twilio gateway."""

    def still_ours(self, job: ClaimedJob) -> bool:
        """Tell whether this worker still holds the job, with a lease long enough to send."""


JobTask = Callable[[Context, ClaimedJob], None]
Chore = Callable[[Context, bool], Any]  # (context, first run since the worker started)


@dataclass(frozen=True)
class Periodic:
    """A chore the worker runs every `every(settings)` seconds (never when that is 0)."""

    name: str
    every: Callable[[Settings], float]
    run: Chore


@dataclass
class Tasks:
    """A registry of job tasks by kind and of periodic chores by name."""

    jobs: dict[str, JobTask] = field(default_factory=dict)
    periodic: dict[str, Periodic] = field(default_factory=dict)

    def job(self, kind: str) -> Callable[[JobTask], JobTask]:
        """Register the decorated function as the task for jobs of `kind`."""

        def register(task: JobTask) -> JobTask:
            if kind in self.jobs:
                raise ValueError(f"a task for job kind {kind!r} is registered already")
            self.jobs[kind] = task
            return task

        return register

    def every(
        self, name: str, seconds: float | Callable[[Settings], float]
    ) -> Callable[[Chore], Chore]:
        """Register the decorated function as a chore run every `seconds` (or per settings)."""
        every = seconds if callable(seconds) else (lambda _settings: float(seconds))

        def register(chore: Chore) -> Chore:
            if name in self.periodic:
                raise ValueError(f"a chore named {name!r} is registered already")
            self.periodic[name] = Periodic(name, every, chore)
            return chore

        return register

    def merge(self, others: Iterable[Tasks]) -> Tasks:
        """Return one registry holding this one's tasks and the others'."""
        merged = Tasks(dict(self.jobs), dict(self.periodic))
        for other in others:
            for kind, task in other.jobs.items():
                merged.job(kind)(task)
            for chore in other.periodic.values():
                merged.every(chore.name, chore.every)(chore.run)
        return merged


def init_app(app: Flask, registries: Iterable[Tasks]) -> None:
    """Give the app's workers these tasks."""
    app.extensions["tasks"] = Tasks().merge(registries)


def get_tasks(app: Flask) -> Tasks:
    """Return the tasks the app's workers run."""
    tasks: Tasks = app.extensions["tasks"]
    return tasks
