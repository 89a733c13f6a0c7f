"""The REST API's contract: every query string, path, body and answer, declared once.

flask-openapi3 validates each request against these pydantic models before the view runs and
writes /api/openapi.json from them; `web.contract` turns a validation failure into the API's
error answer. The services still check what only they can know (a number opted out, a setting
missing); the models check shape, type and range.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, TypeVar

from flask import has_request_context, request
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from twilio_chat.errors import N_
from twilio_chat.inbox.conversations import MAX_SEARCH
from twilio_chat.messaging import MAX_BODY, MAX_MEDIA, STATUS_RANK
from twilio_chat.replies.config import AUTO_REPLY_MAX
from twilio_chat.settings import is_e164, is_http_url

# The models by name: a validation error names its model (its title), and the error's message
# reads the field's bounds from that model's schema.
MODELS: dict[str, type[BaseModel]] = {}
SCHEMAS: dict[tuple[Any, ...], dict[str, Any]] = {}  # JSON schemas built, by model and options
SID_PATTERN = r"^(SM|MM)[0-9a-fA-F]{32}$"  # a Message SID, as Twilio's OpenAPI describes it
T = TypeVar("T")
CURSOR_PATTERN = r"^[0-9]{1,18}\.[0-9]{1,18}$"
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
API_KEY_PATTERN = r"^[!-~]*$"  # printable ASCII without spaces: what an HTTP header carries
HTTP_URL_PATTERN = r"^https?://[!-~]+$"
FIRST_YEAR, LAST_YEAR = 1970, 9998  # dates Twilio's filters can take (and a day after fits)


@dataclass(frozen=True)
class Says:
    """A field's own message when it breaks a rule of these kinds (any, when none is given).

    The panel shows a field's message next to it: these are the words the services use, so
    the model and the service refuse a value alike (see web.contract.MESSAGES for the kinds).
    """

    template: str
    kinds: tuple[str, ...] = ()


def _drop_null_defaults(schema: dict[str, Any]) -> None:
    """Leave `default: null` out of the document: an optional field is simply not required."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class Contract(BaseModel):
    """A model of the API's contract; registered by name for the error messages."""

    model_config = ConfigDict(json_schema_extra=_drop_null_defaults)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register the model under its name, which must be unique."""
        super().__init_subclass__(**kwargs)
        assert cls.__name__ not in MODELS, f"two API models named {cls.__name__}"
        MODELS[cls.__name__] = cls

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Return the model's JSON schema, built once (a copy: callers may change it).

        flask-openapi3 asks for a query model's schema on every request it validates, and
        building one costs far more than copying it.
        """
        key = (cls, args, tuple(sorted(kwargs.items())))
        schema = SCHEMAS.get(key)
        if schema is None:
            schema = SCHEMAS[key] = super().model_json_schema(*args, **kwargs)
        return copy.deepcopy(schema)


