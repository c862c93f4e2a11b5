"""The Service proxy of a node: kube-proxy's iptables mode in the agent.

Two informers (Services and Endpoints, all namespaces) mark a change; one sync loop waits
``debounce`` seconds after a change so a burst (a rollout moving many endpoints) is one sync,
builds the rules from the informers' caches (``rules.build``, pure) and hands them to an
``Applier`` (``IptablesApplier`` on a real node; ``RecordingApplier`` in tests). The loop is
the only caller of ``apply``, so there is never more than one apply at a time. Every
``resync`` seconds the rules are written again even without changes (``force``), which repairs
rules someone else flushed; a failed apply is retried after ``retry`` seconds.

Programming latency, as kube-proxy's ``network_programming_duration_seconds`` SLI: the
Endpoints controller stamps each Endpoints it writes with the time of the change that caused
the write (``TRIGGER_TIME_ANNOTATION``); the Endpoints informer's handler keeps the new stamps
(ones older than this Proxier are from before it started and are ignored, as kube-proxy's
tracker does), and after a successful apply each stamp whose change that apply included gives
one sample, ``clock() - stamp``, in ``programming_latencies`` (the latest ``LATENCY_SAMPLES``).
Both clocks are wall clocks, so the figure includes any skew between the controller's host and
this one.

Wiring it into the agent (``nodeagent/agent.py``), next to the overlay task in ``Agent.run``::

    from nodeagent.proxy import IptablesApplier, Proxier

    proxier = Proxier(self.client, IptablesApplier(host_netns=<the bridge's host_netns>),
                      cluster_cidr=<cluster CIDR, e.g. "10.244.0.0/16">,
                      node_ips=[self.config.node_ip])   # or None: every local address
    tasks.append(spawn(proxier.run(), name="agent service proxy"))

and ``await proxier.applier.teardown()`` where the bridge is torn down (``corral lab down``,
tests). Only where the agent owns the host's iptables (the bridge network): the process
runtime without a bridge has no ClusterIP routing. Packets to ClusterIPs need a route out of
the host (a default route, or ``10.96.0.0/12`` onto the bridge) to reach the nat OUTPUT hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from controlplane.client import (
    ENDPOINTS,
    SERVICES,
    ApiClient,
    FuncHandler,
    InformerFactory,
    key_of,
)
from controlplane.client.tasks import spawn
from controlplane.client.timestamps import parse_time
from nodeagent.proxy.rules import ProxyRules, build

log = logging.getLogger(__name__)

#: A change is acted on this long after it came: a burst of changes is one sync.
DEBOUNCE_SECONDS = 0.1
#: The rules are written again this often even without changes (kube-proxy's syncPeriod).
RESYNC_SECONDS = 30.0
#: A failed apply is retried after this long.
RETRY_SECONDS = 2.0
#: Kubernetes' v1.EndpointsLastChangeTriggerTime, which the Endpoints controller
#: (``controlplane.controllers.endpoints``, not importable from here) writes: RFC 3339.
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
#: Programming latencies kept (the latest ones).
LATENCY_SAMPLES = 10_000

Obj = dict[str, Any]


def trigger_time(endpoints: Obj | None) -> float | None:
    """The Endpoints' trigger-time annotation as seconds since the epoch; None when absent or
    not RFC 3339 with a zone."""
    annotations = ((endpoints or {}).get("metadata") or {}).get("annotations") or {}
    return parse_time(annotations.get(TRIGGER_TIME_ANNOTATION))


class Applier(Protocol):
    """Writes rules into the host (``IptablesApplier``); raises an Exception with a one-line
    message on failure. Returns whether anything was written."""

    async def apply(self, rules: ProxyRules, *, force: bool = False) -> bool: ...

    async def teardown(self) -> None: ...


class RecordingApplier:
    """An Applier that keeps what it was given: the in-memory fake for tests and hollow
    nodes."""

    def __init__(self) -> None:
        self.applied: list[ProxyRules] = []
        self.calls = 0
        self.fail: Exception | None = None

    async def apply(self, rules: ProxyRules, *, force: bool = False) -> bool:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        if not force and self.applied and self.applied[-1] == rules:
            return False
        self.applied.append(rules)
        return True

    async def teardown(self) -> None:
        self.applied.clear()


class Proxier:
    """One node's Service proxy; ``run()`` until cancelled."""

    def __init__(self, client: ApiClient, applier: Applier, *,
                 cluster_cidr: str | None = None,
                 node_ips: Sequence[str] | None = None,
                 debounce: float = DEBOUNCE_SECONDS,
                 resync: float = RESYNC_SECONDS,
                 retry: float = RETRY_SECONDS,
                 clock: Callable[[], float] = time.time,
                 informers: InformerFactory | None = None) -> None:
        self.applier = applier
        self.cluster_cidr = cluster_cidr
        self.node_ips = list(node_ips) if node_ips is not None else None
        self.debounce = debounce
        self.resync = resync
        self.retry = retry
        # The agent's shared informers when given (one watch per resource per node).
        informers = informers or InformerFactory(client)
        self.services = informers.informer(SERVICES)
        self.endpoints = informers.informer(ENDPOINTS)
        self.clock = clock
        self._changed = asyncio.Event()
        self.services.add_handler(FuncHandler(self._mark, lambda _o, _n: self._mark(None),
                                              self._mark))
        self.endpoints.add_handler(FuncHandler(lambda new: self._endpoints_changed(None, new),
                                               self._endpoints_changed, self._mark))
        #: Set after the first successful apply (the node proxies Services from then on).
        self.synced = asyncio.Event()
        self.syncs = 0
        #: Seconds from an Endpoints change (its trigger time) to its rules applied.
        self.programming_latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._started = clock()
        #: Endpoints key -> trigger times of changes not yet applied.
        self._triggers: dict[str, list[float]] = {}

    def _mark(self, _obj: Any) -> None:
        self._changed.set()

    def _endpoints_changed(self, old: Obj | None, new: Obj) -> None:
        stamp = trigger_time(new)
        if stamp is not None and stamp >= self._started and stamp != trigger_time(old):
            self._triggers.setdefault(key_of(new), []).append(stamp)
        self._changed.set()

    def rules(self) -> ProxyRules:
        """The rules for the informers' caches now."""
        return build(self.services.list(), self.endpoints.list(),
                     cluster_cidr=self.cluster_cidr, node_ips=self.node_ips)

    async def sync(self, *, force: bool = False) -> bool:
        """Build and apply once; True if the applier wrote anything."""
        triggers, self._triggers = self._triggers, {}
        try:
            wrote = await self.applier.apply(self.rules(), force=force)
        except BaseException:
            for key, stamps in triggers.items():  # still to be applied
                self._triggers[key] = stamps + self._triggers.get(key, [])
            raise
        self.syncs += 1
        now = self.clock()
        for key, stamps in triggers.items():
            for stamp in stamps:
                self.programming_latencies.append(now - stamp)
                log.debug("proxy: endpoints %s programmed %.3f s after their change", key,
                          now - stamp)
        if wrote:
            log.info("proxy: rules applied (%d services, %d endpoints)",
                     len(self.services.keys()), len(self.endpoints.keys()))
        return wrote

    async def run(self) -> None:
        tasks = [spawn(self.services.run(), name="proxy services informer"),
                 spawn(self.endpoints.run(), name="proxy endpoints informer")]
        try:
            await self.services.synced.wait()
            await self.endpoints.synced.wait()
            force = True
            loop = asyncio.get_running_loop()
            last_forced = loop.time()
            while True:
                await asyncio.sleep(self.debounce)
                self._changed.clear()
                try:
                    await self.sync(force=force)
                except Exception as exc:  # noqa: BLE001 - retried; the message says why
                    log.error("proxy: rules not applied: %s", exc)
                    force = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), self.retry)
                    continue
                if force:
                    last_forced = loop.time()
                self.synced.set()
                wait = max(0.0, last_forced + self.resync - loop.time())
                try:
                    await asyncio.wait_for(self._changed.wait(), wait)
                    force = False
                except TimeoutError:
                    force = True
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
