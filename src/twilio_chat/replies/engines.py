"""Simple chat engines: a new engine is one class registered in build_chat_engine()."""

from __future__ import annotations

import re
from typing import ClassVar, Protocol


class ChatEngine(Protocol):
    """Answers one inbound text with a reply, or None for no reply."""

    def reply(self, body: str) -> str | None:
        """Return the reply to `body`."""
        ...


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


ENGINES: dict[str, type[ChatEngine]] = {"echo": EchoEngine, "keywords": KeywordsEngine}


def build_chat_engine(mode: str) -> ChatEngine:
    """Return the engine named by CHAT_MODE."""
    try:
        return ENGINES[mode]()
    except KeyError:
        raise ValueError(f"CHAT_MODE: unknown engine {mode!r}") from None