class Answer(Contract):
    """An answer: exactly these fields, no others."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_drop_null_defaults)


# Field types ------------------------------------------------------------------------------


def _storable(value: str) -> str:
    """Refuse text a database cannot store: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise PydanticCustomError("nul", "must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise PydanticCustomError("surrogate", "must be valid Unicode text") from None
    return value


def _e164(value: str) -> str:
    if not is_e164(value):
        raise PydanticCustomError("e164", "must be a phone number in E.164 form")
    return value


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


def _blank_is_false(value: Any) -> Any:
    return False if value == "" else value


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


def _when(value: Any) -> Any:
    """Parse a date (midnight UTC) or an ISO 8601 time, in UTC, within Twilio's years."""
    if not isinstance(value, str):
        return value
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            parsed = datetime(d.year, d.month, d.day, tzinfo=UTC)
        else:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            # The twilio SDK formats the clock time and appends Z: hand it UTC.
            parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise PydanticCustomError("when", "must be a date or an ISO 8601 time") from None
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
        raise PydanticCustomError("when", "must be a date or an ISO 8601 time") from None
    return parsed


STORABLE = AfterValidator(_storable)
Text = Annotated[str, STORABLE]
Trimmed = Annotated[str, StringConstraints(strip_whitespace=True), STORABLE]
E164 = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(_e164),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": E164_PATTERN,
            "description": "A phone number in E.164 form",
            "example": "+15551234567",
        }
    ),
]
# A number the service checks, with a message that shows the number itself.
Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": E164_PATTERN,
            "description": "A phone number in E.164 form",
            "example": "+15551234567",
        }
    ),
]
Sid = Annotated[
    str,
    Field(pattern=SID_PATTERN, description="A Message SID: SM or MM and 32 hex digits"),
]
When = Annotated[
    datetime,
    BeforeValidator(_when),
    WithJsonSchema(
        {
            "type": "string",
            "description": f"A date (YYYY-MM-DD, from midnight UTC) or an ISO 8601 time, "
            f"years {FIRST_YEAR} to {LAST_YEAR}",
            "example": "2024-05-01",
        }
    ),
]
Flag = Annotated[bool, BeforeValidator(_blank_is_false)]
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda v: v.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Page = Annotated[int, Field(ge=1, le=2**62, description="`next_cursor` of the previous page")]


def _not_null(value: T | None) -> T:
    """Refuse an explicit null where a field may be left out but not emptied."""
    if value is None:
        raise PydanticCustomError("null", "must not be null")
    return value


# A field that may be left out (its default then applies) but, when given, is never null. The
# document shows only the value's own schema.
Unset = Annotated[T | SkipJsonSchema[None], AfterValidator(_not_null)]


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
        json_schema_extra=_drop_null_defaults,
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
    media_urls: MediaUrls = []
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
    media_urls: MediaUrls = []
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


class AIConfigBody(Body):
    """The AI config; a field left out keeps its value."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_drop_null_defaults)

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


class AITestBody(OptionalBody):
    """What to ask the model."""

    message: Unset[
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=1600), STORABLE]
    ] = Field(None, description="Default: a greeting")


# Answers ----------------------------------------------------------------------------------


class ErrorDetail(Answer):
    """What went wrong, in the request's language, and the field at fault."""

    code: str | int = Field(description="Ours, or Twilio's error code on 502")
    message: str
    field: str | None


class ErrorAnswer(Answer):
    """Every error the API answers."""

    error: ErrorDetail


class MediaItem(Answer):
    """A picture, audio or video of an MMS."""

    url: str
    content_type: str


class MessageOut(Answer):
    """A stored message."""

    id: int
    sid: str | None
    direction: Literal["inbound", "outbound"]
    from_: str | None = Field(alias="from")
    to: str | None
    participant: str
    our_number: str | None
    messaging_service_sid: str | None
    body: str
    media: list[MediaItem]
    status: str
    error_code: int | None
    error_message: str | None
    num_segments: int
    source: str | None
    reply_to_sid: str | None
    redacted: bool
    created_at: Timestamp
    updated_at: Timestamp
    sent_at: Timestamp | None


class StatusEventOut(Answer):
    """A status callback Twilio sent for a message."""

    status: str
    error_code: int | None
    received_at: Timestamp


class StoredMessage(MessageOut):
    """A stored message with its status callbacks, oldest first."""

    events: list[StatusEventOut]


class RemoteMessageOut(Answer):
    """A message as Twilio describes it."""

    sid: str
    messaging_service_sid: str | None
    from_: str | None = Field(alias="from")
    to: str | None
    body: str
    status: str
    direction: str
    num_segments: int
    num_media: int
    error_code: int | None
    error_message: str | None
    date_created: Timestamp | None
    date_sent: Timestamp | None


class MessageAnswer(Answer):
    """One message just sent."""

    message: MessageOut


class MessageDetail(Answer):
    """One message: ours with its status callbacks, or Twilio's record of it."""

    message: StoredMessage | RemoteMessageOut
    stored: bool = Field(description="True: from our store; false: Twilio's record")


