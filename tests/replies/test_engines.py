"""The chat engines behind CHAT_MODE, and how a new one plugs in without an edit of the app."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import text_app

from twilio_chat.replies import engines
from twilio_chat.replies.engines import (
    EchoEngine,
    KeywordsEngine,
    build_chat_engine,
    engine_names,
    register_engine,
    unregister_engine,
)
from twilio_chat.settings import SettingsError, build_settings


def test_echo_engine_echoes_the_trimmed_text() -> None:
    assert EchoEngine().reply("  Hello there \n") == "Echo: Hello there"


@pytest.mark.parametrize("body", ["", "   ", "\n\t"])
def test_echo_engine_does_not_answer_an_empty_text(body: str) -> None:
    assert EchoEngine().reply(body) is None


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        ("HOURS", KeywordsEngine.ANSWERS["hours"]),
        ("What are your hours?", KeywordsEngine.ANSWERS["hours"]),
        ("price!", KeywordsEngine.ANSWERS["price"]),
        ("Hello", KeywordsEngine.ANSWERS["hello"]),
        ("hi", KeywordsEngine.ANSWERS["hi"]),
    ],
)
def test_keywords_engine_answers_known_words(body: str, answer: str) -> None:
    assert KeywordsEngine().reply(body) == answer


def test_keywords_engine_uses_the_first_known_word() -> None:
    assert KeywordsEngine().reply("price and hours") == KeywordsEngine.ANSWERS["price"]


@pytest.mark.parametrize("body", ["Something else", "this is it", "shipping", ""])
def test_keywords_engine_answers_other_texts_with_the_help_line(body: str) -> None:
    # "this" and "shipping" contain "hi" but are not the word "hi".
    assert KeywordsEngine().reply(body) == KeywordsEngine.DEFAULT


@pytest.mark.parametrize(
    ("body", "word"),
    [("Hello, is anyone there", "hello"), ("Your hours.", "hours"), ("price?!", "price")],
)
def test_keywords_engine_ignores_trailing_punctuation(body: str, word: str) -> None:
    assert KeywordsEngine().reply(body) == KeywordsEngine.ANSWERS[word]


def test_build_chat_engine_returns_the_named_engine() -> None:
    assert isinstance(build_chat_engine("echo"), EchoEngine)
    assert isinstance(build_chat_engine("keywords"), KeywordsEngine)


def test_build_chat_engine_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="CHAT_MODE") as info:
        build_chat_engine("parrot")
    assert "echo, keywords" in str(info.value)


# A custom engine ---------------------------------------------------------------------------------


class ShoutEngine:
    """A custom engine as a user writes one: any object with reply(body)."""

    built = 0

    def __init__(self) -> None:
        ShoutEngine.built += 1

    def reply(self, body: str) -> str | None:
        """Answer in capitals."""
        return body.upper() + "!" if body.strip() else None


@pytest.fixture
def unique_name() -> Iterator[str]:
    """A fresh engine name, unregistered again at the end."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    unregister_engine(name)


def test_a_registered_engine_is_a_valid_chat_mode_and_built_once(unique_name: str) -> None:
    with pytest.raises(SettingsError, match="CHAT_MODE"):
        build_settings({"CHAT_MODE": unique_name, "SECRET_KEY": "s"})
    register_engine(unique_name, ShoutEngine)
    assert unique_name in engine_names()
    settings = build_settings({"CHAT_MODE": unique_name, "SECRET_KEY": "s"})
    assert settings.chat_mode == unique_name
    before = ShoutEngine.built
    engine = build_chat_engine(unique_name)
    assert engine.reply("hello") == "HELLO!"
    assert build_chat_engine(unique_name) is engine  # one per process, not one per text
    assert ShoutEngine.built == before + 1


def test_a_registered_engine_answers_inbound_texts(live_factory: Any, unique_name: str) -> None:
    register_engine(unique_name, ShoutEngine)
    live = live_factory(CHAT_MODE=unique_name)
    assert text_app(live, "are you open") == "ARE YOU OPEN!"


