"""Leader election through a coordination.k8s.io Lease, for controllers on an external etcd.

With the embedded store the Raft leader leads (``RaftStore.is_leader``). With etcd there is no
Raft role to ask, so controllers do what kube-controller-manager does: hold the Lease
``kube-system/corral-controller``. ``LeaseElector.run()`` renews it every ``RENEW_SECONDS``
while holding it and takes it over once it has seen no renewal for ``LEASE_SECONDS`` (on its
own clock);
every write is a compare-and-swap on the Lease's resourceVersion, so two candidates never both
win. ``is_leader()`` is true only while the last renewal is younger than the lease minus a
margin, so a leader cut off from the API stops leading before anyone else may take over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..client import LEASES, AlreadyExists, ApiClient, ApiError, Conflict, NotFound
from ..client.timestamps import format_micro_time

log = logging.getLogger(__name__)

LEASE_NAME = "corral-controller"
LEASE_NAMESPACE = "kube-system"
#: kube-controller-manager's defaults: lease 15 s, renew every 2 s.
LEASE_SECONDS = 15
RENEW_SECONDS = 2.0
#: Stop leading this long before the lease could be taken over.
SAFETY_MARGIN_SECONDS = 3.0



def _utcnow() -> datetime:
    return datetime.now(UTC)


class LeaseElector:
    def __init__(self, client: ApiClient, identity: str, *, name: str = LEASE_NAME,
                 namespace: str = LEASE_NAMESPACE, lease_seconds: int = LEASE_SECONDS,
                 renew_seconds: float = RENEW_SECONDS,
                 clock: Callable[[], datetime] = _utcnow,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self.identity = identity
        self._name, self._namespace = name, namespace
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._renewed_at: float | None = None
        #: The lease's (holder, renewTime) as last seen, and our monotonic clock then.
        self._observed: tuple[Any, Any] | None = None
        self._observed_at = 0.0

    def is_leader(self) -> bool:
        if self._renewed_at is None:
            return False
        age = self._monotonic() - self._renewed_at
        return age < self._lease_seconds - SAFETY_MARGIN_SECONDS

    async def run(self) -> None:
        """Acquire and renew until cancelled."""
        while True:
            # Leadership counts from before the request: a slow answer must not stretch it.
            start = self._monotonic()
            try:
                self._renewed_at = start if await self.try_acquire_or_renew() else None
            except ApiError as exc:
                log.info("lease %s/%s: %s", self._namespace, self._name, exc.message)
            await asyncio.sleep(self._renew_seconds)

    async def try_acquire_or_renew(self) -> bool:
        """One round: True if this candidate holds the lease afterwards."""
        now = self._clock()
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self._lease_seconds,
                "renewTime": format_micro_time(now)}
        try:
            lease = await self._client.get(LEASES, self._namespace, self._name)
        except NotFound:
            try:
                await self._client.create(LEASES, self._namespace, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self._name, "namespace": self._namespace},
                    "spec": {**spec, "acquireTime": spec["renewTime"], "leaseTransitions": 0}})
                return True
            except AlreadyExists:
                return False
        current = lease.get("spec") or {}
        record = (current.get("holderIdentity"), current.get("renewTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, self._monotonic()
        held_by_us = current.get("holderIdentity") == self.identity
        if not held_by_us and not self._expired(current):
            return False
        new = {**lease, "spec": {**current, **spec}}
        if not held_by_us:
            new["spec"]["acquireTime"] = spec["renewTime"]
            new["spec"]["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        try:
            await self._client.update(LEASES, new)  # carries the resourceVersion read: a CAS
        except Conflict:
            return False
        if not held_by_us:
            log.warning("acquired lease %s/%s as %s", self._namespace, self._name,
                        self.identity)
        return True

    def _expired(self, spec: dict[str, Any]) -> bool:
        """The holder has not renewed for a lease duration, measured on our own clock from
        when we saw its last renewal (as client-go does): clock skew between controllers
        cannot make a live lease look expired."""
        if not spec.get("holderIdentity"):
            return True
        duration = int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
        return self._monotonic() - self._observed_at > duration
