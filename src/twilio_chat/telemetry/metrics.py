"""Prometheus metrics: webhooks, sends, jobs, and Twilio/OpenAI call latency.

Counters and histograms live in each process; with several gunicorn workers set
PROMETHEUS_MULTIPROC_DIR (the production config does) and they are summed across processes.
Job gauges are read from the database at scrape time, so every process reports the same.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from twilio_chat.db.engine import Database
from twilio_chat.db.models import Job, utcnow

WEBHOOKS = Counter(
    "twilio_chat_webhooks_total", "Webhooks from Twilio, by kind and outcome", ["kind", "outcome"]
)
SENDS = Counter(
    "twilio_chat_sends_total",
    "Messages handed to Twilio, by the status Twilio answered and error code",
    ["status", "error_code"],
)
DELIVERIES = Counter(
    "twilio_chat_delivery_callbacks_total",
    "Status callbacks from Twilio, by status and error code",
    ["status", "error_code"],
)
TWILIO_SECONDS = Histogram(
    "twilio_chat_twilio_request_seconds", "Time spent in Twilio REST calls", ["operation"]
)
OPENAI_SECONDS = Histogram(
    "twilio_chat_openai_request_seconds",
    "Time spent in OpenAI-compatible chat completions",
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 20, 30, 45),
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class JobsCollector(Collector):
    """Jobs waiting and the age of the oldest, read from the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the job gauges."""
        with self.db.read() as session:
            waiting = session.scalar(
                select(func.count(Job.id)).where(Job.status.in_(("queued", "running")))
            )
            oldest = session.scalar(
                select(func.min(Job.created_at)).where(Job.status.in_(("queued", "running")))
            )
        yield GaugeMetricFamily(
            "twilio_chat_jobs_waiting", "Jobs queued or running", value=float(waiting or 0)
        )
        age = (utcnow() - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "twilio_chat_oldest_job_age_seconds", "Age of the oldest waiting job", value=age
        )


def render(db: Database, multiprocess_dir: str | None) -> bytes:
    """Render every metric in Prometheus' text format."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        base = generate_latest(registry)
    else:
        base = generate_latest(REGISTRY)
    jobs = CollectorRegistry()
    jobs.register(JobsCollector(db))
    return base + generate_latest(jobs)
