"""The service load-balancer controller: the pool as a table, then the loop against an
in-process API server (allocation, a requested IP, exhaustion, release and reuse, type changes,
no IP ever shared, and a new leader rebuilding from the Services' status)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ctlharness import eventually, running

from controlplane.client import EVENTS, SERVICES, ApiClient
from controlplane.controller import build_parser, config_from_args
from controlplane.controllers.servicelb import (
    ALLOCATION_FAILED,
    IP_ALLOCATED,
    IPPool,
    ServiceLBController,
)
from raftstore.raft import ConfigError

Obj = dict[str, Any]


@pytest.mark.parametrize(("text", "size", "first", "last"), [
    ("198.19.255.0/24", 254, "198.19.255.1", "198.19.255.254"),  # network, broadcast left out
    ("10.0.0.8/31", 2, "10.0.0.8", "10.0.0.9"),
    ("10.0.0.8/32", 1, "10.0.0.8", "10.0.0.8"),
    ("10.0.0.5-10.0.0.7", 3, "10.0.0.5", "10.0.0.7"),
    (" 10.0.0.5 - 10.0.0.6 , 10.0.0.6-10.0.0.9,10.0.1.1/32", 6, "10.0.0.5", "10.0.1.1"),
])
def test_pool_parses_cidrs_and_ranges(text: str, size: int, first: str, last: str) -> None:
    pool = IPPool(text)
    assert pool.size == size
    assert pool.next_free([]) == first
    assert first in pool and last in pool
    assert "10.255.255.255" not in pool and "not-an-ip" not in pool and None not in pool


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"),
    (" , ", "empty"),
    ("10.0.0.0/33", "not a CIDR"),
    ("10.0.0.1/24", "host bits"),
    ("fd00::/64", "only IPv4"),
    ("10.0.0.9-10.0.0.1", "after the last"),
    ("10.0.0.1-x", "two IPv4 addresses"),
])
def test_bad_pools_say_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        IPPool(text)


def test_next_free_takes_the_lowest_free_across_ranges() -> None:
    pool = IPPool("10.0.0.1-10.0.0.2,10.0.0.10-10.0.0.11")
    assert pool.next_free(["10.0.0.1"]) == "10.0.0.2"
    assert pool.next_free(["10.0.0.1", "10.0.0.2", "bogus"]) == "10.0.0.10"
    assert pool.next_free(["10.0.0.1", "10.0.0.2", "10.0.0.10", "10.0.0.11"]) is None


@pytest.mark.parametrize("flag", ["10.0.0.0/33", "fd00::/120", "a-b"])
def test_a_bad_pool_flag_is_a_config_error(flag: str, tmp_path: Any) -> None:
    args = build_parser().parse_args(["--listen-peer", "127.0.0.1:0", "--data-dir",
                                      str(tmp_path), "--load-balancer-ip-pool", flag])
    with pytest.raises(ConfigError, match="--load-balancer-ip-pool"):
        config_from_args(args)


def test_the_pool_flag_reaches_the_config(tmp_path: Any) -> None:
    args = build_parser().parse_args(["--listen-peer", "127.0.0.1:0", "--data-dir",
                                      str(tmp_path), "--load-balancer-ip-pool",
                                      "198.19.255.0/24"])
    assert config_from_args(args).load_balancer_ip_pool == "198.19.255.0/24"


# -- in process ----------------------------------------------------------------------------------

async def make(client: ApiClient, name: str, *, type_: str = "LoadBalancer", **spec: Any) -> Obj:
    return await client.create(SERVICES, "default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": type_, "ports": [{"port": 80}], **spec}})


async def ingress_of(client: ApiClient, name: str) -> list[Obj]:
    service = await client.get(SERVICES, "default", name)
    return ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


async def ip_of(client: ApiClient, name: str) -> str | None:
    ingress = await ingress_of(client, name)
    return ingress[0]["ip"] if ingress else None


async def wait_ip(client: ApiClient, name: str, ip: str | None = None) -> str:
    """The Service's IP once it has one (``ip`` when given)."""
    async def check() -> str | None:
        got = await ip_of(client, name)
        return got if got and (ip is None or got == ip) else None
    return await eventually(check, what=f"{name} gets {ip or 'an IP'}")


async def wait_pending(client: ApiClient, name: str) -> None:
    async def check() -> bool:
        return not await ingress_of(client, name)
    await eventually(check, what=f"{name} without an IP")


async def events(client: ApiClient, name: str, reason: str) -> list[Obj]:
    found = await client.list(EVENTS, "default")
    return [e for e in found.items if e["reason"] == reason
            and e["involvedObject"]["name"] == name]


