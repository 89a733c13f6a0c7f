"""Gunicorn settings of the Docker image: `gunicorn -c gunicorn.conf.py twilio_chat.wsgi:app`.

Threaded workers (gthread): the built-in Twilio sandbox calls back into the app while it
answers, and API clients may long-poll /api/events (at most two at once per process wait; the
panel's polls never do), so each process must serve many requests at once. The address comes
from the app's own settings (environment and .env, as `twilio-chat run` reads them), so the
sandbox reaches the port the server really binds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twilio_chat.settings import SettingsError, load_settings


def _positive_int(name: str, default: int) -> int:
    """Return a whole number of at least 1 from the environment, or `default` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"error: {name}: must be a whole number of at least 1, got {raw!r}")
    return int(raw)


try:
    _settings = load_settings()
except SettingsError as exc:
    raise SystemExit(f"error: bad setting: {exc}") from None

_host = _settings.app_host
bind = [f"[{_host}]:{_settings.app_port}" if ":" in _host else f"{_host}:{_settings.app_port}"]

# Each worker process listens on its own socket (SO_REUSEPORT) and the kernel spreads new
# connections across them. With one shared socket, whichever process accepted first kept the
# keep-alive connections: under a steady load (a proxy's or Twilio's kept-alive connections) one
# process would do all the work while the other idles, on one core.
reuse_port = True

worker_class = "gthread"
workers = _positive_int("WEB_CONCURRENCY", 2)
threads = _positive_int("GUNICORN_THREADS", 8)
timeout = 60  # a worker process silent this long is replaced
graceful_timeout = 30  # on SIGTERM, in-flight requests get this long to finish
keepalive = 5  # longer than the proxy keeps idle upstream connections (deploy/nginx.conf: 4 s)

accesslog = "-"  # stdout
errorlog = "-"  # stderr
loglevel = "info"

# Who may set the scheme through X-Forwarded-Proto: nobody, unless FORWARDED_ALLOW_IPS says so.
# Behind a proxy the app itself rebuilds the public URL from X-Forwarded-* (TRUSTED_PROXY_COUNT),
# so gunicorn's own default trust of 127.0.0.1 would only be a second, unconfigured source.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")

# The heartbeat file lives in memory: on a container's overlay filesystem it can stall workers.
if os.path.isdir("/dev/shm"):  # noqa: S108 - only gunicorn's own heartbeat files go there
    worker_tmp_dir = "/dev/shm"  # noqa: S108

# Prometheus counters of every worker process add up when they share a folder (see
# twilio_chat.telemetry.metrics): PROMETHEUS_MULTIPROC_DIR, or a private one made here.
# prometheus_client reads the variable from the environment (not .env) when a worker imports
# it, so it is set here, in the master, before any worker starts.
_METRICS_PREFIX = "twilio-chat-metrics-"
_metrics_dir = _settings.prometheus_multiproc_dir or tempfile.mkdtemp(prefix=_METRICS_PREFIX)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

# No runtime control socket (gunicorn 24+): nothing uses it, and it would write under $HOME.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Empty the metrics folder: counts from before a restart must not add up with new ones."""
    folder = Path(_metrics_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """Tell prometheus_client a worker process is gone."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics folder made here (not a named one)."""
    folder = Path(_metrics_dir)
    if folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith(_METRICS_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)


def post_worker_init(worker: Any) -> None:
    """Set up the app's logging and, when WORKER_ENABLED, a reply worker thread, as `run` does.

    One container then answers texts on its own (docker-compose.yml); a deployment with separate
    `twilio-chat worker` processes sets WORKER_ENABLED=false on the web server. Jobs are claimed
    with a lease, so any number of these threads and processes can run side by side.
    """
    from flask import Flask

    from twilio_chat.jobs.worker import start_thread
    from twilio_chat.telemetry.logs import setup_logging

    app = worker.wsgi
    settings = app.extensions.get("settings") if isinstance(app, Flask) else None
    if settings is None:  # another app under this config (bench/bare.py, the ceiling)
        return
    setup_logging(settings)  # the app's own log lines: JSON in production, secrets scrubbed
    _answer_long_polls_on_sigterm(app)
    if settings.worker_enabled:
        worker.reply_worker = start_thread(app)


def _answer_long_polls_on_sigterm(app: Any) -> None:
    """On SIGTERM (a stop or a restart), answer the waiting long polls of /api/events at once.

    gunicorn then waits for the requests in flight, up to graceful_timeout: an API client's
    long poll of /api/events would hold the stop (and a deploy) for up to 30 s. The worker's
    own handler still runs after.
    """
    import signal

    from twilio_chat.web.live import stop_long_polls

    graceful = signal.getsignal(signal.SIGTERM)

    def stop(signum: int, frame: Any) -> None:
        stop_long_polls(app)
        if callable(graceful):
            graceful(signum, frame)

    signal.signal(signal.SIGTERM, stop)


def worker_exit(server: Any, worker: Any) -> None:
    """Stop this process's reply worker thread, giving its current job a moment to finish."""
    reply_worker = getattr(worker, "reply_worker", None)
    if reply_worker is not None:
        thread, stop = reply_worker
        stop.set()
        thread.join(timeout=5)
