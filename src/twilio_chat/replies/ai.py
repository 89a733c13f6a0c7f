"""AI replies: a prompt from the conversation's history, one OpenAI-compatible call, guards.

Any OpenAI-compatible server works through `base_url`. The SDK's defaults (600 s, 2 retries)
are far too long for an SMS, so each call has a 20 s time-out and at most 2 tries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai import OpenAI
from sqlalchemy import literal, select, tuple_
from sqlalchemy.orm import Session

from twilio_chat.db.models import Message, UTCDateTime
from twilio_chat.errors import N_
from twilio_chat.replies.config import AISettings, is_usable_api_key
from twilio_chat.settings import is_http_url
from twilio_chat.telemetry.metrics import OPENAI_SECONDS
from twilio_chat.twilio.segments import count_segments

TIMEOUT_SECONDS = 20.0
MAX_TRIES = 2
OPENAI_BASE_URL = "https://api.openai.com/v1"  # the SDK's own default


class AIError(Exception):
    """The model could not answer; the message says why in plain words.

    `template` and `params` let the web layer say it in the user's language (see AppError).
    """

    def __init__(self, template: str, kind: str, **params: Any) -> None:
        self.template = template
        self.params = params
        self.message = template % params if params else template
        super().__init__(self.message)
        # no_key | bad_key | bad_base_url | auth | timeout | unreachable | server | empty
        self.kind = kind


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
        raise AIError(
            N_("no OpenAI API key is set (AI config 'api_key' or OPENAI_API_KEY)"), "no_key"
        )
    # A key or URL the HTTP client cannot send would fail inside the SDK with no clear reason
    # (it may predate the config's checks, or come from the environment).
    if not is_usable_api_key(config.api_key):
        raise AIError(
            N_("the API key must be printable ASCII characters without spaces"), "bad_key"
        )
    if config.base_url and not is_http_url(config.base_url):
        raise AIError(N_("the base URL is not a usable http:// or https:// URL"), "bad_base_url")
    client = OpenAI(
        api_key=config.api_key,
        base_url=config.base_url or None,
        timeout=timeout,
        max_retries=MAX_TRIES - 1,
    )
    where = config.base_url or OPENAI_BASE_URL
    try:
        with OPENAI_SECONDS.time():
            answer = client.chat.completions.create(
                model=config.model,
                temperature=config.temperature,
                messages=[{"role": t.role, "content": t.content} for t in turns],  # type: ignore[misc]
            )
    except openai.AuthenticationError:
        raise AIError(
            N_("the API key was rejected by %(where)s (401)"), "auth", where=where
        ) from None
    except openai.APITimeoutError:
        raise AIError(
            N_("%(where)s did not answer within %(seconds)g s"),
            "timeout",
            where=where,
            seconds=timeout,
        ) from None
    except openai.APIConnectionError:
        raise AIError(N_("cannot reach %(where)s"), "unreachable", where=where) from None
    except openai.APIStatusError as exc:
        raise AIError(
            N_("%(where)s answered HTTP %(status)d"), "server", where=where, status=exc.status_code
        ) from None
    finally:
        client.close()
    content = answer.choices[0].message.content if answer.choices else None
    if not content or not content.strip():
        raise AIError(N_("%(where)s answered with an empty message"), "empty", where=where)
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
