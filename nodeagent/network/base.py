"""The PodNetwork boundary: what the container runtime asks of the node's Pod network, shaped
like CNI's ADD and DEL as the kubelet's CRI runtime calls them when it starts and stops a pod
sandbox.

The runtime creates the sandbox (and with it a network namespace), then calls ``attach`` with
the namespace's path; the plugin gives that namespace an ``eth0`` with an address from the
node's podCIDR and returns the address, which becomes ``status.podIP``. On stop the runtime calls
``detach``, also when the sandbox's process is already gone and its namespace with it. Both are
idempotent, since the agent retries after crashes. The addresses held are kept by the plugin
(``ip_of``), so a restarted agent knows every Pod's IP without asking the runtime.

``BridgeNetwork`` (``nodeagent.network.bridge``) is the real plugin; ``FakePodNetwork`` below
is the in-memory one for tests and hollow nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Protocol

from nodeagent.network.addresses import parse_pod_cidr, pick_next


class PodNetworkError(Exception):
    """Attaching or detaching failed; the one-line message is shown in the pod's Events."""


class PodNetwork(Protocol):
    async def attach(self, sandbox_id: str, netns_path: str) -> str:
        """Give the sandbox whose network namespace is at ``netns_path`` (e.g.
        ``/proc/<pid>/ns/net``) an interface ``eth0`` with an IP from the node's podCIDR and a
        default route via the bridge; returns the IP. Idempotent: attaching an attached sandbox
        returns its IP."""
        ...

    async def detach(self, sandbox_id: str, netns_path: str | None) -> None:
        """Remove the sandbox's interface (if the netns still exists) and release its IP.
        Idempotent; works after the netns is gone (the process died)."""
        ...

    def ip_of(self, sandbox_id: str) -> str | None:
        """The IP held by the sandbox (from IPAM state, which survives an agent restart)."""
        ...


@dataclass
class FakePodNetwork:
    """In-memory PodNetwork: allocates from ``pod_cidr`` as host-local would (round-robin,
    gateway and broadcast skipped), touches no namespace, and records every call in ``calls``
    as ``("attach", sandbox_id, netns_path)`` / ``("detach", sandbox_id, netns_path)``.

    ``fail_next_attach(message)`` makes the next attach raise PodNetworkError, leaving nothing
    allocated, as the real plugin's rollback does."""

    pod_cidr: str = "10.244.0.0/24"
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)
    _ips: dict[str, IPv4Address] = field(default_factory=dict)
    _last: IPv4Address | None = None
    _fail_message: str | None = None

    def __post_init__(self) -> None:
        self._network = parse_pod_cidr(self.pod_cidr)

    def fail_next_attach(self, message: str = "injected attach failure") -> None:
        self._fail_message = message

    async def attach(self, sandbox_id: str, netns_path: str) -> str:
        self.calls.append(("attach", sandbox_id, netns_path))
        if self._fail_message is not None:
            message, self._fail_message = self._fail_message, None
            self._ips.pop(sandbox_id, None)
            raise PodNetworkError(message)
        if sandbox_id in self._ips:
            return str(self._ips[sandbox_id])
        address = pick_next(self._network, self._ips.values(), self._last)
        if address is None:
            raise PodNetworkError(f"no free IP in {self._network}")
        self._ips[sandbox_id] = self._last = address
        return str(address)

    async def detach(self, sandbox_id: str, netns_path: str | None) -> None:
        self.calls.append(("detach", sandbox_id, netns_path))
        self._ips.pop(sandbox_id, None)

    def ip_of(self, sandbox_id: str) -> str | None:
        address = self._ips.get(sandbox_id)
        return None if address is None else str(address)

    def allocations(self) -> dict[str, str]:
        """Sandbox id -> IP of every attached sandbox."""
        return {sandbox: str(ip) for sandbox, ip in self._ips.items()}
