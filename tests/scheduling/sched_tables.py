"""Shorthands for the scheduler's YAML tables: compact nodes and pods to Kubernetes dicts, and the
runner that schedules a case and compares what it expects.

A node: ``name``, ``cpu`` (default "4"), ``memory`` ("8Gi"), ``pods`` (110), ``storage``
(ephemeral-storage, none by default), ``labels``, ``taints`` (kubectl's "key=value:Effect"),
``unschedulable``, ``ready`` ("True" by default; "False", "Unknown", or null for no condition),
and ``count`` to make that many nodes named name000, name001, ...

A pod: ``name``, ``namespace``, ``uid``, ``labels``, ``owner`` (a controller uid), ``node``
(spec.nodeName), ``phase``, ``deleting``, ``cpu``/``memory``/``storage`` (one container's
requests), ``host_ports`` (numbers, or "ip:port/PROTOCOL"), and ``spec`` merged over the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controlplane.controllers.scheduling import Decision, build_node_infos, schedule

TESTDATA = Path(__file__).parent / "testdata"
TIE_BREAKS = {"last": lambda names: names[-1]}


def load(name: str) -> list[dict[str, Any]]:
    return yaml.safe_load((TESTDATA / name).read_text())


def _taint(text: str) -> dict[str, str]:
    rest, effect = text.rsplit(":", 1)
    key, _, value = rest.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def make_nodes(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    nodes = []
    for spec in specs:
        count = spec.get("count")
        names = [f"{spec['name']}{i:03d}" for i in range(count)] if count else [spec["name"]]
        nodes += [make_node(name, spec) for name in names]
    return nodes


def make_node(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    allocatable = {"cpu": str(spec.get("cpu", "4")), "memory": str(spec.get("memory", "8Gi")),
                   "pods": str(spec.get("pods", 110))}
    if "storage" in spec:
        allocatable["ephemeral-storage"] = str(spec["storage"])
    ready = spec.get("ready", "True")
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": dict(spec.get("labels") or {})},
            "spec": {"unschedulable": bool(spec.get("unschedulable")),
                     "taints": [_taint(t) for t in spec.get("taints") or ()]},
            "status": {"allocatable": allocatable, "capacity": dict(allocatable),
                       "conditions": conditions}}


def _port(port: int | str) -> dict[str, Any]:
    if isinstance(port, int):
        return {"containerPort": port, "hostPort": port}
    address, _, protocol = str(port).partition("/")
    ip, _, number = address.rpartition(":")
    found: dict[str, Any] = {"containerPort": int(number), "hostPort": int(number)}
    if ip:
        found["hostIP"] = ip
    if protocol:
        found["protocol"] = protocol
    return found


def make_pod(spec: dict[str, Any]) -> dict[str, Any]:
    name = spec.get("name", "pod")
    namespace = spec.get("namespace", "default")
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "uid": spec.get("uid", f"{namespace}-{name}"),
                            "labels": dict(spec.get("labels") or {})}
    if "owner" in spec:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                    "uid": spec["owner"], "controller": True}]
    if spec.get("deleting"):
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    requests = {resource: str(spec[short]) for short, resource in
                (("cpu", "cpu"), ("memory", "memory"), ("storage", "ephemeral-storage"))
                if short in spec}
    container: dict[str, Any] = {"name": "app", "image": "busybox",
                                 "resources": {"requests": requests} if requests else {}}
    if spec.get("host_ports"):
        container["ports"] = [_port(p) for p in spec["host_ports"]]
    pod_spec: dict[str, Any] = {"containers": [container]}
    if "node" in spec:
        pod_spec["nodeName"] = spec["node"]
    pod_spec.update(spec.get("spec") or {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec,
            "status": {"phase": spec.get("phase", "Running" if "node" in spec else "Pending")}}


def run_case(case: dict[str, Any]) -> Decision:
    """Schedule the case's pod on its nodes and existing pods."""
    infos = build_node_infos(make_nodes(case.get("nodes") or []),
                             [make_pod(p) for p in case.get("pods") or ()])
    return schedule(make_pod(case.get("pod") or {}), infos,
                    tie_break=TIE_BREAKS.get(case.get("tie_break", "")),
                    percentage_of_nodes_to_score=case.get("percentage", 0),
                    start_index=case.get("start_index", 0))


def check_case(case: dict[str, Any]) -> None:
    """Assert every expectation the case states about its Decision."""
    decision = run_case(case)
    expect = case["expect"]
    got = {"node": decision.node, "reasons": decision.reasons, "message": decision.message,
           "scores": decision.scores, "scored": sorted(decision.scores),
           "scored_count": len(decision.scores), "next_start_index": decision.next_start_index}
    for key, wanted in expect.items():
        assert got[key] == wanted, f"{case['name']}: {key} is {got[key]!r}, expected {wanted!r}"
