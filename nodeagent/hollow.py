"""Hollow nodes: simulated node agents, many per process, for tests and benchmarks (as kubemark
and KWOK do).

A ``HollowFleet`` registers its Nodes (Ready, with the allocatable it is given), renews one Lease
per node in ``kube-node-lease`` as a real agent does, and plays the kubelet for Pods bound to
its nodes: a new one is reported Running and Ready, one being deleted is removed (grace 0, as
the kubelet does once its containers stopped). One informer on all Pods serves every node of
the fleet, so a thousand nodes cost one watch. Nothing runs: no containers, no network.

Lease renewals are spread over the renewal period, each node at its own phase (node i of N at
i/N of the period), as real kubelets started at different moments are: a thousand nodes renewing
every 10 s make a steady 100 writes/s, not a burst of a thousand every 10 s.

Knobs for benchmarks: ``mark_running=False`` leaves bound pods Pending (no status write per
pod: kube-scheduler's scheduler_perf has no kubelets; deletions are still finished), and
``pods`` is the fleet's pod informer, to which a caller may add its own handlers rather than
open a second pod watch. ``registered`` is set once every node has been created.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from controlplane.client import (
    NODES,
    PODS,
    AlreadyExists,
    ApiClient,
    ApiError,
    FuncHandler,
    Informer,
    NotFound,
    WorkQueue,
    key_of,
    run_controller,
)
from nodeagent.heartbeat import RENEW_SECONDS, now_rfc3339, post_node_status, renew_lease

log = logging.getLogger(__name__)

#: Writes (registrations, renewals) a fleet has in flight at most.
RENEW_CONCURRENCY = 32

Obj = dict[str, Any]


def node_object(name: str, *, cpu: str = "4", memory: str = "16Gi", pods: int = 110,
                labels: dict[str, str] | None = None) -> Obj:
    """A Ready Node as an agent registers it."""
    capacity = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    now = now_rfc3339()
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                              "corral.dev/hollow": "true", **(labels or {})}},
        "status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "HollowNodeReady",
                            "message": "hollow node is posting ready status",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.31.0-hollow",
                         "containerRuntimeVersion": "hollow://0", "osImage": "hollow",
                         "kernelVersion": "0", "operatingSystem": "linux",
                         "architecture": "amd64"},
        },
    }


class HollowFleet:
    def __init__(self, client: ApiClient, names: list[str], *,
                 node: Callable[[str], Obj] = node_object, workers: int = 4,
                 renew_seconds: float = RENEW_SECONDS, mark_running: bool = True,
                 max_concurrent_writes: int = RENEW_CONCURRENCY) -> None:
        self._client = client
        self.names = names
        self._mine = set(names)
        self._node = node
        self._workers = workers
        self._renew_seconds = renew_seconds
        self._mark_running = mark_running
        self._writes = asyncio.Semaphore(max_concurrent_writes)
        self._queue = WorkQueue()
        self._pods = Informer(client, PODS)
        self._pods.add_handler(FuncHandler(self._seen, lambda old, new: self._seen(new)))
        #: Nodes whose last lease renewal failed: they post Ready again once one gets through.
        self._missed: set[str] = set()
        #: Set once every node of the fleet has been created (or found and reported ready).
        self.registered = asyncio.Event()

    @property
    def pods(self) -> Informer:
        """The fleet's informer of all Pods (add handlers; do not mutate what it hands out)."""
        return self._pods

    async def run(self) -> None:
        """Register, then heartbeat and play the kubelet until cancelled."""
        await asyncio.gather(*(self._bounded(self._register, name) for name in self.names))
        # A kubelet holds its Lease from the start; the spread-out renewals begin a period on.
        await asyncio.gather(*(self._renew_one(name, self._missed) for name in self.names))
        self.registered.set()
        leases = asyncio.create_task(self._renew_leases(), name="hollow node leases")
        try:
            await run_controller("hollow kubelet", [self._pods], self._queue, self.reconcile,
                                 workers=self._workers)
        finally:
            leases.cancel()
            await asyncio.gather(leases, return_exceptions=True)

    async def _register(self, name: str) -> None:
        try:
            await self._client.create(NODES, "", self._node(name))
        except AlreadyExists:
            await self._post_ready(name)  # a restarted agent reports itself ready again

    async def _post_ready(self, name: str) -> None:
        status = self._node(name)["status"]
        await post_node_status(self._client, name, {"conditions": status["conditions"]})

    async def _bounded(self, write: Callable[[str], Awaitable[None]], name: str) -> None:
        async with self._writes:
            await write(name)

    async def _renew_leases(self) -> None:
        """Renew each node's lease once a period, node i of N at i/N of it (from one period
        after registration, which took the first lease); a node that
        missed renewals reports Ready again once it gets through, as a kubelet posts its status
        after an outage. A renewal still in flight when its node's next turn comes is not
        doubled: that turn is skipped."""
        if not self.names:
            return
        missed = self._missed
        in_flight: dict[str, asyncio.Task[None]] = {}
        step = self._renew_seconds / max(len(self.names), 1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            for turn in itertools.count(len(self.names)):
                name = self.names[turn % len(self.names)]
                delay = start + turn * step - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if name not in in_flight:
                    in_flight[name] = task = loop.create_task(
                        self._renew_one(name, missed), name=f"hollow node {name} lease")
                    task.add_done_callback(lambda _t, n=name: in_flight.pop(n, None))
        finally:
            for task in list(in_flight.values()):
                task.cancel()
            await asyncio.gather(*in_flight.values(), return_exceptions=True)

    async def _renew_one(self, name: str, missed: set[str]) -> None:
        try:
            await self._bounded(self._renew, name)
        except Exception as exc:  # noqa: BLE001 - a missed renewal, told once per outage
            if name not in missed:
                log.warning("hollow node %s: lease not renewed: %s", name, exc)
            missed.add(name)
            return
        if name in missed:
            try:
                await self._bounded(self._post_ready, name)
                missed.discard(name)
            except ApiError as exc:
                log.warning("hollow node %s: status not posted: %s", name, exc.message)

    async def _renew(self, name: str) -> None:
        await renew_lease(self._client, name)

    def _seen(self, pod: Obj) -> None:
        if not self._mark_running and not pod["metadata"].get("deletionTimestamp"):
            return  # nothing to report for it
        if (pod.get("spec") or {}).get("nodeName") in self._mine:
            self._queue.add(key_of(pod))

    async def reconcile(self, key: str) -> None:
        pod = self._pods.get(key)
        if pod is None:
            return
        meta, status = pod["metadata"], pod.get("status") or {}
        try:
            if meta.get("deletionTimestamp"):
                await self._client.delete(PODS, meta["namespace"], meta["name"],
                                          grace_period=0, uid=meta.get("uid"))
            elif self._mark_running and status.get("phase") in (None, "Pending"):
                await self._client.patch(PODS, meta["namespace"], meta["name"],
                                         {"status": _running(pod)}, patch_type="merge",
                                         subresource="status")
        except NotFound:
            return
        except ApiError as exc:
            log.info("hollow kubelet: %s: %s", key, exc.message)
            raise


def _running(pod: Obj) -> Obj:
    now = now_rfc3339()
    containers = (pod.get("spec") or {}).get("containers") or ()
    return {
        "phase": "Running", "startTime": now,
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                       for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
        "containerStatuses": [{"name": c.get("name"), "image": c.get("image"), "imageID": "",
                               "ready": True, "started": True, "restartCount": 0,
                               "state": {"running": {"startedAt": now}}} for c in containers],
    }
