"""The README, docs/ and .env.example stay in step with the settings, routes and commands."""

from __future__ import annotations

import re
from pathlib import Path

from support import Live

from twilio_chat.cli import cli
from twilio_chat.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
API_DOCS = (ROOT / "docs" / "api.md").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
ALIASES = {f.alias for f in Settings.model_fields.values() if f.alias}


def test_env_example_lists_exactly_the_settings() -> None:
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, re.MULTILINE))
    assert listed == ALIASES


def test_readme_table_lists_exactly_the_settings() -> None:
    table = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", README, re.MULTILINE))
    assert table == ALIASES


def test_readme_opens_with_the_two_commands() -> None:
    head = README[:800]
    assert "make run" in head and "make test" in head


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_stays_short() -> None:
    assert len(README.encode()) <= 15_000, "longer pages belong in docs/"


def test_operations_names_every_command() -> None:
    names = set(cli.commands)
    documented = set(re.findall(r"^\| `([a-z-]+)[ `]", OPERATIONS, re.MULTILINE))
    assert names <= documented | {"db"}
    assert "`db upgrade`" in OPERATIONS


def test_api_docs_name_every_api_route(live: Live) -> None:
    for rule in live.app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            assert rule.rule in API_DOCS, f"{rule.rule} is not in docs/api.md"


def test_the_docs_link_only_to_files_that_exist() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
