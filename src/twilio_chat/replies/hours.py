"""Business hours: a weekly schedule in a time zone, and whether a moment falls inside it.

Stored as {"timezone": "Europe/Warsaw", "days": {"mon": {"start": "09:00", "end": "17:00"}}};
a day left out is closed all day. The auto-reply may answer only outside these hours.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from twilio_chat.errors import N_, InvalidInput

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FIELD = "business_hours"
_CLOCK = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")


def _clock(value: Any) -> time | None:
    """Read "HH:MM" (24-hour clock); None when it is not one."""
    if not isinstance(value, str) or not _CLOCK.fullmatch(value):
        return None
    return time(int(value[:2]), int(value[3:]))


def validate(value: Any) -> dict[str, Any] | None:
    """Return a clean schedule (or None for no schedule); raise InvalidInput naming the fault."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(N_("Business hours must be a time zone and a schedule."), FIELD)
    zone = value.get("timezone")
    if not isinstance(zone, str) or zone not in available_timezones():
        raise InvalidInput(
            N_("Choose a time zone such as %(example)s."),
            f"{FIELD}.timezone",
            example="Europe/Warsaw",
        )
    days = value.get("days") or {}
    if not isinstance(days, dict) or set(days) - set(DAYS):
        raise InvalidInput(N_("Business hours must name days as mon to sun."), f"{FIELD}.days")
    clean: dict[str, dict[str, str]] = {}
    for day in DAYS:
        hours = days.get(day)
        if hours is None:
            continue
        start = _clock(hours.get("start")) if isinstance(hours, dict) else None
        end = _clock(hours.get("end")) if isinstance(hours, dict) else None
        if start is None or end is None or start >= end:
            raise InvalidInput(
                N_("Enter opening and closing times like 09:00 and 17:00, opening first."),
                f"{FIELD}.days.{day}",
            )
        clean[day] = {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}
    return {"timezone": zone, "days": clean}


def is_open(schedule: dict[str, Any] | None, at: datetime) -> bool:
    """Tell whether `at` (aware) falls within the schedule's hours, on the clock of its zone."""
    if not schedule:
        return False
    try:
        local = at.astimezone(ZoneInfo(schedule["timezone"]))
    except (KeyError, ZoneInfoNotFoundError):
        return False
    hours = (schedule.get("days") or {}).get(DAYS[local.weekday()])
    if not hours:
        return False
    start, end = _clock(hours.get("start")), _clock(hours.get("end"))
    return start is not None and end is not None and start <= local.time() < end
