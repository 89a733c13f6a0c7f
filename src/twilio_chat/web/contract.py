"""The API's contract at work: flask-openapi3's options, validation errors, the docs' assets.

flask-openapi3 checks each request against the models in `web.schemas` and writes the OpenAPI
document from them. A request that breaks them gets the API's usual error answer: 400 with
``{"error": {"code", "message", "field"}}``, the message naming the field, in the user's
language. The interactive docs are Swagger UI, served from the assets the
flask-openapi3-swagger package ships (nothing is fetched from a CDN).
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any, NoReturn

from flask import Blueprint
from flask.json.provider import DefaultJSONProvider
from flask_openapi3.models.info import Info
from flask_openapi3.models.server import Server
from flask_openapi3.models.tag import Tag
from flask_openapi3.types import ResponseDict
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from twilio_chat.errors import N_, InvalidInput
from twilio_chat.settings import Settings
from twilio_chat.web.schemas.answers import ErrorAnswer
from twilio_chat.web.schemas.base import FIRST_YEAR, LAST_YEAR, MODELS, Says

SWAGGER_UI = files("flask_openapi3_swagger") / "templates" / "swagger"
assets = Blueprint(
    "api_docs", __name__, static_folder=str(SWAGGER_UI), static_url_path="/static/swagger-ui"
)

# What a broken rule says; each names the field. Keys are pydantic's error types, grouped,
# and our own (web.schemas raises PydanticCustomError with these types).
MESSAGES = {
    "missing": N_("%(field_name)s is required."),
    "text": N_("%(field_name)s must be text."),
    "text_range": N_("%(field_name)s must be %(low)d to %(high)d characters (it is %(length)d)."),
    "text_max": N_("%(field_name)s must be at most %(limit)d characters."),
    "text_min": N_("%(field_name)s must be at least %(limit)d characters."),
    "pattern": N_("%(field_name)s must match the pattern %(pattern)s."),
    "cursor": N_("%(field_name)s must come from a previous answer."),
    "nul": N_("%(field_name)s must not contain NUL characters."),
    "surrogate": N_("%(field_name)s must be valid Unicode text."),
    "e164": N_("%(field_name)s must be a phone number in E.164 form like +15551234567."),
    "http_url": N_("%(field_name)s must be an http:// or https:// URL like %(example)s."),
    "when": N_(
        "%(field_name)s must be a date (YYYY-MM-DD) or an ISO 8601 time "
        "in the years %(low)d to %(high)d."
    ),
    "bool": N_("%(field_name)s must be true or false."),
    "int": N_("%(field_name)s must be a whole number."),
    "int_range": N_("%(field_name)s must be a whole number from %(low)d to %(high)d."),
    "number": N_("%(field_name)s must be a number."),
    "number_range": N_("%(field_name)s must be a number from %(low)s to %(high)s."),
    "choice": N_("%(field_name)s must be one of: %(choices)s."),
    "list": N_("%(field_name)s must be a list."),
    "list_max": N_("%(field_name)s takes at most %(limit)d items."),
    "unknown": N_("Unknown field %(field_name)s."),
    "json_object": N_("The request body must be a JSON object."),
    "invalid": N_("%(field_name)s is not valid."),
}
KINDS = {
    "missing": "missing",
    "string_type": "text",
    "string_too_short": "length",
    "string_too_long": "length",
    "string_pattern_mismatch": "pattern",
    "bool_type": "bool",
    "bool_parsing": "bool",
    "int_type": "int",
    "int_parsing": "int",
    "int_parsing_size": "int",
    "int_from_float": "int",
    "float_type": "number",
    "float_parsing": "number",
    "finite_number": "number",
    "greater_than": "number",
    "greater_than_equal": "number",
    "less_than": "number",
    "less_than_equal": "number",
    "literal_error": "choice",
    "enum": "choice",
    "list_type": "list",
    "too_long": "list_max",
    "extra_forbidden": "unknown",
    "json_invalid": "json_object",
    "json_type": "json_object",
    "model_type": "json_object",
    "model_attributes_type": "json_object",
    "dict_type": "json_object",
}
# The document's sections.
MESSAGES_TAG = [Tag(name="messages", description="Send, list, redact and delete messages")]
CONVERSATIONS_TAG = [Tag(name="conversations", description="Threads, contacts and pauses")]
REPLIES_TAG = [Tag(name="replies", description="The auto-reply and the AI replies")]
LIVE_TAG = [Tag(name="live", description="Live updates by long polling")]
ADMIN_TAG = [Tag(name="admin", description="The audit log, the sandbox, this document")]

# What an explicit null where a value must be is told, by the field's JSON type.
NULL_KINDS = {"integer": "int", "number": "number", "boolean": "bool", "array": "list"}


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, where a body nested too deeply to parse is bad JSON, not a crash."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON; Python's parser gives up on deep nesting with a RecursionError."""
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON is nested too deeply") from None


def error_answers(*statuses: int) -> ResponseDict:
    """Declare that an operation may answer these statuses with the error shape."""
    return dict.fromkeys(statuses, ErrorAnswer)