@pytest.mark.parametrize("name", ["", "Upper", "1st", "has space", "x" * 41])
def test_an_engine_name_must_be_a_plain_word(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        register_engine(name, ShoutEngine)


def test_a_name_is_not_taken_over_by_accident(unique_name: str) -> None:
    register_engine(unique_name, ShoutEngine)
    register_engine(unique_name, ShoutEngine)  # the same again is fine
    with pytest.raises(ValueError, match="registered already"):
        register_engine(unique_name, EchoEngine)
    with pytest.raises(ValueError, match="registered already"):
        register_engine("echo", ShoutEngine)
    register_engine(unique_name, EchoEngine, replace=True)
    assert isinstance(build_chat_engine(unique_name), EchoEngine)


def _write_module(folder: Path, name: str, code: str) -> None:
    (folder / f"{name}.py").write_text(code)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for plugin modules; the modules loaded from it are forgotten after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for module in set(sys.modules) - before:
        if (getattr(sys.modules[module], "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[module]


def test_chat_engine_modules_are_imported_and_register_their_engines(
    plugin_dir: Path, unique_name: str
) -> None:
    module = f"my_engines_{uuid.uuid4().hex[:8]}"
    _write_module(
        plugin_dir,
        module,
        "from twilio_chat.replies.engines import register_engine\n\n"
        "class Pirate:\n"
        "    def reply(self, body):\n"
        "        return 'Arr: ' + body\n\n"
        f"register_engine({unique_name!r}, Pirate)\n",
    )
    settings = build_settings(
        {"CHAT_ENGINE_MODULES": f" {module} ,", "CHAT_MODE": unique_name, "SECRET_KEY": "s"}
    )
    assert settings.chat_engine_modules == (module,)
    assert build_chat_engine(unique_name).reply("ahoy") == "Arr: ahoy"


def test_a_chat_engine_module_that_fails_to_import_is_a_bad_setting(plugin_dir: Path) -> None:
    module = f"broken_{uuid.uuid4().hex[:8]}"
    _write_module(plugin_dir, module, "raise RuntimeError('no model file')\n")
    with pytest.raises(SettingsError) as info:
        build_settings({"CHAT_ENGINE_MODULES": f"{module},missing_module_xyz", "SECRET_KEY": "s"})
    message = str(info.value)
    assert message.startswith("CHAT_ENGINE_MODULES:") and "no model file" in message
    assert "\n" not in message


def test_an_installed_package_adds_an_engine_through_its_entry_point(plugin_dir: Path) -> None:
    name = f"parrot-{uuid.uuid4().hex[:6]}"
    module = f"parrot_pkg_{uuid.uuid4().hex[:8]}"
    _write_module(
        plugin_dir,
        module,
        "class Parrot:\n    def reply(self, body):\n        return body + ' ' + body\n",
    )
    dist = plugin_dir / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{engines.ENTRY_POINT_GROUP}]\n{name} = {module}:Parrot\n"
    )
    try:
        assert name in engine_names()
        assert module not in sys.modules  # listed by name, loaded only when chosen
        assert build_settings({"CHAT_MODE": name, "SECRET_KEY": "s"}).chat_mode == name
        assert build_chat_engine(name).reply("hi") == "hi hi"
    finally:
        unregister_engine(name)


def test_the_documented_example_engine_plugs_in_as_shown(plugin_dir: Path) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    section = docs[docs.index("### Your own chat engine") :]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    lines = [line.removeprefix("  ") for line in code.splitlines()]
    assert lines[0] == "# shout.py"
    (plugin_dir / "shout.py").write_text("\n".join(lines) + "\n")
    try:
        settings = build_settings(
            {"CHAT_ENGINE_MODULES": "shout", "CHAT_MODE": "shout", "SECRET_KEY": "s"}
        )
        assert build_chat_engine(settings.chat_mode).reply("hello") == "HELLO"
    finally:
        unregister_engine("shout")
