"""The README's quick start and the banner of `run`: every command works as printed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from packaging.requirements import Requirement
from support import free_port

from twilio_chat.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text()


def _code_block_after(marker: str) -> list[str]:
    """Return the command lines of the first ```sh block after `marker` in the README."""
    rest = README[README.index(marker) :]
    block = re.search(r"```sh\n(.*?)```", rest, re.DOTALL)
    assert block, f"no sh block after {marker!r}"
    return [line.split("   #")[0].rstrip() for line in block.group(1).splitlines() if line]


def _requirements(path: Path) -> tuple[list[Requirement], list[str]]:
    """Return the requirements of a requirements file and its other (option) lines."""
    reqs, options = [], []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-"):
            options.append(line)
        elif line:
            reqs.append(Requirement(line))
    return reqs, options


def test_requirements_are_pyproject_runtime_dependencies_then_the_app() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(d) for d in project["dependencies"]]
    reqs, options = _requirements(ROOT / "requirements.txt")
    assert [str(r) for r in reqs] == [str(r) for r in wanted]
    assert options == ["-e ."]  # the app itself, with its twilio-chat command


def test_the_quick_start_is_the_three_promised_commands() -> None:
    steps = _code_block_after("Without `make`")
    assert steps == [
        "python3 -m venv .venv && . .venv/bin/activate",
        "pip install -r requirements.txt",
        "cp .env.example .env",
        "python run.py",
    ]


def test_run_py_passes_its_arguments_to_run() -> None:
    done = subprocess.run(
        [sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: twilio-chat run")
    assert "--port" in done.stdout and "--no-worker" in done.stdout


# A server started as the quick start starts it ------------------------------------------------


@dataclass
class Started:
    """`python run.py` running in a fresh folder, and what it printed."""

    folder: Path
    env: dict[str, str]
    url: str
    banner: list[str]

    def shell(self, script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run lines in a shell in the folder, as a user pastes them (no terminal attached)."""
        return subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=self.folder,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            start_new_session=True,  # no controlling terminal: a password prompt reads stdin
        )


def _fresh_folder(tmp_path: Path) -> Path:
    """A folder holding what a fresh clone has that the quick start uses, with .venv."""
    folder = tmp_path / "clone"
    folder.mkdir()
    for name in ("run.py", ".env.example", "requirements.txt"):
        shutil.copy(ROOT / name, folder / name)
    (folder / ".venv").symlink_to(VENV_BIN.parent)
    return folder


def _user_env(folder: Path, **extra: str) -> dict[str, str]:
    """The environment of a user whose virtual environment is active, with no app settings."""
    ours = {f.alias for f in Settings.model_fields.values() if f.alias}
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("TWILIO_")}
    env.update(PATH=f"{folder / '.venv' / 'bin'}:{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """Run the quick start's last two commands in a fresh folder, on a free port (one server
    for the module's tests: starting one costs seconds)."""
    folder = _fresh_folder(tmp_path_factory.mktemp("quickstart"))
    port = free_port()
    env = _user_env(folder, APP_PORT=str(port))  # the environment wins over .env's 3000
    setup = subprocess.run(["bash", "-c", "cp .env.example .env"], cwd=folder, env=env)
    assert setup.returncode == 0
    out = folder / "server.out"
    with out.open("w") as log:
        server = subprocess.Popen(
            ["bash", "-c", "exec python run.py"], cwd=folder, env=env, stdout=log, stderr=log
        )
    try:
        banner = _wait_for_banner(server, out, f"http://127.0.0.1:{port}")
        yield Started(folder, env, f"http://127.0.0.1:{port}", banner)
    finally:
        server.terminate()
        server.wait(10)


def _wait_for_banner(server: subprocess.Popen[bytes], out: Path, url: str) -> list[str]:
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, out.read_text()
        text = out.read_text()
        if "set-password" in text:
            try:
                if requests.get(f"{url}/healthz", timeout=2).json() == {"status": "ok"}:
                    return [line for line in text.splitlines() if " INFO " not in line]
            except requests.ConnectionError:
                pass
        assert time.monotonic() < deadline, text
        time.sleep(0.1)


def _commands(banner: list[str], after: str) -> list[str]:
    """The indented command lines that follow the banner's line starting with `after`."""
    start = next(i for i, line in enumerate(banner) if line.startswith(after)) + 1
    lines = []
    for line in banner[start:]:
        if not line.startswith("  "):
            break
        lines.append(line.strip())
    return lines


@pytest.mark.slow
def test_the_quick_start_serves_and_its_banner_commands_work_as_printed(started: Started) -> None:
    port = started.url.rsplit(":", 1)[1]
    assert started.banner[0] == (
        f"Twilio Chat is listening on 0.0.0.0:{port} (every network interface): open {started.url}/"
    )
    login = next(line for line in started.banner if line.startswith("Log in as 'admin'"))
    password = login.rsplit(" ", 1)[1]

    tries = _commands(started.banner, "Try it from another terminal")
    assert [t.split()[0:2] for t in tries[:1]] == [["twilio-chat", "simulate"]]
    done = started.shell("\n".join(tries))
    assert done.returncode == 0, done.stderr
    assert "webhook answered 200" in done.stdout
    assert '"participant":"+15551230001"' in done.stdout.replace(" ", "")

    (reset,) = _commands(started.banner, "Forgot a password?")
    done = started.shell(reset, stdin="a-brand-new-pass\na-brand-new-pass\n")
    assert done.returncode == 0, done.stderr
    assert "a-brand-new-pass" not in done.stdout + done.stderr
    assert not _logs_in(started.url, password)
    assert _logs_in(started.url, "a-brand-new-pass")


def _logs_in(url: str, password: str) -> bool:
    """Tell whether the panel's login form takes the admin with this password."""
    session = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(f"{url}/login").text)
    assert token
    answer = session.post(
        f"{url}/login",
        data={"username": "admin", "password": password, "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    return answer.status_code == 302


@pytest.mark.slow
def test_the_readme_try_it_commands_work_as_written(started: Started) -> None:
    commands = _code_block_after("Text the app from a simulated phone")
    assert any("TOKEN=$(" in c for c in commands)  # the curl example sets $TOKEN first
    port = started.url.rsplit(":", 1)[1]
    script = "\n".join(c.replace("127.0.0.1:3000", f"127.0.0.1:{port}") for c in commands)
    done = started.shell(script)
    assert done.returncode == 0, done.stderr
    assert "webhook answered 200" in done.stdout
    assert '"participant":"+15551230001"' in done.stdout.replace(" ", "")


@pytest.mark.slow
def test_a_port_given_on_the_command_line_is_served_and_printed(tmp_path: Path) -> None:
    folder = _fresh_folder(tmp_path)
    shutil.copy(folder / ".env.example", folder / ".env")  # APP_PORT=3000 there
    port = free_port()
    env = _user_env(folder, PATH="/usr/bin:/bin")  # twilio-chat is not on PATH
    out = folder / "server.out"
    with out.open("w") as log:
        server = subprocess.Popen(
            [
                str(folder / ".venv/bin/python"),
                "run.py",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        banner = _wait_for_banner(server, out, url)
        assert banner[0] == (
            f"Twilio Chat is listening on 127.0.0.1:{port} (this address only): open {url}/"
        )
        tries = _commands(banner, "Try it from another terminal")
        assert tries[0].startswith(".venv/bin/twilio-chat simulate ")
        assert tries[0].endswith(f" --url {url}")
        done = Started(folder, env, url, banner).shell("\n".join(tries))
        assert done.returncode == 0, done.stderr
        assert '"participant":"+15551230001"' in done.stdout.replace(" ", "")
    finally:
        server.terminate()
        server.wait(10)
