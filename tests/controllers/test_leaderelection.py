"""Lease-based leader election: one holder at a time, takeover only after expiry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from controlplane.client import LEASES, ApiClient
from controlplane.controllers.leaderelection import LeaseElector


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


async def test_one_holder_and_takeover_after_expiry(client: ApiClient) -> None:
    clock = Clock()
    a = LeaseElector(client, "a", clock=lambda: clock.now, monotonic=lambda: clock.mono)
    b = LeaseElector(client, "b", clock=lambda: clock.now, monotonic=lambda: clock.mono)
    assert await a.try_acquire_or_renew() is True
    assert await b.try_acquire_or_renew() is False
    clock.advance(10)
    assert await a.try_acquire_or_renew() is True   # renewed
    clock.advance(5)
    assert await b.try_acquire_or_renew() is False  # b sees the renewal now
    clock.advance(14)
    assert await b.try_acquire_or_renew() is False  # 14 s since b saw it move: not expired
    clock.advance(2)
    assert await b.try_acquire_or_renew() is True   # 16 s > 15 s lease: taken over
    assert await a.try_acquire_or_renew() is False
    lease = await client.get(LEASES, "kube-system", "corral-controller")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1


async def test_is_leader_expires_before_the_lease_does(client: ApiClient) -> None:
    clock = Clock()
    a = LeaseElector(client, "a", clock=lambda: clock.now, monotonic=lambda: clock.mono)
    assert not a.is_leader()
    a._renewed_at = clock.mono
    assert a.is_leader()
    clock.advance(12.5)
    assert not a.is_leader()  # 15 s lease minus the 3 s margin
