"""The ``default/kubernetes`` Endpoints kept by every API server (its Lease, then the live set),
against an in-process API server; the address rule as a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.client import ENDPOINTS, LEASES, ApiClient
from controlplane.controllers.apiserverendpoints import (
    IDENTITY_LABEL,
    NAMESPACE,
    ApiServerEndpoints,
    advertise_address,
    live_addresses,
)

START = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


async def endpoints(client: ApiClient) -> dict:
    return await client.get(ENDPOINTS, "default", "kubernetes")


def ips(ep: dict) -> list[tuple[str, int]]:
    return [(a["ip"], s["ports"][0]["port"]) for s in ep["subsets"] for a in s["addresses"]]


@pytest.mark.parametrize(("listen", "explicit", "expected"), [
    ("198.18.0.11", None, "198.18.0.11"),
    ("127.0.0.1", None, None),
    ("0.0.0.0", None, None),
    ("::", None, None),
    ("localhost", None, None),
    ("127.0.0.1", "10.0.0.5", "10.0.0.5"),
])
def test_advertise_address(listen: str, explicit: str | None, expected: str | None) -> None:
    assert advertise_address(listen, explicit) == expected


async def test_every_live_api_server_is_an_endpoint_and_leaves(client: ApiClient) -> None:
    clock = Clock()
    a = ApiServerEndpoints(client, "198.18.0.12", 6443, clock=clock)
    b = ApiServerEndpoints(client, "198.18.0.11", 6443, clock=clock)
    c = ApiServerEndpoints(client, "198.18.0.13", 7443, clock=clock)
    for server in (a, b, c):
        await server.sync()
    ep = await endpoints(client)
    assert ips(ep) == [("198.18.0.11", 6443), ("198.18.0.12", 6443), ("198.18.0.13", 7443)]
    assert [p["name"] for s in ep["subsets"] for p in s["ports"]] == ["https", "https"]
    leases = (await client.list(LEASES, NAMESPACE,
                                label_selector=f"{IDENTITY_LABEL}=kube-apiserver")).items
    assert len(leases) == 3

    version = ep["metadata"]["resourceVersion"]
    await a.sync()  # nothing changed: no write
    assert (await endpoints(client))["metadata"]["resourceVersion"] == version

    await c.withdraw()  # a clean stop
    assert ips(await endpoints(client)) == [("198.18.0.11", 6443), ("198.18.0.12", 6443)]

    clock.now = START + timedelta(seconds=16)  # b died 16 s ago; a renews now
    await a.sync()
    assert ips(await endpoints(client)) == [("198.18.0.12", 6443)]

    await b.sync()  # b back: in again
    assert ips(await endpoints(client)) == [("198.18.0.11", 6443), ("198.18.0.12", 6443)]


def test_live_addresses_skip_expired_and_malformed_leases() -> None:
    def lease(holder: object, renewed: str, duration: int = 15) -> dict:
        return {"spec": {"holderIdentity": holder, "renewTime": renewed,
                         "leaseDurationSeconds": duration}}

    now = START + timedelta(seconds=10)
    fresh = "2026-11-26T12:00:00.000000Z"
    assert live_addresses([
        lease("10.0.0.2:6443", fresh), lease("10.0.0.1:6443", fresh),
        lease("10.0.0.3:6443", fresh, duration=5),  # expired 5 s ago
        lease("not-an-ip:6443", fresh), lease("10.0.0.4", fresh), lease(None, fresh),
        lease("10.0.0.5:6443", "yesterday"),
    ], now) == [("10.0.0.1", 6443), ("10.0.0.2", 6443)]
