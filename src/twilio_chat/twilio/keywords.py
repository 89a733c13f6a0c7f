"""Twilio's standard opt-out, opt-in and help keywords (single words, matched case-insensitively).

Twilio answers these itself and keeps its own opt-out list from them; the app and the sandbox
(which imitates Twilio) both read them from here.
"""

from __future__ import annotations

OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
