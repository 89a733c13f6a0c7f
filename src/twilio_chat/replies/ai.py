"""AI replies: a prompt from the conversation's history, one OpenAI-compatible call, guards.

Any OpenAI-compatible server works through `base_url`. The SDK's defaults (600 s, 2 retries)
are far too long for an SMS, so each call has a 20 s time-out and at most 2 tries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import openai
from openai import OpenAI
from sqlalchemy import literal, select, tuple_
from sqlalchemy.orm import Session

from twilio_chat.db.models import Message, UTCDateTime
from twilio_chat.replies.config import AISettings
from twilio_chat.telemetry.metrics import OPENAI_SECONDS
from twilio_chat.twilio.segments import count_segments

TIMEOUT_SECONDS = 20.0
MAX_TRIES = 2


class AIError(Exception):
    """The model could not answer; the message says why in plain words."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind  # no_key | auth | timeout | unreachable | server | empty


@dataclass(frozen=True)
class ChatTurn:
    """One message of the prompt."""

    role: str
    content: str


def history(session: Session, message: Message, limit: int) -> list[Message]:
    """Return the conversation's last `limit` messages up to `message`, oldest first.

    In the thread's order, by time (a text stored late by a sync takes its place by time).
    """
    upto = tuple_(Message.created_at, Message.id) <= tuple_(
        literal(message.created_at, UTCDateTime()), message.id
    )
    rows = session.scalars(
        select(Message)
        .where(Message.contact_number == message.contact_number, upto)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    ).all()
    return list(reversed(rows))


def build_prompt(system_prompt: str, messages: Sequence[Message]) -> list[ChatTurn]:
    """Turn history into chat turns: the system prompt, then each message once, oldest first."""
    turns = [ChatTurn("system", system_prompt)] if system_prompt else []
    for m in messages:
        text = m.body.strip() or ("[media]" if m.media else "")
        if not text:
            continue
        turns.append(ChatTurn("user" if m.direction == "inbound" else "assistant", text))
    return turns


def trim_to_segments(text: str, max_segments: int) -> str:
    """Cut `text` at a word boundary so it fits in `max_segments` SMS segments."""
    text = text.strip()
    if count_segments(text).segments <= max_segments:
        return text
    words = text.split(" ")
    low, high = 0, len(words)
    while low < high:  # the longest word prefix that fits
        mid = (low + high + 1) // 2
        if count_segments(" ".join(words[:mid])).segments <= max_segments:
            low = mid
        else:
            high = mid - 1
    if low == 0:  # one giant word: cut by characters
        cut = text
        while count_segments(cut).segments > max_segments:
            cut = cut[: max(len(cut) - 10, 0)]
        return cut.rstrip()
    return " ".join(words[:low]).rstrip(" ,;:-")


def complete(
    config: AISettings, turns: Sequence[ChatTurn], timeout: float = TIMEOUT_SECONDS
) -> str:
    """Ask the model for the next assistant message; raise AIError with a clear reason."""
    if not config.api_key:
        raise AIError("no OpenAI API key is set (AI config 'api_key' or OPENAI_API_KEY)", "no_key")
    client = OpenAI(
        api_key=config.api_key,
        base_url=config.base_url or None,
        timeout=timeout,
        max_retries=MAX_TRIES - 1,
    )
    where = config.base_url or "the OpenAI API"
    try:
        with OPENAI_SECONDS.time():
            answer = client.chat.completions.create(
                model=config.model,
                temperature=config.temperature,
                messages=[{"role": t.role, "content": t.content} for t in turns],  # type: ignore[misc]
            )
    except openai.AuthenticationError:
        raise AIError(f"the API key was rejected by {where} (401)", "auth") from None
    except openai.APITimeoutError:
        raise AIError(f"{where} did not answer within {timeout:g} s", "timeout") from None
    except openai.APIConnectionError:
        raise AIError(f"cannot reach {where}", "unreachable") from None
    except openai.APIStatusError as exc:
        raise AIError(f"{where} answered HTTP {exc.status_code}", "server") from None
    finally:
        client.close()
    content = answer.choices[0].message.content if answer.choices else None
    if not content or not content.strip():
        raise AIError(f"{where} answered with an empty message", "empty")
    return content.strip()


def conversation_history(session: Session, number: str, limit: int) -> list[Message]:
    """Return the last `limit` stored messages with a number, oldest first."""
    rows = session.scalars(
        select(Message)
        .where(Message.contact_number == number)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    ).all()
    return list(reversed(rows))


def answer_latest(
    session: Session,
    config: AISettings,
    number: str,
    latest: str,
    history_limit: int,
    timeout: float = TIMEOUT_SECONDS,
) -> str:
    """Generate an answer to `latest` after the stored history with a number, fit to SMS."""
    turns = build_prompt(config.system_prompt, conversation_history(session, number, history_limit))
    if latest.strip():
        turns.append(ChatTurn("user", latest.strip()))
    return trim_to_segments(complete(config, turns, timeout), config.max_segments)
