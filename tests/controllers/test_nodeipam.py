"""Node IPAM: the pure CIDR set as tables, then the controller against an in-process API with
hollow nodes: allocation, a new leader keeping what is taken, release on delete, exhaustion,
and nodes whose podCIDR is outside the cluster CIDR or taken."""

from __future__ import annotations

from typing import Any

import pytest
from ctlharness import eventually, running

from controlplane.client import EVENTS, NODES, ApiClient
from controlplane.controllers.nodeipam import (
    CidrError,
    CidrExhausted,
    CidrSet,
    NodeIpamController,
)
from nodeagent.hollow import HollowFleet, node_object

Obj = dict[str, Any]

# -- the CIDR set -------------------------------------------------------------------------------


def test_allocates_the_lowest_free_cidr_until_exhausted() -> None:
    cidrs = CidrSet("10.244.0.0/22", 24)
    assert cidrs.size == 4
    assert [cidrs.allocate_next() for _ in range(4)] == [
        "10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    assert len(cidrs) == 4 and cidrs.free == 0
    with pytest.raises(CidrExhausted, match="no remaining CIDRs left"):
        cidrs.allocate_next()


def test_release_makes_a_cidr_the_lowest_free_again() -> None:
    cidrs = CidrSet("10.244.0.0/16", 24)
    for _ in range(3):
        cidrs.allocate_next()
    cidrs.release("10.244.1.0/24")
    cidrs.release("10.244.1.0/24")  # twice is harmless
    assert len(cidrs) == 2
    assert cidrs.allocate_next() == "10.244.1.0/24"
    assert cidrs.allocate_next() == "10.244.3.0/24"


def test_occupied_cidrs_are_skipped() -> None:
    cidrs = CidrSet("10.244.0.0/16", 24)
    cidrs.occupy("10.244.0.0/24")
    cidrs.occupy("10.244.2.0/23")  # a larger range takes every /24 it covers
    cidrs.occupy("10.244.0.0/24")
    assert len(cidrs) == 3
    assert cidrs.in_use("10.244.3.0/24") and not cidrs.in_use("10.244.1.0/24")
    assert [cidrs.allocate_next() for _ in range(2)] == ["10.244.1.0/24", "10.244.4.0/24"]


@pytest.mark.parametrize("cidr", ["10.245.0.0/24", "10.244.0.1/24", "fd00::/64", "bogus"])
def test_cidrs_outside_the_cluster_cidr_are_refused(cidr: str) -> None:
    with pytest.raises(CidrError):
        CidrSet("10.244.0.0/16", 24).occupy(cidr)


@pytest.mark.parametrize("cluster, mask", [
    ("10.244.0.0/16", 15), ("10.244.0.0/16", 33), ("fd00::/48", 64), ("10.244.0.1/16", 24),
    ("10.0.0.0/8", 25),
])
def test_bad_configurations_are_refused(cluster: str, mask: int) -> None:
    with pytest.raises(CidrError):
        CidrSet(cluster, mask)


# -- the controller -----------------------------------------------------------------------------


async def pod_cidrs(client: ApiClient) -> dict[str, str | None]:
    nodes = (await client.list(NODES)).items
    return {n["metadata"]["name"]: (n.get("spec") or {}).get("podCIDR") for n in nodes}


async def all_allocated(client: ApiClient, count: int) -> dict[str, str]:
    async def check() -> dict[str, str] | None:
        cidrs = await pod_cidrs(client)
        if len(cidrs) == count and all(cidrs.values()):
            return cidrs  # type: ignore[return-value]
        return None
    return await eventually(check)


async def cidr_events(client: ApiClient, node: str) -> list[Obj]:
    events = await client.list(EVENTS, "default", field_selector="reason=CIDRNotAvailable")
    return [e for e in events.items if e["involvedObject"]["name"] == node]


async def test_hollow_nodes_get_distinct_cidrs(client: ApiClient) -> None:
    fleet = HollowFleet(client, [f"hollow-{i}" for i in range(4)])
    async with running(fleet.run(), NodeIpamController(client).run()):
        cidrs = await all_allocated(client, 4)
    assert sorted(cidrs.values()) == [f"10.244.{i}.0/24" for i in range(4)]
    for node in (await client.list(NODES)).items:
        assert node["spec"]["podCIDRs"] == [node["spec"]["podCIDR"]]


async def test_a_new_leader_keeps_what_is_taken(client: ApiClient) -> None:
    for i in range(3):
        await client.create(NODES, "", node_object(f"n{i}"))
    async with running(NodeIpamController(client).run()):
        first = await all_allocated(client, 3)
    # The old leader has stopped; nodes join, one of them set by hand, and a new leader starts.
    await client.create(NODES, "", node_object("late"))
    manual = node_object("manual")
    manual["spec"] = {"podCIDR": "10.244.3.0/24"}
    await client.create(NODES, "", manual)
    controller = NodeIpamController(client)
    async with running(controller.run()):
        second = await all_allocated(client, 5)
    assert {name: second[name] for name in first} == first
    assert second["manual"] == "10.244.3.0/24" and second["late"] == "10.244.4.0/24"
    assert len(controller.cidrs) == 5


async def test_a_deleted_nodes_cidr_is_handed_out_again(client: ApiClient) -> None:
    for i in range(3):
        await client.create(NODES, "", node_object(f"n{i}"))
    async with running(NodeIpamController(client).run()):
        cidrs = await all_allocated(client, 3)
        gone = next(name for name, cidr in cidrs.items() if cidr == "10.244.1.0/24")
        await client.delete(NODES, "", gone)
        await eventually(lambda: _absent(client, gone))
        await client.create(NODES, "", node_object("new"))
        cidrs = await all_allocated(client, 3)
    assert cidrs["new"] == "10.244.1.0/24"


async def _absent(client: ApiClient, name: str) -> bool:
    return name not in await pod_cidrs(client)


async def test_exhaustion_is_told_and_waits_for_a_release(client: ApiClient) -> None:
    await client.create(NODES, "", node_object("a"))
    await client.create(NODES, "", node_object("b"))
    async with running(NodeIpamController(client, cluster_cidr="10.244.0.0/23").run()):
        await all_allocated(client, 2)
        await client.create(NODES, "", node_object("c"))
        events = await eventually(lambda: cidr_events(client, "c"))
        assert (await pod_cidrs(client))["c"] is None
        freed = (await pod_cidrs(client))["a"]
        await client.delete(NODES, "", "a")
        cidrs = await all_allocated(client, 2)
    assert cidrs["c"] == freed
    assert len(events) == 1
    assert events[0]["type"] == "Normal"
    assert events[0]["message"] == "Node c status is now: CIDRNotAvailable"
    assert events[0]["source"]["component"] == "cidrAllocator"


async def test_outside_or_taken_cidrs_are_left_alone_and_told(client: ApiClient) -> None:
    first = node_object("first")
    first["spec"] = {"podCIDR": "10.244.0.0/24"}
    await client.create(NODES, "", first)
    for name, cidr in (("outside", "10.9.0.0/24"), ("twin", "10.244.0.0/24")):
        node = node_object(name)
        node["spec"] = {"podCIDR": cidr}
        await client.create(NODES, "", node)
    await client.create(NODES, "", node_object("plain"))
    async with running(NodeIpamController(client).run()):
        outside = await eventually(lambda: cidr_events(client, "outside"))
        twin = await eventually(lambda: cidr_events(client, "twin"))
        cidrs = await all_allocated(client, 4)
    assert cidrs == {"first": "10.244.0.0/24", "outside": "10.9.0.0/24",
                     "twin": "10.244.0.0/24", "plain": "10.244.1.0/24"}
    assert outside[0]["type"] == "Warning" and "outside the cluster CIDR" in outside[0]["message"]
    assert twin[0]["type"] == "Warning" and "node first holds already" in twin[0]["message"]
