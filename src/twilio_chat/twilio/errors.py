"""Readable texts for the Twilio error codes users meet."""

from __future__ import annotations

from twilio_chat.errors import N_

ERROR_TEXTS: dict[int, str] = {
    20003: N_("Twilio rejected the account credentials"),
    20404: N_("Twilio does not know this resource"),
    20429: N_("Twilio is rate-limiting requests; try again shortly"),
    21211: N_("the 'To' number is not a valid phone number"),
    21408: N_("sending to this region is not enabled on the account"),
    21602: N_("a message body, media or content template is required"),
    21606: N_("the 'From' number is not a number of this account"),
    21608: N_("a trial account can only send to verified numbers"),
    21610: N_("the recipient has opted out (replied STOP)"),
    21614: N_("the 'To' number is not a mobile number"),
    21617: N_("the message body is longer than 1600 characters"),
    21635: N_("the 'To' number is a landline"),
    30003: N_("unreachable: the handset is off or out of coverage"),
    30004: N_("blocked by the recipient or their carrier"),
    30005: N_("unknown destination handset"),
    30006: N_("landline or unreachable carrier"),
    30007: N_("filtered by the carrier"),
    30008: N_("unknown delivery error"),
    30034: N_("sender is an unregistered 10DLC number"),
}


def describe_error(code: int | None, fallback: str = "") -> str:
    """Return a readable text for a Twilio error code."""
    if code is None:
        return fallback or "unknown error"
    return ERROR_TEXTS.get(code, fallback or f"Twilio error {code}")
