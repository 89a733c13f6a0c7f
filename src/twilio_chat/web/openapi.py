"""The OpenAPI 3.1 description of the REST API, served at /api/openapi.json.

A test checks that it names exactly the routes the app serves, with their methods.
"""

from __future__ import annotations

from typing import Any

from twilio_chat.inbox.conversations import MAX_SEARCH
from twilio_chat.messaging import STATUS_RANK
from twilio_chat.settings import Settings

ERROR = {"$ref": "#/components/responses/Error"}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _p(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def _ok(ref: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


CURSOR = _q(
    "before", {"type": "integer", "minimum": 1}, "Cursor: `next_cursor` of the previous page"
)


def build_spec(settings: Settings) -> dict[str, Any]:
    """Return the OpenAPI document for this app's API."""
    paths: dict[str, Any] = {
        "/api/send-message": {
            "post": {
                "summary": "Send an SMS or MMS",
                "operationId": "sendMessage",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/SendRequest"}}
                    },
                },
                "responses": {
                    "201": _ok("#/components/schemas/MessageEnvelope", "Sent to Twilio"),
                    "400": ERROR,
                    "401": ERROR,
                    "409": ERROR,
                    "502": ERROR,
                },
            }
        },
        "/api/messages": {
            "get": {
                "summary": "List stored messages, newest first",
                "operationId": "listMessages",
                "parameters": [
                    _q(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                        "Page size",
                    ),
                    _q(
                        "direction",
                        {"type": "string", "enum": ["inbound", "outbound"]},
                        "Only one direction",
                    ),
                    _q(
                        "status",
                        {"type": "string", "enum": sorted(STATUS_RANK)},
                        "Only messages with this delivery status",
                    ),
                    _q(
                        "number",
                        {"type": "string"},
                        "Only one conversation: the other party's number, E.164",
                    ),
                    _q(
                        "text",
                        {"type": "string", "maxLength": MAX_SEARCH},
                        "Only bodies holding this text, in any case",
                    ),
                    CURSOR,
                ],
                "responses": {
                    "200": _ok("#/components/schemas/MessagePage"),
                    "400": ERROR,
                    "401": ERROR,
                },
            }
        },
        "/api/stats": {
            "get": {
                "summary": "The dashboard's statistics",
                "operationId": "getStats",
                "responses": {
                    "200": _ok("#/components/schemas/StatsEnvelope"),
                    "401": ERROR,
                },
            }
        },
        "/api/messages/remote": {
            "get": {
                "summary": "List messages as Twilio has them, newest first",
                "operationId": "listRemoteMessages",
                "parameters": [
                    _q("to", {"type": "string"}, "E.164 recipient"),
                    _q("from", {"type": "string"}, "E.164 sender"),
                    _q("date_sent", {"type": "string", "format": "date"}, "Sent on this UTC day"),
                    _q(
                        "date_sent_before",
                        {"type": "string"},
                        "Sent on or before (date or ISO time)",
                    ),
                    _q(
                        "date_sent_after", {"type": "string"}, "Sent on or after (date or ISO time)"
                    ),
                    _q(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                        "How many",
                    ),
                ],
                "responses": {
                    "200": _ok("#/components/schemas/RemoteMessageList"),
                    "400": ERROR,
                    "401": ERROR,
                    "502": ERROR,
                },
            }
        },
        "/api/messages/{sid}": {
            "get": {
                "summary": "One message with its status events (or Twilio's record of it)",
                "operationId": "getMessage",
                "parameters": [_p("sid", "Twilio message SID")],
                "responses": {
                    "200": _ok("#/components/schemas/MessageDetail"),
                    "401": ERROR,
                    "404": ERROR,
                    "502": ERROR,
                },
            },
            "delete": {
                "summary": "Delete a message at Twilio and here",
                "operationId": "deleteMessage",
                "parameters": [_p("sid", "Twilio message SID")],
                "responses": {
                    "200": {"description": "Deleted"},
                    "401": ERROR,
                    "403": ERROR,
                    "404": ERROR,
                    "502": ERROR,
                },
            },
        },
        "/api/messages/{sid}/redact": {
            "post": {
                "summary": "Erase a message's body at Twilio and here",
                "operationId": "redactMessage",
                "parameters": [_p("sid", "Twilio message SID")],
                "responses": {
                    "200": {"description": "Redacted"},
                    "401": ERROR,
                    "403": ERROR,
                    "404": ERROR,
                    "502": ERROR,
                },
            }
        },
        "/api/conversations": {
            "get": {
                "summary": "List conversations, latest activity first",
                "operationId": "listConversations",
                "parameters": [
                    _q(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                        "Page size",
                    ),
                    CURSOR,
                ],
                "responses": {
                    "200": _ok("#/components/schemas/ConversationPage"),
                    "400": ERROR,
                    "401": ERROR,
                },
            }
        },
        "/api/conversations/{participant}": {
            "get": {
                "summary": "One conversation's latest messages, oldest first",
                "operationId": "getConversation",
                "parameters": [
                    _p("participant", "The other party's E.164 number"),
                    _q(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
                        "How many",
                    ),
                    CURSOR,
                ],
                "responses": {
                    "200": _ok("#/components/schemas/Thread"),
                    "400": ERROR,
                    "401": ERROR,
                    "404": ERROR,
                },
            }
        },
        "/api/conversations/{participant}/pause": {
            "post": {
                "summary": "Pause automatic replies in a conversation",
                "operationId": "pauseConversation",
                "parameters": [_p("participant", "The other party's E.164 number")],
                "requestBody": _json_body(
                    {"type": "object", "properties": {"minutes": {"type": "integer", "minimum": 1}}}
                ),
                "responses": {"200": {"description": "Paused"}, "400": ERROR, "401": ERROR},
            }
        },
        "/api/conversations/{participant}/resume": {
            "post": {
                "summary": "Resume automatic replies in a conversation",
                "operationId": "resumeConversation",
                "parameters": [_p("participant", "The other party's E.164 number")],
                "responses": {"200": {"description": "Resumed"}, "400": ERROR, "401": ERROR},
            }
        },
        "/api/conversations/{participant}/contact": {
            "post": {
                "summary": "Name the contact of a conversation (empty name: unname)",
                "operationId": "nameContact",
                "parameters": [_p("participant", "The other party's E.164 number")],
                "requestBody": _json_body(
                    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 120}}}
                ),
                "responses": {"200": {"description": "Saved"}, "400": ERROR, "401": ERROR},
            }
        },
        "/api/events": {
            "get": {
                "summary": "Live updates: wait for new or changed messages after a cursor",
                "operationId": "events",
                "parameters": [
                    _q("cursor", {"type": "string"}, "From the previous answer; omit to start"),
                    _q(
                        "timeout",
                        {"type": "integer", "minimum": 0, "maximum": 30},
                        "Seconds to wait",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "Changed messages and the next cursor; none and the same"
                        " cursor at the timeout, or at once when the server stops"
                    },
                    "400": ERROR,
                    "401": ERROR,
                },
            }
        },
        "/api/auto-reply/config": {
            "get": {
                "summary": "The auto-reply config",
                "operationId": "getAutoReply",
                "responses": {"200": _ok("#/components/schemas/AutoReplyConfig"), "401": ERROR},
            },
            "post": {
                "summary": "Save the auto-reply config (enabling it switches AI off)",
                "operationId": "saveAutoReply",
                "requestBody": _json_body({"$ref": "#/components/schemas/AutoReplyInput"}),
                "responses": {
                    "200": _ok("#/components/schemas/AutoReplyConfig"),
                    "400": ERROR,
                    "401": ERROR,
                    "403": ERROR,
                },
            },
        },
        "/api/ai/config": {
            "get": {
                "summary": "The AI config (the key only as a masked hint)",
                "operationId": "getAIConfig",
                "responses": {"200": _ok("#/components/schemas/AIConfig"), "401": ERROR},
            },
            "post": {
                "summary": "Save the AI config (enabling it switches the auto-reply off)",
                "operationId": "saveAIConfig",
                "requestBody": _json_body({"$ref": "#/components/schemas/AIConfigInput"}),
                "responses": {
                    "200": _ok("#/components/schemas/AIConfig"),
                    "400": ERROR,
                    "401": ERROR,
                    "403": ERROR,
                },
            },
        },
        "/api/ai/test": {
            "post": {
                "summary": "Ask the model with the saved config; sends nothing",
                "operationId": "testAI",
                "requestBody": _json_body(
                    {"type": "object", "properties": {"message": {"type": "string"}}}, False
                ),
                "responses": {
                    "200": {"description": "The model's answer"},
                    "400": ERROR,
                    "401": ERROR,
                    "502": ERROR,
                },
            }
        },
        "/api/audit": {
            "get": {
                "summary": "The audit log, newest first (admins; token scope admin)",
                "operationId": "auditLog",
                "parameters": [
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "How many"),
                    CURSOR,
                ],
                "responses": {"200": {"description": "Events"}, "401": ERROR, "403": ERROR},
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "OpenAPI document"}},
            }
        },
    }
    if settings.sandbox:
        paths["/api/sandbox/simulate"] = {
            "post": {
                "summary": "Text the app from the sandbox's simulated handset (sandbox mode only)",
                "operationId": "simulateInbound",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SimulateRequest"}
                        }
                    },
                },
                "responses": {
                    "201": {"description": "Webhook delivered"},
                    "400": ERROR,
                    "401": ERROR,
                },
            }
        }
    message_props = {
        "id": {"type": "integer"},
        "sid": {"type": ["string", "null"]},
        "direction": {"type": "string", "enum": ["inbound", "outbound"]},
        "from": {"type": ["string", "null"]},
        "to": {"type": ["string", "null"]},
        "participant": {"type": "string"},
        "our_number": {"type": ["string", "null"]},
        "messaging_service_sid": {"type": ["string", "null"]},
        "body": {"type": "string"},
        "media": {"type": "array", "items": {"type": "object"}},
        "status": {"type": "string"},
        "error_code": {"type": ["integer", "null"]},
        "error_message": {"type": ["string", "null"]},
        "num_segments": {"type": "integer"},
        "source": {"type": ["string", "null"]},
        "reply_to_sid": {"type": ["string", "null"]},
        "redacted": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "sent_at": {"type": ["string", "null"], "format": "date-time"},
    }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "field"],
                    "properties": {
                        "code": {
                            "type": ["string", "integer"],
                            "description": "Ours, or Twilio's code on 502",
                        },
                        "message": {"type": "string"},
                        "field": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "SendRequest": {
            "type": "object",
            "required": ["to"],
            "properties": {
                "to": {"type": "string", "description": "E.164 number"},
                "body": {"type": "string", "maxLength": 1600},
                "media_urls": {
                    "type": "array",
                    "items": {"type": "string", "format": "uri"},
                    "maxItems": 10,
                },
                "content_sid": {"type": "string", "description": "Content template SID (HX…)"},
                "messaging_service_sid": {
                    "type": "string",
                    "description": "Send through this Messaging Service",
                },
                "use_messaging_service": {
                    "type": "boolean",
                    "description": "Send through TWILIO_MESSAGING_SERVICE_SID",
                },
            },
        },
        "SimulateRequest": {
            "type": "object",
            "required": ["from"],
            "properties": {
                "from": {"type": "string"},
                "body": {"type": "string"},
                "media_urls": {"type": "array", "items": {"type": "string"}},
                "to": {"type": "string"},
            },
        },
        "AutoReplyInput": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "message": {"type": "string", "minLength": 1, "maxLength": 640},
            },
        },
        "AutoReplyConfig": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "message": {"type": "string"},
                "max_length": {"type": "integer"},
                "ai_enabled": {"type": "boolean"},
                "active_mode": {"type": "string", "enum": ["ai", "auto_reply", "engine"]},
            },
        },
        "AIConfigInput": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "api_key": {"type": ["string", "null"], "description": "Write-only"},
                "model": {"type": "string"},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "system_prompt": {"type": "string"},
                "target_number": {"type": ["string", "null"]},
                "history_limit": {"type": "integer", "minimum": 1, "maximum": 200},
                "max_segments": {"type": "integer", "minimum": 1, "maximum": 10},
                "base_url": {"type": ["string", "null"]},
                "fallback_text": {"type": ["string", "null"]},
            },
        },
        "AIConfig": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "api_key_set": {"type": "boolean"},
                "api_key_hint": {"type": ["string", "null"]},
                "model": {"type": "string"},
                "temperature": {"type": "number"},
                "system_prompt": {"type": "string"},
                "target_number": {"type": ["string", "null"]},
                "history_limit": {"type": "integer"},
                "max_segments": {"type": "integer"},
                "base_url": {"type": ["string", "null"]},
                "fallback_text": {"type": ["string", "null"]},
                "sources": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "string",
                        "enum": ["environment", "default", "stored"],
                    },
                },
                "auto_reply_enabled": {"type": "boolean"},
                "active_mode": {"type": "string"},
            },
        },
        "Message": {"type": "object", "properties": message_props},
        "MessageEnvelope": {
            "type": "object",
            "properties": {"message": {"$ref": "#/components/schemas/Message"}},
        },
        "MessageDetail": {
            "type": "object",
            "properties": {"message": {"type": "object"}, "stored": {"type": "boolean"}},
        },
        "MessagePage": {
            "type": "object",
            "properties": {
                "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
                "next_cursor": {"type": ["integer", "null"]},
            },
        },
        "StatsEnvelope": {
            "type": "object",
            "properties": {
                "stats": {
                    "type": "object",
                    "properties": {
                        "inbound_today": {"type": "integer", "description": "Since midnight UTC"},
                        "outbound_today": {"type": "integer", "description": "Since midnight UTC"},
                        "inbound_7d": {"type": "integer"},
                        "outbound_7d": {"type": "integer"},
                        "delivered_7d": {"type": "integer", "description": "Delivered or read"},
                        "failed_7d": {"type": "integer", "description": "Undelivered or failed"},
                        "delivery_rate": {
                            "type": ["number", "null"],
                            "description": "Delivered over settled outbound texts, 7 days",
                        },
                        "opted_out": {"type": "integer"},
                        "jobs_waiting": {"type": "integer"},
                    },
                }
            },
        },
        "RemoteMessageList": {
            "type": "object",
            "properties": {"messages": {"type": "array", "items": {"type": "object"}}},
        },
        "Conversation": {
            "type": "object",
            "properties": {
                "participant": {"type": "string"},
                "name": {"type": ["string", "null"]},
                "unread_count": {"type": "integer"},
                "opted_out": {"type": "boolean"},
                "replies_paused": {"type": "boolean"},
                "replies_paused_until": {"type": ["string", "null"]},
                "last_message": {
                    "oneOf": [{"$ref": "#/components/schemas/Message"}, {"type": "null"}]
                },
                "last_message_at": {"type": ["string", "null"]},
            },
        },
        "ConversationPage": {
            "type": "object",
            "properties": {
                "conversations": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Conversation"},
                },
                "next_cursor": {"type": ["integer", "null"]},
            },
        },
        "Thread": {
            "type": "object",
            "properties": {
                "conversation": {"$ref": "#/components/schemas/Conversation"},
                "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
                "next_cursor": {"type": ["integer", "null"]},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Twilio Chat API", "version": "1"},
        "servers": [{"url": settings.base_url}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `twilio-chat create-token`",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "session",
                    "description": (
                        "Panel login; state-changing calls also need the X-CSRF-Token header"
                    ),
                },
            },
            "responses": {
                "Error": {
                    "description": "An error naming the field at fault",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
            "schemas": schemas,
        },
    }
