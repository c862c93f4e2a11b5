"""Kubernetes' two wire forms of a moment, in UTC with a "Z": ``Time`` (RFC 3339 to the
second: creationTimestamp, lastTimestamp, a taint's timeAdded) and ``MicroTime`` (to the
microsecond: a Lease's renewTime, an Event's eventTime, the Endpoints' trigger time).
One place for them, so every controller and the agent write and read the same text.
"""

from __future__ import annotations

from datetime import UTC, datetime

TIME = "%Y-%m-%dT%H:%M:%SZ"
MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def _utc(moment: float | datetime) -> datetime:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC)
    return datetime.fromtimestamp(moment, UTC)


def format_time(moment: float | datetime) -> str:
    """``Time``: seconds since the epoch (or an aware datetime) to the second."""
    return _utc(moment).strftime(TIME)


def format_micro_time(moment: float | datetime) -> str:
    """``MicroTime``: seconds since the epoch (or an aware datetime) to the microsecond."""
    return _utc(moment).strftime(MICRO_TIME)


def parse_time(text: object) -> float | None:
    """Seconds since the epoch of a ``Time`` or ``MicroTime`` (or any RFC 3339 text with a
    zone); None for anything else, never an exception: it comes from the wire."""
    if not isinstance(text, str) or not text:
        return None
    for layout in (MICRO_TIME, TIME):
        try:
            return datetime.strptime(text, layout).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None
