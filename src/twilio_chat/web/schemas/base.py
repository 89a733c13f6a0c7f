"""The contract's foundations: the model base classes and the field types they share.

`Says` gives a field the words the panel shows when it breaks a rule; `Unset` is a field that
may be left out but, when given, is never null.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from twilio_chat.settings import is_e164

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

    model_config = ConfigDict(extra="forbid")


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


def _blank_is_false(value: Any) -> Any:
    return False if value == "" else value


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
