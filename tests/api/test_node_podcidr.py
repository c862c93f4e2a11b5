"""A Node's pod CIDR over the API: set once, from "" to valid, then immutable, whichever of
``spec.podCIDR`` and ``spec.podCIDRs`` a client writes (Kubernetes' ValidateNodeUpdate, with the
v1 conversion in which ``podCIDR`` wins when the two differ)."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.client import NODES, ApiClient, Invalid

FORBIDDEN = ('Node "n" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR '
             'except from "" to valid')


def node(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": spec or {}}


@pytest.mark.parametrize("first", [{"podCIDR": "10.244.1.0/24"},
                                   {"podCIDRs": ["10.244.1.0/24"]}])
async def test_pod_cidr_may_be_set_once(client: ApiClient, first: dict[str, Any]) -> None:
    await client.create(NODES, "", node())
    done = await client.patch(NODES, "", "n", {"spec": first})
    assert done["spec"]["podCIDR"] == "10.244.1.0/24"
    assert done["spec"]["podCIDRs"] == ["10.244.1.0/24"]
    again = await client.patch(NODES, "", "n", {"spec": first})  # the same value: allowed
    assert again["spec"]["podCIDRs"] == ["10.244.1.0/24"]


@pytest.mark.parametrize("change", [
    {"podCIDR": "10.244.9.0/24"},
    {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]},
    {"podCIDR": None, "podCIDRs": None},
])
async def test_pod_cidr_may_not_change(client: ApiClient, change: dict[str, Any]) -> None:
    await client.create(NODES, "", node({"podCIDR": "10.244.1.0/24"}))
    with pytest.raises(Invalid) as refused:
        await client.patch(NODES, "", "n", {"spec": change})
    assert refused.value.message == FORBIDDEN
    current = await client.get(NODES, "", "n")
    assert current["spec"]["podCIDR"] == "10.244.1.0/24"
    assert current["spec"]["podCIDRs"] == ["10.244.1.0/24"]


async def test_pod_cidr_may_not_change_by_update(client: ApiClient) -> None:
    created = await client.create(NODES, "", node({"podCIDR": "10.244.1.0/24"}))
    created["spec"]["podCIDR"] = "10.244.9.0/24"  # podCIDRs left as it was: podCIDR wins
    with pytest.raises(Invalid) as refused:
        await client.update(NODES, created)
    assert refused.value.message == FORBIDDEN


async def test_pod_cidrs_alone_yield_to_pod_cidr(client: ApiClient) -> None:
    """A patch of podCIDRs alone leaves the object with both fields differing, and podCIDR is
    authoritative then, as in Kubernetes: nothing changes."""
    await client.create(NODES, "", node({"podCIDR": "10.244.1.0/24"}))
    done = await client.patch(NODES, "", "n", {"spec": {"podCIDRs": ["10.244.9.0/24"]}})
    assert done["spec"]["podCIDR"] == "10.244.1.0/24"
    assert done["spec"]["podCIDRs"] == ["10.244.1.0/24"]