class MessagePage(Answer):
    """A page of stored messages, newest first."""

    messages: list[MessageOut]
    next_cursor: int | None = Field(description="`before` of the next page; null at the end")


class StoredCounts(Answer):
    """What a sync wrote."""

    inserted: int
    updated: int
    replies_enqueued: int


class RemoteMessageList(Answer):
    """Twilio's messages, newest first, and what of them was stored here."""

    messages: list[RemoteMessageOut]
    stored: StoredCounts


class Stats(Answer):
    """The dashboard's statistics."""

    inbound_today: int = Field(description="Since midnight UTC")
    outbound_today: int = Field(description="Since midnight UTC")
    inbound_7d: int
    outbound_7d: int
    delivered_7d: int = Field(description="Delivered or read")
    failed_7d: int = Field(description="Undelivered or failed")
    delivery_rate: float | None = Field(
        description="Delivered over settled outbound texts in 7 days; null with none settled"
    )
    opted_out: int
    jobs_waiting: int


class StatsAnswer(Answer):
    """The dashboard's statistics."""

    stats: Stats


class RedactAnswer(Answer):
    """A message's body erased at Twilio and here."""

    redacted: bool
    sid: str
    message: MessageOut | None = Field(description="Ours, or null when we do not store it")


class DeleteAnswer(Answer):
    """A message deleted at Twilio and here."""

    deleted: bool
    sid: str


class ConversationOut(Answer):
    """A conversation with one number."""

    participant: str
    name: str | None
    unread_count: int
    opted_out: bool
    replies_paused: bool
    replies_paused_until: Timestamp | None
    last_message: MessageOut | None
    last_message_at: Timestamp | None


class ConversationPage(Answer):
    """A page of conversations, latest activity first."""

    conversations: list[ConversationOut]
    next_cursor: int | None = Field(description="`before` of the next page; null at the end")


class Thread(Answer):
    """A conversation and a page of its messages, oldest first."""

    conversation: ConversationOut
    messages: list[MessageOut]
    next_cursor: int | None = Field(description="`before` of older messages; null at the start")


class ContactAnswer(Answer):
    """A contact's name."""

    participant: str
    name: str | None


class PauseAnswer(Answer):
    """Until when automatic replies are paused (null: they are not)."""

    participant: str
    replies_paused_until: Timestamp | None


class SimulateAnswer(Answer):
    """The simulated text, and how the app's webhook answered it."""

    sid: str
    from_: str = Field(alias="from")
    to: str
    body: str
    webhook_status: int


class AuditEventOut(Answer):
    """Who did what, when."""

    id: int
    at: Timestamp
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any] | None
    ip: str | None


class AuditPage(Answer):
    """A page of the audit log, newest first."""

    events: list[AuditEventOut]
    next_cursor: int | None = Field(description="`before` of the next page; null at the end")


class EventsAnswer(Answer):
    """New or changed messages since the cursor, and the cursor to ask with next."""

    cursor: str
    messages: list[MessageOut]


ReplyMode = Literal["ai", "auto_reply", "engine"]


class AutoReplyConfig(Answer):
    """The fixed auto-reply and which mode answers now."""

    enabled: bool
    message: str
    max_length: int
    ai_enabled: bool
    active_mode: ReplyMode


class AIConfig(Answer):
    """The AI config: the key only as a hint; where each value came from."""

    enabled: bool
    api_key_set: bool
    api_key_hint: str | None
    model: str
    temperature: float
    system_prompt: str
    target_number: str | None
    history_limit: int
    max_segments: int
    base_url: str | None
    fallback_text: str | None
    sources: dict[str, Literal["environment", "default", "stored"]]
    auto_reply_enabled: bool
    active_mode: ReplyMode


class AITestAnswer(Answer):
    """The model's answer to the test; nothing was sent."""

    ok: bool
    model: str
    answer: str
