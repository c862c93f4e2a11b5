"""Three controllers give the same answers, and a write through one is read at once anywhere."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from controlplane.localcluster import ControlPlane

pytestmark = pytest.mark.slow


def call(cp: ControlPlane, i: int, method: str, path: str, body: Any = None,
         context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        cp.url(i) + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context or cp.ssl_context(),
                                    timeout=15) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_write_anywhere_read_everywhere(control_plane: ControlPlane) -> None:
    cp = control_plane
    context = cp.ssl_context()
    ns = f"ha-{uuid.uuid4().hex[:6]}"
    status, _ = call(cp, 0, "POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, context)
    assert status == 201
    path = f"/api/v1/namespaces/{ns}/configmaps"
    for round_ in range(30):
        writer = round_ % cp.size
        status, created = call(cp, writer, "POST", path, {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{round_}"},
            "data": {"round": str(round_)}}, context)
        assert status == 201, created
        for reader in range(cp.size):
            status, got = call(cp, reader, "GET", f"{path}/c{round_}", context=context)
            assert status == 200, (writer, reader, got)
            assert got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        got["data"]["round"] = "updated"
        status, updated = call(cp, (writer + 1) % cp.size, "PUT", f"{path}/c{round_}", got,
                               context)
        assert status == 200, updated
        status, seen = call(cp, (writer + 2) % cp.size, "GET", f"{path}/c{round_}",
                            context=context)
        assert seen["data"]["round"] == "updated"
    lists = [call(cp, i, "GET", path, context=context)[1] for i in range(cp.size)]
    for listed in lists:
        listed["metadata"].pop("resourceVersion")
    assert lists[0] == lists[1] == lists[2] and len(lists[0]["items"]) == 30
    stale = dict(created, data={"round": "stale"})
    status, body = call(cp, 2, "PUT", f"{path}/c29", stale, context)
    assert status == 409 and body["reason"] == "Conflict"


def test_watch_on_one_controller_sees_writes_through_another(
        control_plane: ControlPlane) -> None:
    cp = control_plane
    context = cp.ssl_context()
    ns = f"hw-{uuid.uuid4().hex[:6]}"
    call(cp, 0, "POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, context)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    _, listed = call(cp, 2, "GET", path, context=context)
    start = listed["metadata"]["resourceVersion"]
    request = urllib.request.Request(
        f"{cp.url(2)}{path}?watch=1&resourceVersion={start}&timeoutSeconds=20")
    with urllib.request.urlopen(request, context=context, timeout=30) as stream:
        for i in range(3):
            status, _ = call(cp, i % 2, "POST", path, {
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"w{i}"}},
                context)
            assert status == 201
        events = [json.loads(stream.readline()) for _ in range(3)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w0"), ("ADDED", "w1"), ("ADDED", "w2")]
