"""Kubernetes' Time and MicroTime: written in UTC with a Z, read back to the same moment;
anything else reads as None."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from controlplane.client.timestamps import format_micro_time, format_time, parse_time

MOMENT = 1_796_000_000.123456


def test_round_trips() -> None:
    assert format_micro_time(MOMENT) == "2026-11-30T00:53:20.123456Z"
    assert format_time(MOMENT) == "2026-11-30T00:53:20Z"
    assert parse_time(format_micro_time(MOMENT)) == pytest.approx(MOMENT, abs=1e-6)
    assert parse_time(format_time(MOMENT)) == int(MOMENT)
    shifted = datetime.fromtimestamp(MOMENT, timezone(timedelta(hours=2)))
    assert format_micro_time(shifted) == format_micro_time(MOMENT)


@pytest.mark.parametrize("text", [None, "", 17, "yesterday", "2026-11-30T00:53:20"])
def test_unreadable_is_none(text: object) -> None:
    assert parse_time(text) is None


def test_other_zones() -> None:
    assert parse_time("2026-11-30T02:53:20+02:00") == int(MOMENT)
    assert parse_time(datetime.fromtimestamp(MOMENT, UTC).isoformat()) == \
        pytest.approx(MOMENT, abs=1e-6)