async def test_allocates_in_order_with_vip_mode_and_an_event(client: ApiClient) -> None:
    async with running(ServiceLBController(client, pool=IPPool("10.0.0.1-10.0.0.3")).run()):
        await make(client, "a")
        assert await wait_ip(client, "a") == "10.0.0.1"
        assert await ingress_of(client, "a") == [{"ip": "10.0.0.1", "ipMode": "VIP"}]
        await make(client, "b")
        assert await wait_ip(client, "b") == "10.0.0.2"
        await eventually(lambda: events(client, "a", IP_ALLOCATED))
        # Not ours: other types and other classes are left alone.
        await make(client, "plain", type_="ClusterIP")
        await make(client, "theirs", loadBalancerClass="example.com/lb")
        await make(client, "c")
        assert await wait_ip(client, "c") == "10.0.0.3"
        assert await ingress_of(client, "plain") == []
        assert await ingress_of(client, "theirs") == []


async def test_requested_ip_is_honoured_when_in_the_pool_and_free(client: ApiClient) -> None:
    async with running(ServiceLBController(client, pool=IPPool("10.0.0.1-10.0.0.5")).run()):
        await make(client, "asks", loadBalancerIP="10.0.0.4")
        assert await wait_ip(client, "asks") == "10.0.0.4"
        await make(client, "outside", loadBalancerIP="192.0.2.9")
        await make(client, "taken", loadBalancerIP="10.0.0.4")
        outside = await eventually(lambda: events(client, "outside", ALLOCATION_FAILED))
        assert outside[0]["type"] == "Warning" and "not in the pool" in outside[0]["message"]
        taken = await eventually(lambda: events(client, "taken", ALLOCATION_FAILED))
        assert "default/asks" in taken[0]["message"]
        assert await ingress_of(client, "outside") == []
        assert await ingress_of(client, "taken") == []
        # The holder goes: the one that asked for its IP gets it.
        await client.delete(SERVICES, "default", "asks")
        await wait_ip(client, "taken", "10.0.0.4")
        # A changed request moves the IP.
        taken = await client.get(SERVICES, "default", "taken")
        taken["spec"]["loadBalancerIP"] = "10.0.0.2"
        await client.update(SERVICES, taken)
        await wait_ip(client, "taken", "10.0.0.2")


async def to_cluster_ip(client: ApiClient, name: str) -> None:
    service = await client.get(SERVICES, "default", name)
    service["spec"]["type"] = "ClusterIP"
    for port in service["spec"]["ports"]:
        port.pop("nodePort", None)
    await client.update(SERVICES, service)


@pytest.mark.parametrize("let_go", ["delete", "type change"])
async def test_a_full_pool_waits_for_a_release_and_reuses_it(client: ApiClient,
                                                              let_go: str) -> None:
    async with running(ServiceLBController(client, pool=IPPool("10.0.0.1/32")).run()):
        await make(client, "first")
        await wait_ip(client, "first", "10.0.0.1")
        await make(client, "second")
        failed = await eventually(lambda: events(client, "second", ALLOCATION_FAILED))
        assert "no available IPs" in failed[0]["message"]
        await asyncio.sleep(0.3)
        assert await ingress_of(client, "second") == []
        assert len(await events(client, "second", ALLOCATION_FAILED)) == 1  # told once
        if let_go == "delete":
            await client.delete(SERVICES, "default", "first")
        else:
            await to_cluster_ip(client, "first")
            await wait_pending(client, "first")  # its status cleared
        await wait_ip(client, "second", "10.0.0.1")


async def test_many_services_at_once_never_share_an_ip(client: ApiClient) -> None:
    controller = ServiceLBController(client, pool=IPPool("10.0.0.1-10.0.0.3"))
    async with running(controller.run()):
        await asyncio.gather(*(make(client, f"s{i}") for i in range(6)))

        async def settled() -> list[str] | None:
            ips = [ip for ip in [await ip_of(client, f"s{i}") for i in range(6)] if ip]
            return ips if len(ips) == 3 else None

        ips = await eventually(settled)
        assert sorted(ips) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        assert sorted(controller.allocated.values()) == sorted(ips)


async def test_a_new_leader_rebuilds_from_status(client: ApiClient) -> None:
    pool = IPPool("10.0.0.1-10.0.0.4")
    async with running(ServiceLBController(client, pool=pool).run()):
        await make(client, "old")
        await wait_ip(client, "old", "10.0.0.1")
    # Between terms: one Service given an IP by hand, and a younger one claiming the same
    # (created in the same second, the name decides: "old" sorts first).
    await make(client, "manual")
    await client.patch(SERVICES, "default", "manual",
                       {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.3"}]}}},
                       subresource="status")
    await make(client, "younger")
    await client.patch(SERVICES, "default", "younger",
                       {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}},
                       subresource="status")
    controller = ServiceLBController(client, pool=pool)
    async with running(controller.run()):
        await wait_ip(client, "younger", "10.0.0.2")  # the older "old" keeps 10.0.0.1
        assert await ip_of(client, "old") == "10.0.0.1"

        async def manual_vip() -> bool:  # adopted, its ingress completed
            return await ingress_of(client, "manual") == [{"ip": "10.0.0.3", "ipMode": "VIP"}]

        await eventually(manual_vip)
        await make(client, "new")
        assert await wait_ip(client, "new") == "10.0.0.4"
        assert controller.allocated == {"default/old": "10.0.0.1", "default/younger": "10.0.0.2",
                                        "default/manual": "10.0.0.3", "default/new": "10.0.0.4"}
