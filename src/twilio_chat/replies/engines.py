"""Chat engines: who answers when neither AI nor the auto-reply is on; CHAT_MODE names one.

An engine is any object with `reply(body) -> str | None`. Engines are found by name in a
registry, so a new one plugs in without an edit here or in settings.py:

- `register_engine(name, factory)` from Python code, for instance in a module named by the
  CHAT_ENGINE_MODULES setting, which is imported when the settings load;
- an entry point of an installed package in the group `twilio_chat.engines`: its name is the
  engine's, its value the factory (`name = "package.module:Factory"`), loaded when first used.

A factory takes no argument and returns the engine. Each process builds an engine once, on its
first reply, and then calls its `reply` from any worker thread, possibly at the same time.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import ClassVar, Protocol

ENTRY_POINT_GROUP = "twilio_chat.engines"
NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


class ChatEngine(Protocol):
    """Answers one inbound text with a reply, or None for no reply."""

    def reply(self, body: str) -> str | None:
        """Return the reply to `body`."""
        ...


EngineFactory = Callable[[], ChatEngine]


class EchoEngine:
    """Echo the text back (the default, handy for trying the app out)."""

    def reply(self, body: str) -> str | None:
        """Return the text back, or nothing for an empty text."""
        text = body.strip()
        return f"Echo: {text}" if text else None


class KeywordsEngine:
    """Answer a few common words; anything else gets a short help line."""

    ANSWERS: ClassVar[dict[str, str]] = {
        "hours": "We are open Monday to Friday, 9:00-17:00.",
        "price": "Our prices are on our website; reply with a question and a person will answer.",
        "hello": "Hello! How can we help?",
        "hi": "Hi! How can we help?",
    }
    DEFAULT = "Thanks for your message. Text HOURS or PRICE, or ask us anything."

    def reply(self, body: str) -> str | None:
        """Return the answer for the first known word in `body`, else the default line."""
        for word in re.findall(r"[a-z0-9']+", body.lower()):
            if word in self.ANSWERS:
                return self.ANSWERS[word]
        return self.DEFAULT


_lock = threading.Lock()
_factories: dict[str, EngineFactory] = {"echo": EchoEngine, "keywords": KeywordsEngine}
_built: dict[str, ChatEngine] = {}


def register_engine(name: str, factory: EngineFactory, *, replace: bool = False) -> None:
    """Make an engine available to CHAT_MODE under `name` (lower case, digits, - and _)."""
    if not NAME.fullmatch(name):
        raise ValueError(
            f"a chat engine's name is a lower-case letter, then letters, digits, - or _ "
            f"(at most 40), got {name!r}"
        )
    if not callable(factory):
        raise ValueError(f"the factory of chat engine {name!r} must be callable")
    with _lock:
        if not replace and _factories.get(name, factory) is not factory:
            raise ValueError(f"a chat engine named {name!r} is registered already")
        _factories[name] = factory
        _built.pop(name, None)


def unregister_engine(name: str) -> None:
    """Remove an engine registered under `name` (nothing happens if there is none)."""
    with _lock:
        _factories.pop(name, None)
        _built.pop(name, None)


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def engine_names() -> list[str]:
    """Return the names CHAT_MODE accepts: registered engines and installed entry points."""
    with _lock:
        names = set(_factories)
    return sorted(names | set(_entry_points()))


def import_engine_modules(modules: Iterable[str]) -> None:
    """Import modules that register engines when imported (the CHAT_ENGINE_MODULES setting)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any failure of a plugin's import is a bad setting
            raise ValueError(f"cannot import {module!r}: {type(exc).__name__}: {exc}") from None


def build_chat_engine(mode: str) -> ChatEngine:
    """Return this process's engine named by CHAT_MODE, built on first use."""
    engine = _built.get(mode)
    if engine is not None:
        return engine
    with _lock:
        engine = _built.get(mode)
        if engine is not None:
            return engine
        factory = _factories.get(mode)
        if factory is None:
            point = _entry_points().get(mode)
            if point is None:
                known = ", ".join(sorted(set(_factories) | set(_entry_points())))
                raise ValueError(f"CHAT_MODE: unknown engine {mode!r} (known: {known})")
            factory = point.load()
            _factories[mode] = factory
        engine = factory()
        if not callable(getattr(engine, "reply", None)):
            raise TypeError(f"chat engine {mode!r}: {factory!r} made an object without reply()")
        _built[mode] = engine
        return engine
