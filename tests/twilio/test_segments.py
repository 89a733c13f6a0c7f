"""SMS segment counting: GSM-7 160/153, extended characters, UCS-2 70/67."""

from __future__ import annotations

import pytest

from twilio_chat.twilio.segments import count_segments


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4), (1600, 11)],
)
def test_gsm7_is_160_in_one_segment_and_153_per_segment_when_split(
    length: int, segments: int
) -> None:
    info = count_segments("a" * length)
    assert info.encoding == "GSM-7"
    assert info.units == length
    assert info.segments == segments
    assert info.per_segment == (160 if segments == 1 else 153)
    assert info.first_non_gsm is None


def test_gsm7_basic_accented_letters_stay_gsm7() -> None:
    info = count_segments("Hé! £5 @ the café, ¿qué? Ñoño Ä Ö Ü ß")
    assert info.encoding == "GSM-7"
    assert info.first_non_gsm is None


@pytest.mark.parametrize("char", list("^{}\\[~]|€"))
def test_extended_characters_count_double(char: str) -> None:
    info = count_segments(char)
    assert info.encoding == "GSM-7"
    assert info.units == 2


def test_extended_characters_push_a_message_over_one_segment() -> None:
    assert count_segments("€" * 80).segments == 1  # 160 septets
    info = count_segments("€" * 80 + "a")  # 161 septets
    assert info.units == 161
    assert info.segments == 2
    assert count_segments("a" * 159 + "[").segments == 2


@pytest.mark.parametrize("odd", ["😀", "ł", "你", "ç"])
def test_one_non_gsm_character_makes_the_whole_message_ucs2(odd: str) -> None:
    info = count_segments("a" * 60 + odd)
    assert info.encoding == "UCS-2"
    assert info.first_non_gsm == odd
    assert info.per_segment == 70
    assert info.segments == 1


@pytest.mark.parametrize(
    ("length", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_ucs2_is_70_in_one_segment_and_67_per_segment_when_split(
    length: int, segments: int
) -> None:
    info = count_segments("ł" * length)
    assert info.encoding == "UCS-2"
    assert info.units == length
    assert info.segments == segments
    assert info.per_segment == (70 if segments == 1 else 67)


def test_emoji_takes_two_ucs2_units() -> None:
    assert count_segments("😀" * 35).segments == 1  # 70 units
    info = count_segments("😀" * 35 + "a")
    assert info.units == 71
    assert info.segments == 2


def test_a_single_emoji_turns_a_long_gsm_text_into_more_segments() -> None:
    text = "a" * 150
    assert count_segments(text).segments == 1
    assert count_segments(text + "😀").segments == 3  # 152 UTF-16 units / 67


def test_empty_body_has_no_segment() -> None:
    info = count_segments("")
    assert info.segments == 0
    assert info.units == 0
    assert info.encoding == "GSM-7"
