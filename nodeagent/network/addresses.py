"""Pod CIDR arithmetic, pure: which addresses of a node's podCIDR a Pod may get, and which one
to hand out next.

A podCIDR such as 10.244.1.0/24 gives its first host (.1) to the bridge as the Pods' gateway;
the network address and the broadcast address are never assigned, so Pods get .2 to .254. The
next address is chosen round-robin after the last one handed out (host-local's
``lastReserved``), so an address freed a moment ago is not reused at once: a late packet or a
stale Endpoints entry for the old Pod does not reach the new one.

No I/O here: ``nodeagent.network.ipam`` keeps the allocations on disk, ``FakePodNetwork`` keeps
them in memory, both ask this module what to allocate. IPv4 only, as the cluster is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from ipaddress import IPv4Address, IPv4Network

#: The largest prefix that still leaves a gateway and one Pod address.
MAX_PREFIX_LEN = 30


def parse_pod_cidr(cidr: str) -> IPv4Network:
    """The network of ``cidr`` (host bits must be zero); ValueError with a readable reason."""
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise ValueError(f"invalid podCIDR {cidr!r}: {exc}") from None
    if network.version != 4:
        raise ValueError(f"invalid podCIDR {cidr!r}: only IPv4 is supported")
    assert isinstance(network, IPv4Network)
    if network.prefixlen > MAX_PREFIX_LEN:
        raise ValueError(f"invalid podCIDR {cidr!r}: a /{network.prefixlen} has no room for Pods")
    return network


def gateway_of(network: IPv4Network) -> IPv4Address:
    """The bridge's address: the first host of the network."""
    return network.network_address + 1


def is_assignable(network: IPv4Network, address: IPv4Address) -> bool:
    """Whether ``address`` may be given to a Pod: inside, and not network, gateway or broadcast."""
    return (
        address in network
        and address != network.network_address
        and address != gateway_of(network)
        and address != network.broadcast_address
    )


def pick_next(
    network: IPv4Network,
    in_use: Collection[IPv4Address],
    last: IPv4Address | None = None,
) -> IPv4Address | None:
    """The first assignable address after ``last`` (wrapping around) not in ``in_use``; None if
    the network is full. A ``last`` outside the network starts from the beginning."""
    first = int(gateway_of(network)) + 1
    end = int(network.broadcast_address)  # exclusive
    size = end - first
    start = first
    if last is not None and last in network and first <= int(last) < end:
        start = int(last) + 1
    used = {int(a) for a in in_use}
    for step in range(size):
        candidate = first + (start - first + step) % size
        if candidate not in used:
            return IPv4Address(candidate)
    return None
