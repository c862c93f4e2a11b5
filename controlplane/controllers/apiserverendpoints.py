"""The ``default/kubernetes`` Endpoints: every live API server's address, so the ``kubernetes``
Service (10.96.0.1:443) leads somewhere from inside a pod, as kube-apiserver's "lease" endpoint
reconciler does.

Unlike the other control loops this runs on every controller, leader or not: each API server
vouches for itself. Every ``RENEW_SECONDS`` it renews its Lease ``kube-system/<LEASE_PREFIX><hash
of its address>`` (label ``apiserver.kubernetes.io/identity=kube-apiserver``, holderIdentity
``ip:port``), reads all such Leases, and writes the Endpoints when the set of live ones (renewed
within their ``leaseDurationSeconds``, on the reader's wall clock) differs from what is there: a
compare-and-swap on resourceVersion, so racing API servers converge instead of overwriting each
other. A controller that stops cleanly removes itself (``withdraw``); one that dies drops out
once its Lease expires (``LEASE_SECONDS``), as kube-apiserver's master leases do.

Only controllers with an address other pods can reach take part: ``--advertise-address``, else
the API's listen address when it is one specific, non-loopback IP.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..client import (
    ENDPOINTS,
    LEASES,
    AlreadyExists,
    ApiClient,
    ApiError,
    Conflict,
    NotFound,
)
from ..client.timestamps import format_micro_time, parse_time

log = logging.getLogger(__name__)

Obj = dict[str, Any]

NAMESPACE = "kube-system"
LEASE_PREFIX = "corral-apiserver-"
IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
IDENTITY = "kube-apiserver"
SERVICE_NAMESPACE, SERVICE_NAME = "default", "kubernetes"
#: kube-apiserver's master lease TTL and reconcile interval.
LEASE_SECONDS = 15
RENEW_SECONDS = 10.0
#: Compare-and-swap rounds on the Endpoints per sync before waiting for the next.
CONFLICT_ATTEMPTS = 3


def _utcnow() -> datetime:
    return datetime.now(UTC)


def advertise_address(listen_host: str, explicit: str | None) -> str | None:
    """The address pods reach this API server at, or None: ``explicit`` if given, else the
    listen host when it is one specific, non-loopback IP."""
    if explicit:
        return explicit
    try:
        ip = ipaddress.ip_address(listen_host)
    except ValueError:
        return None
    return None if ip.is_loopback or ip.is_unspecified else str(ip)


def lease_name(address: str, port: int) -> str:
    return LEASE_PREFIX + hashlib.sha256(f"{address}:{port}".encode()).hexdigest()[:16]


def live_addresses(leases: list[Obj], now: datetime) -> list[tuple[str, int]]:
    """(ip, port) of the API servers whose Lease is unexpired at ``now``, sorted."""
    live = set()
    for lease in leases:
        spec = lease.get("spec") or {}
        holder, renewed = spec.get("holderIdentity"), spec.get("renewTime")
        try:
            ip, port = str(holder).rsplit(":", 1)
            ipaddress.ip_address(ip.strip("[]"))
            duration = int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
        except ValueError:
            continue
        at = parse_time(renewed)
        if at is not None and now.timestamp() - at <= duration:
            live.add((ip.strip("[]"), int(port)))
    return sorted(live, key=lambda a: (ipaddress.ip_address(a[0]), a[1]))


def desired_subsets(addresses: list[tuple[str, int]]) -> list[Obj]:
    """One subset per port (API servers may listen on different ones), addresses sorted."""
    by_port: dict[int, list[str]] = {}
    for ip, port in addresses:
        by_port.setdefault(port, []).append(ip)
    return [{"addresses": [{"ip": ip} for ip in ips],
             "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
            for port, ips in sorted(by_port.items())]


class ApiServerEndpoints:
    """This API server's part in ``default/kubernetes``; ``run()`` until cancelled."""

    def __init__(self, client: ApiClient, address: str, port: int, *,
                 renew_seconds: float = RENEW_SECONDS, lease_seconds: int = LEASE_SECONDS,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self._client = client
        self.address, self.port = address, port
        self._renew_seconds = renew_seconds
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._name = lease_name(address, port)

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except ApiError as exc:  # no quorum for a moment: the next round retries
                log.info("kubernetes endpoints: %s", exc.message)
            await asyncio.sleep(self._renew_seconds)

    async def sync(self) -> None:
        """Renew our Lease, then make the Endpoints list the live API servers."""
        await self._renew()
        await self._reconcile()

    async def withdraw(self) -> None:
        """Leave: our Lease gone and our address out of the Endpoints."""
        try:
            await self._client.delete(LEASES, NAMESPACE, self._name)
        except NotFound:
            pass
        await self._reconcile()

    async def _renew(self) -> None:
        spec = {"holderIdentity": f"{self.address}:{self.port}",
                "leaseDurationSeconds": self._lease_seconds,
                "renewTime": format_micro_time(self._clock())}
        try:
            lease = await self._client.get(LEASES, NAMESPACE, self._name)
        except NotFound:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self._name, "namespace": NAMESPACE,
                                 "labels": {IDENTITY_LABEL: IDENTITY}},
                    "spec": spec}
            try:
                await self._client.create(LEASES, NAMESPACE, body)
            except AlreadyExists:
                pass  # a restart of ours raced itself: renewed next round
            return
        try:
            await self._client.update(LEASES, {**lease, "spec": {**lease.get("spec", {}),
                                                                 **spec}})
        except Conflict:
            pass  # only we write it: a stale read of our own; renewed next round

    async def _reconcile(self) -> None:
        """Write the Endpoints from the live Leases; again at once when another API server
        wrote in between (they all converge on the same list)."""
        for _ in range(CONFLICT_ATTEMPTS):
            if await self._write_endpoints():
                return

    async def _write_endpoints(self) -> bool:
        """One compare-and-swap round: False when another writer got there first."""
        leases = (await self._client.list(LEASES, NAMESPACE,
                                          label_selector=f"{IDENTITY_LABEL}={IDENTITY}")).items
        addresses = live_addresses(leases, self._clock())
        subsets = desired_subsets(addresses)
        try:
            current = await self._client.get(ENDPOINTS, SERVICE_NAMESPACE, SERVICE_NAME)
        except NotFound:
            if not subsets:
                return True
            try:
                await self._client.create(ENDPOINTS, SERVICE_NAMESPACE, {
                    "apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE,
                                 "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                    "subsets": subsets})
            except AlreadyExists:
                return False
            return True
        if (current.get("subsets") or []) == subsets:
            return True
        try:
            await self._client.update(ENDPOINTS, {**current, "subsets": subsets})
        except Conflict:
            return False
        log.info("kubernetes endpoints: %s", ", ".join(f"{ip}:{p}" for ip, p in addresses))
        return True
