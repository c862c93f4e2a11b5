"""Service ClusterIP and NodePort allocation (controlplane.api.allocators).

Flow: the pure bitmap (property tests: never the same value twice, release then reuse, bytes
round trip) and the ranges' value <-> offset mapping; then the API over the in-process
cluster: cluster IPs inside the range, headless and ExternalName without one, requested IPs
honoured or refused with Kubernetes' 422, node ports assigned / requested / refused, type
changes, delete releases, the ``kubernetes`` Service, dry runs, and 200 concurrent creates
through two API servers of one store all getting distinct values; last, kubectl.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import uuid
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import Api, Kubectl

from controlplane.api.allocators import (
    NODE_PORTS_KEY,
    SERVICE_IPS_KEY,
    Bitmap,
    IPRange,
    PortRange,
    RangeFull,
)
from controlplane.localcluster import InProcessCluster

SVCS = "/api/v1/namespaces/default/services"
CIDR = ipaddress.ip_network("10.96.0.0/12")


# ---------------------------------------------------------------- the pure bitmap

@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 300), reserved=st.integers(0, 40),
       ops=st.lists(st.tuples(st.sampled_from(["next", "take", "release"]),
                              st.integers(0, 299)), max_size=200),
       seed=st.integers(0, 2**32))
def test_bitmap_never_hands_out_a_value_twice(size: int, reserved: int,
                                              ops: list[tuple[str, int]], seed: int) -> None:
    bitmap, held, rng = Bitmap(size, reserved), set(), random.Random(seed)
    for op, value in ops:
        value %= size
        if op == "next":
            if len(held) == size:
                with pytest.raises(RangeFull):
                    bitmap.allocate_next(rng)
                continue
            got = bitmap.allocate_next(rng)
            assert got not in held and 0 <= got < size
            held.add(got)
        elif op == "take":
            assert bitmap.allocate(value) == (value not in held)
            held.add(value)
        else:
            bitmap.release(value)
            held.discard(value)
        assert bitmap.used() == len(held)
    again = Bitmap.from_bytes(bitmap.to_bytes(), size, reserved)
    assert set(again.offsets()) == held
    assert all(again.has(v) for v in held)


def test_bitmap_release_then_reuse_and_bands() -> None:
    bitmap = Bitmap(64, reserved=16)
    first = [bitmap.allocate_next() for _ in range(48)]
    assert all(v >= 16 for v in first)  # the upper band goes first
    assert bitmap.allocate_next() < 16  # then the static band
    bitmap.release(first[0])
    assert not bitmap.has(first[0])
    assert bitmap.allocate(first[0])
    assert not bitmap.allocate(first[0])
    while bitmap.used() < 64:
        bitmap.allocate_next()
    with pytest.raises(RangeFull):
        bitmap.allocate_next()


def test_ranges_map_values_to_offsets() -> None:
    ips = IPRange("10.96.0.0/12")
    assert ips.size == 2**20 - 2 and ips.first() == "10.96.0.1"
    assert ips.offset("10.96.0.1") == 0 and ips.value(0) == "10.96.0.1"
    assert ips.offset("10.96.0.0") is None and ips.offset("10.111.255.255") is None
    assert ips.offset("10.112.0.1") is None and ips.offset("fd00::1") is None
    ports = PortRange("30000-32767")
    assert ports.size == 2768 and ports.offset(30000) == 0 and ports.offset(29999) is None
    for bad in ("10.0.0.0/8", "fd00::/112", "10.96.0.1/12", "nonsense"):
        with pytest.raises(ValueError):
            IPRange(bad)
    for bad in ("1-0", "abc", "0-10", "30000-70000"):
        with pytest.raises(ValueError):
            PortRange(bad)
    # 128 KiB of bitmap for a /12, stored compressed.
    assert len(Bitmap(ips.size).to_bytes()) < 1024


# ---------------------------------------------------------------- the API

def service(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}
    body["spec"].update(spec)
    return body


async def create(api: Api, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
    status, answer, _ = await api.call("POST", SVCS, body)
    assert status == expect, answer
    return answer


def message(answer: dict[str, Any]) -> str:
    return "; ".join(c["field"] + ": " + c["message"] for c in answer["details"]["causes"])


async def test_cluster_ip_assigned_inside_the_range(api: Api) -> None:
    spec = (await create(api, service("web")))["spec"]
    ip = ipaddress.ip_address(spec["clusterIP"])
    assert ip in CIDR and ip not in (CIDR.network_address, CIDR.broadcast_address)
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    status, got, _ = await api.call("GET", f"{SVCS}/web")
    assert got["spec"]["clusterIP"] == spec["clusterIP"]
    kv, _ = await api.server.store.get(SERVICE_IPS_KEY)
    assert kv is not None and msgpack.unpackb(kv.value)["range"] == "10.96.0.0/12"


async def test_headless_and_external_name_get_no_ip(api: Api) -> None:
    headless = await create(api, service("db", clusterIP="None"))
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["clusterIPs"] == ["None"]
    external = await create(api, service("ext", type="ExternalName", externalName="example.com",
                                         selector=None, ports=[]))
    assert "clusterIP" not in external["spec"]


async def test_requested_ip_honoured_or_refused(api: Api) -> None:
    assert (await create(api, service("a", clusterIP="10.96.0.10")))["spec"]["clusterIPs"] == [
        "10.96.0.10"]
    taken = await create(api, service("b", clusterIP="10.96.0.10"), 422)
    assert taken["reason"] == "Invalid"
    assert message(taken) == ('spec.clusterIPs[0]: Invalid value: "10.96.0.10": failed to '
                              "allocate IP 10.96.0.10: provided IP is already allocated")
    outside = await create(api, service("c", clusterIPs=["192.168.0.1"]), 422)
    assert message(outside) == (
        'spec.clusterIPs[0]: Invalid value: "192.168.0.1": failed to allocate IP 192.168.0.1: '
        "the provided IP (192.168.0.1) "
        "is not in the valid range. The range of valid IPs is 10.96.0.0/12")
    assert "provided IP is already allocated" in taken["message"]
    # The refused creates wrote nothing: neither Service nor allocation.
    for name in ("b", "c"):
        assert (await api.call("GET", f"{SVCS}/{name}"))[0] == 404


async def test_delete_releases_the_ip(api: Api) -> None:
    await create(api, service("a", clusterIP="10.96.0.20"))
    assert (await api.call("DELETE", f"{SVCS}/a"))[0] == 200
    again = await create(api, service("b", clusterIP="10.96.0.20"))
    assert again["spec"]["clusterIP"] == "10.96.0.20"


async def test_node_ports_assigned_requested_and_refused(api: Api) -> None:
    spec = (await create(api, service("np", type="NodePort", ports=[
        {"name": "http", "port": 80}, {"name": "https", "port": 443, "nodePort": 30443}])))["spec"]
    assert 30000 <= spec["ports"][0]["nodePort"] <= 32767
    assert spec["ports"][1]["nodePort"] == 30443
    taken = await create(api, service("np2", type="NodePort", ports=[
        {"port": 80, "nodePort": 30443}]), 422)
    assert message(taken) == ("spec.ports[0].nodePort: Invalid value: 30443: provided port is "
                              "already allocated")
    outside = await create(api, service("np3", type="NodePort", ports=[
        {"port": 80, "nodePort": 8080}]), 422)
    assert message(outside) == ("spec.ports[0].nodePort: Invalid value: 8080: provided port is "
                                "not in the valid range. The range of valid ports is "
                                "30000-32767")
    # TCP and UDP of one port share one node port.
    dns = (await create(api, service("dns", type="NodePort", ports=[
        {"name": "udp", "port": 53, "protocol": "UDP"},
        {"name": "tcp", "port": 53, "protocol": "TCP"}])))["spec"]["ports"]
    assert dns[0]["nodePort"] == dns[1]["nodePort"]
    lb = (await create(api, service("lb", type="LoadBalancer",
                                    externalTrafficPolicy="Local")))["spec"]
    assert 30000 <= lb["ports"][0]["nodePort"] <= 32767
    assert 30000 <= lb["healthCheckNodePort"] <= 32767
    assert lb["healthCheckNodePort"] != lb["ports"][0]["nodePort"]
    assert (await api.call("DELETE", f"{SVCS}/np"))[0] == 200
    await create(api, service("np4", type="NodePort", ports=[{"port": 80, "nodePort": 30443}]))


async def test_type_change_allocates_and_releases_node_ports(api: Api) -> None:
    created = await create(api, service("web"))
    ip = created["spec"]["clusterIP"]
    status, patched, _ = await api.call(
        "PATCH", f"{SVCS}/web", {"spec": {"type": "NodePort"}},
        content_type="application/merge-patch+json")
    assert status == 200, patched
    port = patched["spec"]["ports"][0]["nodePort"]
    assert 30000 <= port <= 32767 and patched["spec"]["clusterIP"] == ip
    # Back to ClusterIP: the client drops the node port, which is released.
    body = patched
    body["spec"]["type"] = "ClusterIP"
    del body["spec"]["ports"][0]["nodePort"]
    del body["spec"]["externalTrafficPolicy"]
    status, updated, _ = await api.call("PUT", f"{SVCS}/web", body)
    assert status == 200, updated
    assert "nodePort" not in updated["spec"]["ports"][0]
    await create(api, service("other", type="NodePort", ports=[{"port": 80, "nodePort": port}]))
    # Status writes and no-op updates do not touch the ranges.
    kv, _ = await api.server.store.get(NODE_PORTS_KEY)
    status, _, _ = await api.call("PUT", f"{SVCS}/web/status", {
        **updated, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})
    assert status == 200
    after, _ = await api.server.store.get(NODE_PORTS_KEY)
    assert after is not None and kv is not None and after.mod_revision == kv.mod_revision


async def test_dry_run_checks_but_allocates_nothing(api: Api) -> None:
    status, answer, _ = await api.call("POST", SVCS + "?dryRun=All",
                                       service("dry", clusterIP="10.96.0.30"))
    assert status == 201 and answer["spec"]["clusterIP"] == "10.96.0.30"
    await create(api, service("real", clusterIP="10.96.0.30"))
    status, answer, _ = await api.call("POST", SVCS + "?dryRun=All",
                                       service("dry", clusterIP="10.96.0.30"))
    assert status == 422, answer


async def test_kubernetes_service_is_seeded(api: Api) -> None:
    status, svc, _ = await api.call("GET", f"{SVCS}/kubernetes")
    assert status == 200, svc
    assert svc["spec"]["clusterIP"] == "10.96.0.1"
    assert svc["spec"]["ports"][0]["port"] == 443
    assert svc["metadata"]["labels"] == {"component": "apiserver", "provider": "kubernetes"}
    taken = await create(api, service("x", clusterIP="10.96.0.1"), 422)
    assert "provided IP is already allocated" in message(taken)


async def test_missing_range_is_rebuilt_from_existing_services(api: Api) -> None:
    await create(api, service("a", clusterIP="10.96.0.40"))
    await api.server.store.delete(SERVICE_IPS_KEY)  # as after an upgrade from before ranges
    taken = await create(api, service("b", clusterIP="10.96.0.40"), 422)
    assert "already allocated" in message(taken)
    kubernetes = await create(api, service("c", clusterIP="10.96.0.1"), 422)
    assert "already allocated" in message(kubernetes)


async def test_concurrent_creates_through_two_servers_get_distinct_values(
        cluster: InProcessCluster, api: Api) -> None:
    second = await cluster.start_server()
    apis = [api, Api(cluster.servers[second], second, api.session, api.pki)]

    async def one(i: int) -> dict[str, Any]:
        kind = "NodePort" if i % 2 else "ClusterIP"
        return await create(apis[i % 2], service(f"s{i}", type=kind))

    made = await asyncio.gather(*(one(i) for i in range(200)))
    ips = [m["spec"]["clusterIP"] for m in made]
    ports = [m["spec"]["ports"][0]["nodePort"] for m in made if m["spec"]["type"] == "NodePort"]
    assert len(set(ips)) == 200 and "10.96.0.1" not in ips
    assert len(set(ports)) == 100
    # The stored bitmaps hold exactly what the Services hold.
    ip_range = IPRange("10.96.0.0/12")
    kv, _ = await api.server.store.get(SERVICE_IPS_KEY)
    bitmap = Bitmap.from_bytes(msgpack.unpackb(kv.value)["data"], ip_range.size)
    assert {ip_range.value(o) for o in bitmap.offsets()} == set(ips) | {"10.96.0.1"}
    deleted = await asyncio.gather(*(apis[i % 2].call("DELETE", f"{SVCS}/s{i}")
                                     for i in range(200)))
    assert all(d[0] == 200 for d in deleted)
    kv, _ = await api.server.store.get(SERVICE_IPS_KEY)
    bitmap = Bitmap.from_bytes(msgpack.unpackb(kv.value)["data"], ip_range.size)
    assert [ip_range.value(o) for o in bitmap.offsets()] == ["10.96.0.1"]


# ---------------------------------------------------------------- kubectl

def test_kubectl_create_service_shows_its_ip(kubectl: Kubectl, ns: str) -> None:
    name = f"web-{uuid.uuid4().hex[:5]}"
    kubectl("create", "service", "clusterip", name, "--tcp=80:8080", "-n", ns)
    kubectl("create", "service", "nodeport", name + "-np", "--tcp=80:8080",
            "--node-port=30080", "-n", ns)
    svc = kubectl.json("get", "svc", name, "-n", ns)
    ip = svc["spec"]["clusterIP"]
    assert ipaddress.ip_address(ip) in CIDR
    table = kubectl("get", "svc", "-n", ns).stdout
    assert ip in table and "80:30080/TCP" in table
    again = kubectl("create", "service", "nodeport", name + "-2", "--tcp=80:8080",
                    "--node-port=30080", "-n", ns, check=False)
    assert again.returncode != 0 and "provided port is already allocated" in again.stderr
