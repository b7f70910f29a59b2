"""RFC 3339 timestamps in query strings: parsed to the form the store compares.

Only a full date-time with an offset is taken (``Z`` or ``+hh:mm``): a time
without one names no instant, and a bare number is not a time. What RFC 3339
allows is accepted, lower-case ``t`` and ``z``, any number of fraction digits
and the leap second ``:60``, so that every string the schema's ``date-time``
admits is answered.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated

import msgspec

from laneway.api.exceptions import ApiError
from laneway.models import format_timestamp

_RFC3339 = (
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
_PATTERN = re.compile(_RFC3339)

Timestamp = Annotated[
    str,
    msgspec.Meta(
        pattern=_RFC3339,
        description="RFC 3339 date-time with an offset, e.g. 2026-01-31T09:30:00Z",
        extra_json_schema={"format": "date-time"},
    ),
]


def to_stored(name: str, text: str) -> str:
    """``text`` (already matched by :data:`Timestamp`) as a stored timestamp; a 422
    naming ``name`` if it is no real date or time (February 30th, hour 25)."""
    match = _PATTERN.match(text)
    if match is None:
        raise ApiError(422, f"{name}: not an RFC 3339 date-time with an offset: {text[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_h, off_m = match.group(7, 9, 10, 11)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if second == 60:
        # A leap second is the last instant of its minute, as far as order goes.
        second, micro = 59, 999_999
    try:
        if int(off_m or 0) > 59:
            raise ValueError("offset minutes must be in 0..59")
        offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0))
        zone = UTC if sign is None else timezone(-offset if sign == "-" else offset)
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=zone)
    except ValueError as exc:
        raise ApiError(422, f"{name}: {exc}: {text[:40]!r}") from None
    try:
        return format_timestamp(moment)
    except OverflowError:
        # In UTC it falls before the year 1 or after 9999: before or after every
        # stored time, which the bounds of the range say just as well.
        edge = datetime.min if moment.year == 1 else datetime.max
        return format_timestamp(edge.replace(tzinfo=UTC))