def openapi_options(settings: Settings) -> dict[str, Any]:
    """Return flask-openapi3's options for this app's OpenAPI document and validation."""
    return {
        "info": Info(
            title="Twilio Chat API",
            version="1",
            description="Send and read SMS, configure the automatic replies. Every error is "
            '`{"error": {"code", "message", "field"}}`, in the `Accept-Language` language.',
        ),
        "servers": [Server(url=settings.base_url)],
        "security_schemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from `twilio-chat create-token`",
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "session",
                "description": "Panel login; state-changing calls also need the X-CSRF-Token "
                "header",
            },
        },
        "openapi_extensions": {"security": [{"bearer": []}, {"session": []}]},
        "validation_error_status": 400,
        "validation_error_model": ErrorAnswer,
        "validation_error_callback": refuse,
        "doc_ui": False,  # served by web.api: behind our auth rules, with our CSP
    }


def refuse(error: ValidationError) -> NoReturn:
    """Refuse a request that breaks the contract (flask-openapi3 calls this on failure)."""
    raise invalid_input(error)


def invalid_input(error: ValidationError) -> InvalidInput:
    """Turn pydantic's first complaint into InvalidInput: a message naming the field."""
    detail = error.errors()[0]
    loc = detail["loc"]
    field = str(loc[0]) if loc else None
    indexes = "".join(f"[{part}]" for part in loc[1:] if isinstance(part, int))
    name = f"{field}{indexes}" if field else ""
    rules = _rules(error.title, field or "", bool(indexes))
    group = _group(detail["type"])
    if detail["type"] == "null":  # an explicit null: say what the field takes
        group = NULL_KINDS.get(rules.get("type", ""), "choice" if "enum" in rules else "text")
    if detail["type"] in ("too_short", "too_long") and isinstance(detail.get("input"), str):
        group = "length"  # a length rule applied after another check on a string
    if field is None or group == "json_object":
        # A rule about the whole body: it was not the object expected.
        return InvalidInput(MESSAGES["json_object"], field=None)
    kind, params = _explain(detail, group, rules)
    params["field_name"] = name
    own = _own_message(error.title, field, (detail["type"], group))
    if own is not None:
        return InvalidInput(own, field, **_all_params(detail, rules, params))
    return InvalidInput(MESSAGES[kind], field, **params)


def _group(error_type: str) -> str:
    """Return the kind of rule a pydantic error type (or one of ours) is about."""
    return KINDS.get(error_type, error_type if error_type in MESSAGES else "invalid")


def _own_message(model_name: str, field: str, kinds: tuple[str, str]) -> str | None:
    """Return the field's own message for this kind of error (a Says in its metadata)."""
    model = MODELS.get(model_name)
    if model is None:
        return None
    for name, info in model.model_fields.items():
        if field in (name, info.alias):
            for says in info.metadata:
                if isinstance(says, Says) and (not says.kinds or set(says.kinds) & set(kinds)):
                    return says.template
    return None


def _all_params(
    detail: ErrorDetails, rules: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """Every parameter a field's own message may use (unused ones are ignored)."""
    value = detail.get("input")
    ctx = detail.get("ctx") or {}
    limit = ctx.get("max_length", rules.get("maxLength", rules.get("maxItems", 0)))
    return {
        "low": 0,
        "high": 0,
        "length": len(value.strip() if isinstance(value, str) else value)
        if isinstance(value, str | list)
        else 0,
        "example": "https://api.openai.com/v1",
        **params,
        "limit": limit,
        "number": repr(value),
    }


def _explain(detail: ErrorDetails, kind: str, rules: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Pick the generic message for one error and its parameters."""
    ctx = detail.get("ctx") or {}
    low, high = rules.get("minimum"), rules.get("maximum")
    if kind == "length":
        shortest, longest = rules.get("minLength"), rules.get("maxLength")
        value = detail.get("input")
        length = len(value.strip() if isinstance(value, str) else "")
        if shortest is not None and longest is not None:
            return "text_range", {"low": shortest, "high": longest, "length": length}
        if longest is not None:
            return "text_max", {"limit": longest}
        return "text_min", {"limit": shortest or 0}
    if kind in ("int", "number"):
        if rules.get("type") == "integer":
            kind = "int"
        if low is not None and high is not None:
            bounds = {"low": _number(low), "high": _number(high)}
            return ("int_range" if kind == "int" else "number_range"), bounds
        return kind, {}
    if kind == "choice":
        choices = rules.get("enum") or []
        return "choice", {"choices": ", ".join(str(c) for c in choices)}
    if kind == "pattern":
        return "pattern", {"pattern": ctx.get("pattern", rules.get("pattern", ""))}
    if kind == "list_max":
        return "list_max", {"limit": ctx.get("max_length", rules.get("maxItems", 0))}
    if kind == "http_url":
        return "http_url", {"example": "https://api.openai.com/v1"}
    if kind == "when":
        return "when", {"low": FIRST_YEAR, "high": LAST_YEAR}
    return kind, {}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


@functools.lru_cache(maxsize=512)
def _rules(model_name: str, field: str, item: bool) -> dict[str, Any]:
    """Return the rules of one field (or of its list's items) from its model's JSON schema."""
    model = MODELS.get(model_name)
    if model is None or not field:
        return {}
    schema = model.model_json_schema()
    found: dict[str, Any] = schema.get("properties", {}).get(field, {})
    if item:
        found = found.get("items", {})
    for branch in found.get("anyOf", []):  # an optional value: the branch that is not null
        if branch.get("type") != "null":
            found = {**found, **branch}
    return found
