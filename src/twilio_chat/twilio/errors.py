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


# What a person can do about a failed message, by its error code.
FIX_HINTS: dict[int, str] = {
    20429: N_("Try again in a moment."),
    21610: N_("They texted STOP: nothing can be sent until they text START."),
    21614: N_("This number cannot get texts; call it instead."),
    21635: N_("This number cannot get texts; call it instead."),
    30003: N_("Try again later, when the phone may be on."),
    30004: N_("They or their carrier block your texts; reach them another way."),
    30005: N_("Check the number: it may not exist."),
    30006: N_("This number cannot get texts; call it instead."),
    30007: N_("Rephrase it: carriers filter link shorteners and texts that look like spam."),
    30008: N_("Try again; if it fails again, ask Twilio's support."),
    30034: N_("Register the number for A2P 10DLC in the Twilio console."),
}


def fix_hint(code: int | None) -> str | None:
    """Return what a person can do about a message that failed with this code, if known."""
    return FIX_HINTS.get(code) if code is not None else None


def describe_error(code: int | None, fallback: str = "") -> str:
    """Return a readable text for a Twilio error code."""
    if code is None:
        return fallback or "unknown error"
    return ERROR_TEXTS.get(code, fallback or f"Twilio error {code}")
