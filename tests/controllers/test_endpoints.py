"""The endpoints and endpointslice controllers: the pure packing as tables, then both loops
against an in-process API server (readiness flips, Service deletion)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from ctlharness import eventually, running

from controlplane.client import (
    ENDPOINTS,
    ENDPOINTSLICES,
    PODS,
    SERVICES,
    ApiClient,
    NotFound,
)
from controlplane.controllers.endpoints import (
    TRIGGER_TIME_ANNOTATION,
    EndpointsController,
    desired_endpoints,
    find_port,
)
from controlplane.controllers.endpointslice import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    EndpointSliceController,
    desired_slices,
)

Obj = dict[str, Any]
READY = [{"type": "Ready", "status": "True"}]
NOT_READY = [{"type": "Ready", "status": "False"}]


def service(ports: list[Obj] | None = None, *, selector: Obj | None = None,
            publish: bool = False, headless: bool = False) -> Obj:
    spec: Obj = {"selector": {"app": "web"} if selector is None else selector,
                 "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]
                 if ports is None else ports}
    if publish:
        spec["publishNotReadyAddresses"] = True
    if headless:
        spec["clusterIP"] = "None"
    return {"metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"}, "spec": spec}


def pod(name: str, ip: str = "", *, ready: bool = True, terminating: bool = False,
        phase: str = "Running", ports: list[Obj] | None = None, node: str = "n1") -> Obj:
    meta: Obj = {"name": name, "namespace": "default", "uid": f"uid-{name}",
                 "labels": {"app": "web"}}
    if terminating:
        meta["deletionTimestamp"] = "2024-06-01T12:00:00Z"
    return {"metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
            "status": {"phase": phase, "podIP": ip, "conditions": READY if ready else NOT_READY}}


def addr(name: str, ip: str, node: str = "n1") -> Obj:
    return {"ip": ip, "nodeName": node, "targetRef": {"kind": "Pod", "name": name,
                                                       "namespace": "default",
                                                       "uid": f"uid-{name}"}}


HTTP = [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
HTTP_9090 = [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
P8080 = [{"port": 8080, "protocol": "TCP"}]

CASES: list[tuple[str, Obj, list[Obj], list[Obj]]] = [
    ("ready and not ready", service(),
     [pod("a", "10.0.0.1"), pod("b", "10.0.0.2", ready=False)],
     [{"addresses": [addr("a", "10.0.0.1")], "notReadyAddresses": [addr("b", "10.0.0.2")],
       "ports": P8080}]),
    ("no IP, finished and terminating pods are left out", service(),
     [pod("a", ""), pod("b", "10.0.0.2", phase="Succeeded"),
      pod("c", "10.0.0.3", terminating=True), pod("d", "10.0.0.4")],
     [{"addresses": [addr("d", "10.0.0.4")], "ports": P8080}]),
    ("publishNotReadyAddresses: all ready, terminating ones too", service(publish=True),
     [pod("a", "10.0.0.1", ready=False), pod("b", "10.0.0.2", terminating=True)],
     [{"addresses": [addr("a", "10.0.0.1"), addr("b", "10.0.0.2")], "ports": P8080}]),
    ("named targetPort", service([{"name": "web", "port": 80, "targetPort": "http",
                                   "protocol": "TCP"}]),
     [pod("a", "10.0.0.1", ports=HTTP)],
     [{"addresses": [addr("a", "10.0.0.1")],
       "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}]}]),
    ("a named port resolving differently splits the subsets",
     service([{"port": 80, "targetPort": "http", "protocol": "TCP"}]),
     [pod("a", "10.0.0.1", ports=HTTP), pod("b", "10.0.0.2", ports=HTTP_9090),
      pod("c", "10.0.0.3", ports=HTTP), pod("d", "10.0.0.4")],
     [{"addresses": [addr("a", "10.0.0.1"), addr("c", "10.0.0.3")], "ports": P8080},
      {"addresses": [addr("b", "10.0.0.2")], "ports": [{"port": 9090, "protocol": "TCP"}]}]),
    ("multiple ports, numeric and named",
     service([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
              {"name": "metrics", "port": 9100, "protocol": "TCP"},
              {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]),
     [pod("a", "10.0.0.1", ports=HTTP)],
     [{"addresses": [addr("a", "10.0.0.1")],
       "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"},
                 {"name": "http", "port": 8080, "protocol": "TCP"},
                 {"name": "metrics", "port": 9100, "protocol": "TCP"}]}]),
    ("no pods", service(), [], []),
    ("no ports: addresses only when headless", service([], headless=True),
     [pod("a", "10.0.0.1")], [{"addresses": [addr("a", "10.0.0.1")]}]),
    ("no ports, not headless: nothing", service([]), [pod("a", "10.0.0.1")], []),
]


@pytest.mark.parametrize("svc, pods, expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_desired_endpoints(svc: Obj, pods: list[Obj], expected: list[Obj]) -> None:
    assert desired_endpoints(svc, pods) == expected


def test_find_port_protocol_must_match() -> None:
    udp = [{"name": "dns", "containerPort": 5353, "protocol": "UDP"}]
    assert find_port(pod("a", ports=udp), {"port": 53, "targetPort": "dns"}) is None
    assert find_port(pod("a", ports=udp), {"port": 53, "targetPort": "dns",
                                           "protocol": "UDP"}) == 5353
    assert find_port(pod("a"), {"port": 53}) == 53


def test_desired_slices() -> None:
    svc = service([{"port": 80, "targetPort": "http", "protocol": "TCP"}])
    pods = [pod("a", "10.0.0.1", ports=HTTP), pod("b", "10.0.0.2", ports=HTTP_9090),
            pod("c", "10.0.0.3", ports=HTTP, terminating=True, ready=False),
            pod("d", "fd00::4", ports=HTTP, ready=False)]
    slices = desired_slices(svc, pods)
    by_key = {(s["addressType"], s["ports"][0]["port"]): s for s in slices}
    assert sorted(by_key) == [("IPv4", 8080), ("IPv4", 9090), ("IPv6", 8080)]
    first = by_key[("IPv4", 8080)]
    assert [(e["addresses"], e["conditions"]) for e in first["endpoints"]] == [
        (["10.0.0.1"], {"ready": True, "serving": True, "terminating": False}),
        (["10.0.0.3"], {"ready": False, "serving": False, "terminating": True})]
    assert by_key[("IPv6", 8080)]["endpoints"][0]["conditions"]["ready"] is False
    for s in slices:
        meta = s["metadata"]
        assert meta["name"].startswith("web-")
        assert meta["labels"][SERVICE_NAME_LABEL] == "web"
        assert meta["labels"][MANAGED_BY_LABEL] == MANAGED_BY
        assert meta["ownerReferences"][0]["uid"] == "svc-uid"
    assert desired_slices(svc, pods) == slices  # stable names: a rerun changes nothing


def test_slices_hold_at_most_max_endpoints_and_a_placeholder_when_empty() -> None:
    pods = [pod(f"p{i}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(250)]
    slices = desired_slices(service(), pods)
    assert sorted(len(s["endpoints"]) for s in slices) == [50, 100, 100]
    assert len({s["metadata"]["name"] for s in slices}) == 3
    placeholder = desired_slices(service(), [])
    assert len(placeholder) == 1 and placeholder[0]["endpoints"] == []


# -- in process ----------------------------------------------------------------------------------

async def make_pod(client: ApiClient, name: str, ip: str, ready: bool) -> Obj:
    created = await client.create(PODS, "default", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx",
                                 "ports": [{"name": "http", "containerPort": 8080}]}]}})
    return await set_ready(client, created, ip, ready)


async def set_ready(client: ApiClient, p: Obj, ip: str, ready: bool) -> Obj:
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return await client.patch(PODS, "default", p["metadata"]["name"], {"status": status},
                              subresource="status")


def ips(subsets: list[Obj], key: str) -> list[str]:
    return sorted(a["ip"] for s in subsets for a in s.get(key) or ())


async def test_endpoints_follow_pods_and_service(client: ApiClient) -> None:
    async with running(EndpointsController(client).run(), EndpointSliceController(client).run()):
        await client.create(SERVICES, "default", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
        a = await make_pod(client, "a", "10.244.0.5", ready=True)
        await make_pod(client, "b", "10.244.0.6", ready=False)

        async def endpoints(ready: list[str], not_ready: list[str]) -> Obj | None:
            try:
                ep = await client.get(ENDPOINTS, "default", "web")
            except NotFound:
                return None
            subsets = ep.get("subsets") or []
            ok = ips(subsets, "addresses") == ready and \
                ips(subsets, "notReadyAddresses") == not_ready
            return ep if ok else None

        ep = await eventually(lambda: endpoints(["10.244.0.5"], ["10.244.0.6"]))
        assert ep["subsets"][0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
        assert ep["subsets"][0]["addresses"][0]["targetRef"]["uid"] == a["metadata"]["uid"]

        async def slice_conditions() -> dict[str, bool]:
            found = await client.list(ENDPOINTSLICES, "default",
                                      label_selector=f"{SERVICE_NAME_LABEL}=web")
            return {e["addresses"][0]: e["conditions"]["ready"]
                    for s in found.items for e in s.get("endpoints") or ()}

        await eventually(lambda: _equals(slice_conditions,
                                         {"10.244.0.5": True, "10.244.0.6": False}))

        await set_ready(client, a, "10.244.0.5", ready=False)
        await eventually(lambda: endpoints([], ["10.244.0.5", "10.244.0.6"]))
        await eventually(lambda: _equals(slice_conditions,
                                         {"10.244.0.5": False, "10.244.0.6": False}))
        await set_ready(client, a, "10.244.0.5", ready=True)
        ep = await eventually(lambda: endpoints(["10.244.0.5"], ["10.244.0.6"]))

        # Tampering is put right.
        await client.update(ENDPOINTS, {**ep, "subsets": []})
        await eventually(lambda: endpoints(["10.244.0.5"], ["10.244.0.6"]))

        await client.delete(SERVICES, "default", "web")

        async def gone() -> bool:
            try:
                await client.get(ENDPOINTS, "default", "web")
                return False
            except NotFound:
                return not await slice_conditions()

        await eventually(gone)


async def test_endpoints_carry_the_time_of_the_change_that_triggered_them(
        client: ApiClient) -> None:
    """The annotation is RFC 3339 with fractional seconds, within the triggering change's call
    and its write; a write without a new Pod or Service change behind it drops it."""
    def stamp(ep: Obj) -> float | None:
        value = (ep["metadata"].get("annotations") or {}).get(TRIGGER_TIME_ANNOTATION)
        return datetime.fromisoformat(value).timestamp() if value else None

    async def endpoints_with(ip_list: list[str]) -> Obj | None:
        try:
            ep = await client.get(ENDPOINTS, "default", "web")
        except NotFound:
            return None
        return ep if ips(ep.get("subsets") or [], "addresses") == ip_list else None

    async with running(EndpointsController(client).run()):
        began = time.time()
        await client.create(SERVICES, "default", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        created = await eventually(lambda: endpoints_with([]))
        first = stamp(created)
        assert first is not None and began <= first <= time.time()
        value = created["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION]
        assert value.endswith("Z") and "." in value

        before_ready = time.time()
        await make_pod(client, "a", "10.244.0.5", ready=True)
        ready = await eventually(lambda: endpoints_with(["10.244.0.5"]))
        second = stamp(ready)
        assert second is not None and before_ready <= second <= time.time()

        await client.update(ENDPOINTS, {**ready, "subsets": []})  # tampering: no trigger
        repaired = await eventually(lambda: endpoints_with(["10.244.0.5"]))
        assert stamp(repaired) is None


async def test_service_without_selector_is_left_alone(client: ApiClient) -> None:
    async with running(EndpointsController(client).run()):
        await client.create(SERVICES, "default", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "external"},
            "spec": {"ports": [{"port": 5432}]}})
        manual = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external"},
                  "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]}
        await client.create(ENDPOINTS, "default", manual)
        await client.create(SERVICES, "default", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})

        async def made() -> bool:
            try:
                return (await client.get(ENDPOINTS, "default", "web")) is not None
            except NotFound:
                return False

        await eventually(made)  # the controller runs; and the manual one is untouched:
        got = await client.get(ENDPOINTS, "default", "external")
        assert ips(got["subsets"], "addresses") == ["192.0.2.10"]


async def _equals(check: Any, expected: Any) -> bool:
    return await check() == expected
