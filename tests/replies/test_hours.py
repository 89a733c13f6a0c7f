"""Business hours: a weekly schedule read on the clock of its own time zone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from twilio_chat.errors import InvalidInput
from twilio_chat.replies import hours

WARSAW_WEEKDAYS = {
    "timezone": "Europe/Warsaw",
    "days": {d: {"start": "09:00", "end": "17:00"} for d in ("mon", "tue", "wed", "thu", "fri")},
}


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (datetime(2026, 12, 7, 7, 59, tzinfo=UTC), False),  # Monday 08:59 in Warsaw (UTC+1)
        (datetime(2026, 12, 7, 8, 0, tzinfo=UTC), True),  # 09:00: opening
        (datetime(2026, 12, 7, 15, 59, tzinfo=UTC), True),  # 16:59
        (datetime(2026, 12, 7, 16, 0, tzinfo=UTC), False),  # 17:00: closed
        (datetime(2026, 12, 12, 10, 0, tzinfo=UTC), False),  # Saturday
        (datetime(2026, 7, 6, 7, 30, tzinfo=UTC), True),  # Monday 09:30 in summer (UTC+2)
        (datetime(2026, 12, 6, 23, 30, tzinfo=UTC), False),  # Sunday in UTC, Monday 00:30 there
    ],
)
def test_open_is_read_on_the_schedules_own_clock(at: datetime, is_open: bool) -> None:
    assert hours.is_open(WARSAW_WEEKDAYS, at) is is_open


def test_no_schedule_is_never_open() -> None:
    assert hours.is_open(None, datetime(2026, 12, 7, 12, tzinfo=UTC)) is False


def test_validate_keeps_open_days_and_names_the_bad_part() -> None:
    assert hours.validate(WARSAW_WEEKDAYS) == WARSAW_WEEKDAYS
    assert hours.validate(None) is None
    for bad, field in (
        ({"timezone": "Nowhere/City", "days": {}}, "business_hours.timezone"),
        (
            {"timezone": "UTC", "days": {"mon": {"start": "9", "end": "17:00"}}},
            "business_hours.days.mon",
        ),
        (
            {"timezone": "UTC", "days": {"mon": {"start": "18:00", "end": "17:00"}}},
            "business_hours.days.mon",
        ),
        ({"timezone": "UTC", "days": {"someday": {}}}, "business_hours.days"),
        ("9 to 5", "business_hours"),
    ):
        with pytest.raises(InvalidInput) as caught:
            hours.validate(bad)
        assert caught.value.field == field
