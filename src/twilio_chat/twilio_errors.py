"""Readable texts for the Twilio error codes users meet."""

from __future__ import annotations

ERROR_TEXTS: dict[int, str] = {
    20003: "Twilio rejected the account credentials",
    20404: "Twilio does not know this resource",
    20429: "Twilio is rate-limiting requests; try again shortly",
    21211: "the 'To' number is not a valid phone number",
    21408: "sending to this region is not enabled on the account",
    21602: "a message body, media or content template is required",
    21606: "the 'From' number is not a number of this account",
    21608: "a trial account can only send to verified numbers",
    21610: "the recipient has opted out (replied STOP)",
    21614: "the 'To' number is not a mobile number",
    21617: "the message body is longer than 1600 characters",
    21635: "the 'To' number is a landline",
    30003: "unreachable: the handset is off or out of coverage",
    30004: "blocked by the recipient or their carrier",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "filtered by the carrier",
    30008: "unknown delivery error",
    30034: "sender is an unregistered 10DLC number",
}


def describe_error(code: int | None, fallback: str = "") -> str:
    """Return a readable text for a Twilio error code."""
    if code is None:
        return fallback or "unknown error"
    return ERROR_TEXTS.get(code, fallback or f"Twilio error {code}")
