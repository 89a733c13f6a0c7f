"""The requests: query strings, path parameters and bodies, as flask-openapi3 validates them."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from flask import has_request_context, request
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from twilio_chat.errors import N_
from twilio_chat.inbox.conversations import MAX_SEARCH
from twilio_chat.messaging import MAX_BODY, MAX_MEDIA, STATUS_RANK
from twilio_chat.replies.config import AUTO_REPLY_MAX, MAX_WINDOW_HOURS
from twilio_chat.settings import is_http_url
from twilio_chat.web.schemas.base import (
    API_KEY_PATTERN,
    CURSOR_PATTERN,
    E164,
    HTTP_URL_PATTERN,
    STORABLE,
    Contract,
    Flag,
    Page,
    Phone,
    Says,
    Sid,
    Trimmed,
    Unset,
    When,
)

CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


def _http_url(value: str) -> str:
    if not is_http_url(value):
        raise PydanticCustomError("http_url", "must be an http:// or https:// URL")
    return value


def _number_only(value: Any) -> Any:
    """Take a JSON number, not a boolean or a string that looks like one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("float_type", "must be a number")
    return value


def _cursor(value: str) -> str:
    if not re.fullmatch(CURSOR_PATTERN, value):
        raise PydanticCustomError("cursor", "must come from a previous answer")
    return value


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _one_or_many(value: Any) -> Any:
    """One URL or a list of them; blank entries are dropped, as a form's empty lines are."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        items = [v.strip() if isinstance(v, str) else v for v in value]
        return [v for v in items if v != ""]  # anything but text is left for the type check
    return value


def _limit(default: int, high: int) -> Any:
    return Field(default, ge=1, le=high, description=f"How many, 1 to {high}")


# Requests: query strings -------------------------------------------------------------------


class Query(Contract):
    """A query string: an empty value is the same as none."""

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != ""}
        return data


def _status(value: str) -> str:
    if value not in STATUS_RANK:
        raise PydanticCustomError("literal_error", "must be a delivery status")
    return value


Status = Annotated[
    str, AfterValidator(_status), WithJsonSchema({"type": "string", "enum": sorted(STATUS_RANK)})
]


class MessagesQuery(Query):
    """Filters of the stored messages, as the dashboard filters them."""

    limit: int = _limit(50, 500)
    direction: Unset[Literal["inbound", "outbound"]] = Field(None, description="Only one direction")
    status: Unset[Status] = Field(None, description="Only messages with this delivery status")
    number: Unset[E164] = Field(None, description="Only one conversation: the other party's")
    text: Unset[
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_SEARCH), STORABLE]
    ] = Field(None, description="Only bodies holding this text, in any case")
    before: Unset[Page] = None


class RemoteMessagesQuery(Query):
    """Filters of Twilio's message list."""

    to: Unset[E164] = Field(None, description="Sent to this number")
    from_: Unset[E164] = Field(None, alias="from", description="Sent from this number")
    date_sent: Unset[When] = Field(None, description="Sent on this UTC day")
    date_sent_before: Unset[When] = Field(None, description="Sent on or before")
    date_sent_after: Unset[When] = Field(None, description="Sent on or after")
    limit: int = _limit(50, 1000)


class ConversationsQuery(Query):
    """A page of the conversation list."""

    limit: int = _limit(50, 200)
    before: Unset[Page] = None


class ThreadQuery(Query):
    """A page of one conversation's messages."""

    limit: int = _limit(100, 500)
    before: Unset[Page] = None


class AuditQuery(Query):
    """A page of the audit log."""

    limit: int = _limit(100, 500)
    before: Unset[Page] = None


Cursor = Annotated[
    str, AfterValidator(_cursor), WithJsonSchema({"type": "string", "pattern": CURSOR_PATTERN})
]


class EventsQuery(Query):
    """Where the live updates resume, and how long to wait for a change."""

    cursor: Unset[Cursor] = Field(
        None, description="`cursor` of the previous answer; leave it out to start"
    )
    timeout: int = Field(20, ge=0, le=30, description="Seconds to wait for a change")


# Requests: paths -------------------------------------------------------------------------


class SidPath(Contract):
    """A message by its SID."""

    sid: Annotated[
        Sid, Says(N_("%(field_name)s must be a message SID: SM or MM and 32 hex digits."))
    ]


class ParticipantPath(Contract):
    """A conversation by the other party's number."""

    participant: E164


# Requests: bodies -------------------------------------------------------------------------


class Body(Contract):
    """A JSON object; an HTML form's fields serve too (a repeated field is a list)."""

    @model_validator(mode="before")
    @classmethod
    def _object_or_form(cls, data: Any) -> Any:
        if not has_request_context():
            return data
        if not request.is_json:
            return {k: (v if len(v) > 1 else v[0]) for k, v in request.form.lists()}
        if not isinstance(request.get_json(silent=True), dict):
            raise PydanticCustomError("json_object", "the request body must be a JSON object")
        return data


class OptionalBody(Body):
    """A body that may be left out."""

    model_config = ConfigDict(
        openapi_extra={"required": False},  # type: ignore[typeddict-unknown-key]
    )


BODY_LENGTH = Says(N_("The message is %(length)d characters; the limit is %(limit)d."), ("length",))
MediaUrls = Annotated[
    list[Annotated[str, STORABLE, Field(json_schema_extra={"format": "uri"})]],
    BeforeValidator(_one_or_many),
    Field(max_length=MAX_MEDIA, description="http(s) URLs of pictures, audio or video"),
    Says(N_("At most %(limit)d media URLs."), ("list_max",)),
]
MessageBody = Annotated[str, StringConstraints(max_length=MAX_BODY), STORABLE, BODY_LENGTH]
# Empty means none: a form's empty field, or "" in JSON.
BlankIsNone = BeforeValidator(_blank_is_none)


