"""SMS encoding and segment counting (GSM-7 or UCS-2)."""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = "^{}\\[~]|€\f"
_BASIC = frozenset(GSM7_BASIC)
_EXTENDED = frozenset(GSM7_EXTENDED)


@dataclass(frozen=True)
class SegmentInfo:
    """How a body is encoded and how many SMS segments it takes."""

    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int
    per_segment: int
    first_non_gsm: str | None


def count_segments(body: str) -> SegmentInfo:
    """Count the SMS segments `body` needs, as Twilio does."""
    non_gsm = next((ch for ch in body if ch not in _BASIC and ch not in _EXTENDED), None)
    if non_gsm is None:
        units = sum(2 if ch in _EXTENDED else 1 for ch in body)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    if units <= single:
        return SegmentInfo(encoding, units, 1 if units else 0, single, non_gsm)
    return SegmentInfo(encoding, units, -(-units // multi), multi, non_gsm)
