"""controlplane.api.table: human durations and the meta.k8s.io/v1 Table.

Durations are checked against Kubernetes' ``duration.HumanDuration`` at and around each of
its boundaries; tables for their shape, the NAME column rule and what rows carry.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from controlplane.api.table import (
    AGE,
    Column,
    age,
    default_columns,
    human_duration,
    since,
    to_table,
)

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"),
    (-1.5, "0s"),
    (0, "0s"),
    (5, "5s"),
    (119, "119s"),
    (120, "2m"),
    (182, "3m2s"),
    (599, "9m59s"),
    (600, "10m"),
    (179 * 60 + 59, "179m"),
    (3 * 3600, "3h"),
    (4 * 3600 + 30 * 60, "4h30m"),
    (7 * 3600 + 59 * 60, "7h59m"),
    (8 * 3600 + 30 * 60, "8h"),
    (47 * 3600, "47h"),
    (2 * 86400 + 3 * 3600, "2d3h"),
    (7 * 86400, "7d"),
    (8 * 86400 + 5 * 3600, "8d"),
    (45 * 86400, "45d"),
    (729 * 86400, "729d"),
    (730 * 86400, "2y"),
    (3 * 365 * 86400 + 10 * 86400, "3y10d"),
    (8 * 365 * 86400 + 40 * 86400, "8y"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(timedelta(seconds=seconds)) == text


def test_since_and_age() -> None:
    assert since("2024-06-01T11:55:00Z", NOW) == "5m"
    assert since(None, NOW) == since("garbage", NOW) == "<unknown>"
    assert since("2024-06-01T11:59:58+00:00", NOW.replace(tzinfo=None)) == "2s"
    assert age({"metadata": {"creationTimestamp": "2024-05-30T09:00:00Z"}}, NOW) == "2d3h"
    assert age({}, NOW) == "<unknown>"


POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web", "namespace": "d", "creationTimestamp": "2024-06-01T11:59:30Z"},
       "spec": {"nodeName": "n1"}}
NODE_COLUMN = Column("Node", lambda o, _now: o["spec"]["nodeName"], priority=1,
                     description="where")


@pytest.mark.parametrize("include, row_object", [
    ("None", None),
    ("Metadata", {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                  "metadata": POD["metadata"]}),
    ("Object", POD),
])
def test_to_table(include: str, row_object: dict | None) -> None:
    table = to_table([AGE, NODE_COLUMN], [POD], include_object=include,
                     list_meta={"resourceVersion": "42"}, now=NOW)
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42"}
    assert [(c["name"], c["type"], c["format"], c["priority"])
            for c in table["columnDefinitions"]] == [
        ("Name", "string", "name", 0), ("Age", "string", "", 0), ("Node", "string", "", 1)]
    assert all(set(c) == {"name", "type", "format", "description", "priority"}
               for c in table["columnDefinitions"])
    assert table["rows"] == [{"cells": ["web", "30s", "n1"], "object": row_object}]


def test_name_column_is_not_added_twice() -> None:
    last_name = Column("Name", lambda o, _now: o["metadata"]["name"], priority=1, format="name")
    table = to_table([NODE_COLUMN, last_name], [POD], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Node", "Name"]
    assert table["rows"][0]["cells"] == ["n1", "web"]


def test_empty_list_and_bad_include() -> None:
    table = to_table([AGE], [], now=NOW)
    assert table["rows"] == [] and table["metadata"] == {}
    with pytest.raises(ValueError):
        to_table([AGE], [POD], include_object="Everything", now=NOW)


def test_default_columns() -> None:
    table = to_table(default_columns(), [POD, {"metadata": {"name": "new"}}], now=NOW)
    assert [(c["name"], c["type"]) for c in table["columnDefinitions"]] == [
        ("Name", "string"), ("Created At", "date")]
    assert [r["cells"] for r in table["rows"]] == [
        ["web", "2024-06-01T11:59:30Z"], ["new", "0001-01-01T00:00:00Z"]]