class SendBody(Body):
    """What to send, to whom, and through which sender."""

    to: Phone
    body: MessageBody = ""
    media_urls: MediaUrls = Field(default_factory=list)
    content_sid: Annotated[Trimmed | None, BlankIsNone] = Field(
        None, description="A content template's SID (HX and 32 hex digits)"
    )
    messaging_service_sid: Annotated[Trimmed | None, BlankIsNone] = Field(
        None, description="Send through this Messaging Service (MG and 32 hex digits)"
    )
    use_messaging_service: Flag = Field(
        False, description="Send through TWILIO_MESSAGING_SERVICE_SID"
    )


class SimulateBody(Body):
    """A text from the sandbox's simulated handset."""

    from_: Phone = Field(alias="from", description="The simulated handset's number")
    body: MessageBody = ""
    media_urls: MediaUrls = Field(default_factory=list)
    to: Annotated[Phone | None, BlankIsNone] = Field(
        None, description="The app's number (default TWILIO_DEFAULT_FROM)"
    )


class ContactBody(Body):
    """A contact's name; empty to unname."""

    name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=120),
        STORABLE,
        Says(N_("The name must be at most 120 characters."), ("length",)),
    ] = ""


class PauseBody(OptionalBody):
    """How long to pause automatic replies."""

    minutes: Unset[Annotated[StrictInt, Field(ge=1, le=525600)]] = Field(
        None, description="Minutes (default AI_HUMAN_PAUSE_MINUTES)"
    )


class OpeningHours(Contract):
    """One day's opening hours, on a 24-hour clock."""

    start: Annotated[str, StringConstraints(pattern=CLOCK_PATTERN)] = Field(examples=["09:00"])
    end: Annotated[str, StringConstraints(pattern=CLOCK_PATTERN)] = Field(examples=["17:00"])


class BusinessHours(Contract):
    """A weekly schedule: a day left out is closed all day."""

    model_config = ConfigDict(extra="forbid")

    timezone: Annotated[str, StringConstraints(max_length=64)] = Field(examples=["Europe/Warsaw"])
    days: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], OpeningHours] = Field(
        default_factory=dict
    )


class AutoReplyBody(Body):
    """The fixed auto-reply; a field left out keeps its value."""

    enabled: Unset[StrictBool] = None
    message: Annotated[
        Unset[
            Annotated[
                str,
                StringConstraints(strip_whitespace=True, min_length=1, max_length=AUTO_REPLY_MAX),
                STORABLE,
            ]
        ],
        Says(N_("The message must be text."), ("text",)),
        Says(N_("The message must be 1 to %(limit)d characters (it is %(length)d)."), ("length",)),
    ] = None
    window_hours: Unset[Annotated[StrictInt, Field(ge=0, le=MAX_WINDOW_HOURS)]] = Field(
        None, description="At most one auto-reply per conversation within this many hours (0: each)"
    )
    outside_hours_only: Unset[StrictBool] = Field(
        None, description="Answer only outside the business hours"
    )
    business_hours: BusinessHours | None = Field(
        None, description="A weekly schedule in a time zone; null: none"
    )


class ModeBody(Body):
    """Who answers texts automatically from now on."""

    mode: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="off, auto_reply, ai, or a chat engine's name (GET /api/automation lists them)"
    )


class AIConfigBody(Body):
    """The AI config; a field left out keeps its value."""

    model_config = ConfigDict(extra="forbid")

    enabled: Unset[StrictBool] = None
    api_key: Annotated[
        Annotated[
            str, StringConstraints(strip_whitespace=True, max_length=500, pattern=API_KEY_PATTERN)
        ]
        | None,
        BlankIsNone,
        Says(N_("The API key must be printable ASCII characters without spaces."), ("pattern",)),
    ] = Field(
        None,
        description="Write-only: a key sets it, an empty string or null clears it",
        json_schema_extra={"writeOnly": True},
    )
    model: Annotated[
        Unset[
            Annotated[
                str,
                StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
                STORABLE,
            ]
        ],
        Says(N_("Enter the model's name."), ("string_too_short",)),
    ] = None
    temperature: Annotated[
        Unset[Annotated[float, Field(ge=0, le=2), BeforeValidator(_number_only)]],
        Says(N_("The temperature must be a number from 0 to 2.")),
    ] = None
    system_prompt: Unset[
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000), STORABLE]
    ] = None
    target_number: Annotated[Phone | None, BlankIsNone] = Field(
        None, description="Answer only texts to this number"
    )
    history_limit: Unset[Annotated[StrictInt, Field(ge=1, le=200)]] = None
    max_segments: Unset[Annotated[StrictInt, Field(ge=1, le=10)]] = None
    base_url: Annotated[
        Annotated[
            str,
            StringConstraints(strip_whitespace=True, max_length=500),
            STORABLE,
            AfterValidator(_http_url),
            Field(json_schema_extra={"format": "uri", "pattern": HTTP_URL_PATTERN}),
        ]
        | None,
        BlankIsNone,
        Says(
            N_("The base URL must be an http:// or https:// URL like %(example)s."), ("http_url",)
        ),
    ] = Field(None, description="An OpenAI-compatible server (default: OpenAI's)")
    fallback_text: Annotated[
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=640), STORABLE] | None,
        BlankIsNone,
    ] = Field(None, description="Sent when the model cannot answer")


class AITestBody(AIConfigBody):
    """What to ask the model; AI settings given are tried instead of the saved ones."""

    model_config = ConfigDict(
        extra="forbid",
        openapi_extra={"required": False},  # type: ignore[typeddict-unknown-key]
    )

    message: Unset[
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=1600), STORABLE]
    ] = Field(None, description="Default: a greeting")
