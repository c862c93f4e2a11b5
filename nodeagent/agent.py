"""The node agent: the kubelet of Corral, talking only to the API.

What it does, in the order ``run`` starts it:

1. Registers its Node (capacity from the host, addresses, labels and taints from its config,
   the port of its server in ``daemonEndpoints``) or, when the Node exists (a restart), posts its
   status again. Then it heartbeats: its Lease every 10 s (``heartbeat``), and the Ready
   condition again whenever a renewal gets through after failures.
2. Waits for the node's ``podCIDR`` when its runtime needs one (the pod network), then builds
   the runtime through ``runtime_factory``: the composition root decides Docker or processes,
   bridge or not.
3. Watches the Pods bound to it (``fieldSelector=spec.nodeName=<node>``, failing over between
   controllers like any client) into a work queue; ``reconcile(key)`` syncs one pod through the
   ``PodWorker`` and patches its status when it changed. Pods being deleted are stopped
   (grace period honoured) in a task of their own and then deleted for good (grace 0, uid
   precondition), as the kubelet finishes a graceful deletion.
4. Relists the runtime every second (the kubelet's PLEG): a pod whose containers changed state
   (a crash, a kill from outside) is queued at once; runtime objects of no pod it knows (a pod
   force-deleted, or deleted while the agent was down) are removed. Every pod is also resynced
   every ``sync_period``.
5. With an overlay (``--overlay``; ``corral lab``), brings up the node's WireGuard interface,
   publishes its public key and endpoint as annotations on its Node, and keeps one peer per
   other node from a Node informer (``_run_overlay``: a loop of its own, debounced, apart from
   the pod sync).
6. With a Service proxy (``--service-proxy``; ``corral lab``), runs it (``nodeagent.proxy``:
   iptables rules from the Services and Endpoints) as a task of its own once the runtime (and
   its bridge) exists, and beside it the LoadBalancer IP announcer
   (``nodeagent.proxy.announce``: the IPs this node is elected for, held and announced on its
   network). With cluster DNS (``--cluster-dns``, which needs the bridge), serves
   DNS on the bridge's gateway (``nodeagent.dns.node.NodeDns``) before any pod starts, and
   every sandbox's resolv.conf names it (by the pod's ``dnsPolicy``).

The agent keeps no state of its own across restarts: labels on runtime objects tell which pod,
container, attempt and spec each one is, so a restarted agent adopts what runs (nothing is
restarted) and reports the same status. While the control plane is unreachable the pods keep
running; the informer and the status writes retry and the status converges when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from controlplane.client import (
    CONFIGMAPS,
    NODES,
    PODS,
    SECRETS,
    SERVICES,
    AlreadyExists,
    ApiClient,
    ApiError,
    Conflict,
    FuncHandler,
    Informer,
    InformerFactory,
    NotFound,
    Requeue,
    Unavailable,
    WorkQueue,
    key_of,
    run_workers,
)
from controlplane.client.events import EventRecorder
from controlplane.client.tasks import spawn
from nodeagent.heartbeat import (
    RENEW_SECONDS,
    now_rfc3339,
    post_node_status,
    renew_lease,
)
from nodeagent.podsync import is_terminating
from nodeagent.podworker import PodWorker, grace_seconds
from nodeagent.probes import ProbeEvent, ProbeManager
from nodeagent.runtime.base import (
    LABEL_NODE_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    DNSConfig,
    Runtime,
)
from nodeagent.volumes import VolumeManager

log = logging.getLogger(__name__)

Obj = dict[str, Any]
COMPONENT = "kubelet"
AGENT_VERSION = "v1.32.0-corral"
#: The kubelet's default --max-pods.
MAX_PODS = 110
#: The same Event (pod, reason, message) is not repeated sooner than this.
EVENT_REPEAT_SECONDS = 300.0
#: How soon a status write that found no controller is tried again.
STATUS_RETRY_SECONDS = 2.0
#: Runtime objects of an unknown pod get this long to stop before removal.
STRAY_STOP_SECONDS = 2.0

#: A Node change is acted on this long after it came, so a burst of changes is one peer sync.
OVERLAY_DEBOUNCE_SECONDS = 0.2
#: Peers are synced this often even without Node changes (and a failed sync retried sooner).
OVERLAY_RESYNC_SECONDS = 30.0
OVERLAY_RETRY_SECONDS = 2.0
#: Binding the cluster DNS server is tried this often before pods start without it.
DNS_START_TRIES = 4


class Overlay(Protocol):
    """What the agent needs of the node's overlay (``nodeagent.network.overlay.OverlayNetwork``).
    ``start`` and ``sync_peers`` raise an Exception subclass with a one-line message."""

    async def start(self, pod_cidr: str | None = None) -> Any: ...

    def annotations(self) -> dict[str, str]: ...

    async def sync_peers(self, nodes: list[Obj]) -> Any: ...


class ServiceProxy(Protocol):
    """What the agent needs of the Service proxy (``nodeagent.proxy.Proxier``): runs until
    cancelled."""

    async def run(self) -> None: ...


class ClusterDns(Protocol):
    """What the agent needs of the node's cluster DNS (``nodeagent.dns.node.NodeDns``)."""

    async def start(self, gateway_ip: str) -> None: ...

    def dns_for(self, pod: Obj) -> DNSConfig | None: ...

    async def stop(self) -> None: ...


#: Builds the runtime once the Node is registered (the Node has its podCIDR by then, when
#: ``AgentConfig.needs_pod_cidr``).
RuntimeFactory = Callable[[Obj], Awaitable[Runtime]]
#: Starts the agent's server (logs, exec) over the runtime; returns the port it listens on.
ServerStarter = Callable[[Runtime], Awaitable[int]]


@dataclass
class AgentConfig:
    node_name: str
    data_dir: Path
    #: The node's address (InternalIP): where its pods' hostIP and its server are.
    node_ip: str = "127.0.0.1"
    labels: dict[str, str] = field(default_factory=dict)
    #: Registered with the Node (only at creation, as the kubelet's --register-with-taints).
    taints: list[Obj] = field(default_factory=list)
    #: Let a failed pull use the image present on the node (labs without a registry).
    image_fallback: bool = False
    #: Wait for node IPAM's podCIDR before starting pods (the bridge network needs it).
    needs_pod_cidr: bool = False
    sync_period: float = 10.0
    relist_period: float = 1.0
    renew_period: float = RENEW_SECONDS
    workers: int = 16
    container_runtime_version: str = "docker://unknown"
    #: ``cpu``/``memory``/``pods`` to report instead of the host's (tests, labs).
    capacity: dict[str, str] | None = None


def host_capacity(data_dir: Path) -> dict[str, str]:
    """What the host offers, as the kubelet reports it: cores, memory in Ki, ephemeral storage
    of the filesystem holding ``data_dir``, and the pod limit."""
    memory_kib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory_kib = int(line.split()[1])
    except OSError:
        pass
    usage = shutil.disk_usage(data_dir if data_dir.exists() else "/")
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{memory_kib}Ki",
            "ephemeral-storage": f"{usage.total // 1024}Ki", "pods": str(MAX_PODS)}


def node_status(config: AgentConfig) -> Obj:
    """The Node status the agent posts: capacity, Ready and the pressure conditions, addresses,
    its server's port, what it runs on."""
    capacity = config.capacity or host_capacity(config.data_dir)
    now = now_rfc3339()

    def condition(kind: str, status: str, reason: str, message: str) -> Obj:
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": now}

    status: Obj = {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                      "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                      "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID",
                      "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": config.node_ip},
                      {"type": "Hostname", "address": config.node_name}],
        "nodeInfo": {"kubeletVersion": AGENT_VERSION, "kubeProxyVersion": "",
                     "containerRuntimeVersion": config.container_runtime_version,
                     "operatingSystem": "linux", "architecture": _arch(),
                     "osImage": _os_image(), "kernelVersion": platform.release(),
                     "machineID": "", "systemUUID": "", "bootID": ""},
    }
    return status


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _os_image() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def node_object(config: AgentConfig) -> Obj:
    labels = {"kubernetes.io/hostname": config.node_name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": _arch(), **config.labels}
    node: Obj = {"apiVersion": "v1", "kind": "Node",
                 "metadata": {"name": config.node_name, "labels": labels},
                 "spec": {}, "status": node_status(config)}
    if config.taints:
        node["spec"]["taints"] = list(config.taints)
    return node


class ApiLookup:
    """ConfigMaps and Secrets for env and volumes, read from the API when a container starts.
    The last answer for each is kept, so that a container restarted while the control plane
    is unreachable starts with what it had (the kubelet's managers cache them too)."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client
        self._last: dict[tuple[str, str, str], Obj | None] = {}

    async def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        res = {"configmaps": CONFIGMAPS, "secrets": SECRETS}[resource]
        key = (resource, namespace, name)
        try:
            found: Obj | None = await self._client.get(res, namespace, name)
        except NotFound:
            found = None
        except Unavailable:
            if key in self._last:
                return self._last[key]
            raise
        self._last[key] = found
        return found


class Agent:
    """One node's agent. ``run()`` until cancelled; ``ready`` is set once pods are served."""

    def __init__(self, client: ApiClient, config: AgentConfig,
                 runtime_factory: RuntimeFactory, *,
                 start_server: ServerStarter | None = None,
                 overlay: Overlay | None = None,
                 service_proxy: ServiceProxy | None = None,
                 lb_announcer: ServiceProxy | None = None,
                 cluster_dns: ClusterDns | None = None,
                 informers: InformerFactory | None = None) -> None:
        self.client = client
        #: Cluster-wide informers shared with the proxy, the announcer and DNS: one watch per
        #: resource per node. Services are always watched, for the containers' variables.
        self.informers = informers or InformerFactory(client)
        self.services = self.informers.informer(SERVICES)
        self.overlay = overlay
        self.service_proxy = service_proxy
        self.lb_announcer = lb_announcer
        self.cluster_dns = cluster_dns
        self.config = config
        self._runtime_factory = runtime_factory
        self._start_server = start_server
        self.runtime: Runtime | None = None
        self.worker: PodWorker | None = None
        self.node: Obj = {}
        self.pods = Informer(client, PODS, field_selector=f"spec.nodeName={config.node_name}",
                             resync=config.sync_period)
        self.pods.add_handler(FuncHandler(self._queue_pod, lambda old, new: self._queue_pod(new),
                                          self._queue_pod))
        self.queue = WorkQueue()
        self._events = EventRecorder(client, COMPONENT, host=config.node_name)
        self._recent_events: dict[tuple[str, str, str], float] = {}
        #: key -> uid of pods this agent has seen (to clean up after they leave the API).
        self._uids: dict[str, str] = {}
        self._terminating: dict[str, asyncio.Task[None]] = {}
        self._fingerprints: dict[str, Any] = {}
        self.ready = asyncio.Event()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        await self._register()
        heartbeat = spawn(self._heartbeat(), name="node heartbeat")
        tasks: list[asyncio.Task[Any]] = [heartbeat]
        try:
            self.node = await self._wait_for_node()
            if self.overlay is not None:
                tasks.append(spawn(self._run_overlay(self.overlay), name="agent overlay"))
            self.runtime = await self._runtime_factory(self.node)
            if self._start_server is not None:
                await self._publish_port(await self._start_server(self.runtime))
            if self.service_proxy is not None:
                tasks.append(spawn(self.service_proxy.run(), name="agent service proxy"))
            if self.lb_announcer is not None:
                tasks.append(spawn(self.lb_announcer.run(), name="agent LoadBalancer announcer"))
            dns_started = False
            if self.cluster_dns is not None:
                dns_started = await self._start_dns(self.cluster_dns, self.runtime)
            # As the kubelet: no container starts before the Services were read once, so
            # every container gets its Service variables.
            tasks.append(spawn(self.services.run(), name="agent services informer"))
            await self.services.synced.wait()
            lookup = ApiLookup(self.client)
            volumes = VolumeManager(self.config.data_dir / "pods", lookup)
            probes = ProbeManager(self.runtime, on_change=self._queue_uid,
                                  on_event=self._probe_event)
            self.worker = PodWorker(
                self.runtime, node_name=self.config.node_name, host_ip=self.config.node_ip,
                lookup=lookup, volumes=volumes, probes=probes,
                emit=self.emit, image_fallback=self.config.image_fallback,
                container_id_prefix=self.config.container_runtime_version.split("://")[0]
                + "://",
                dns_for=self.cluster_dns.dns_for if dns_started and self.cluster_dns else None,
                services=self.services.list)
            tasks.append(spawn(self.pods.run(), name="agent pods informer"))
            await self.pods.synced.wait()
            tasks.append(spawn(self._relist(), name="agent relist"))
            self.ready.set()
            log.info("agent %s: serving pods", self.config.node_name)
            await run_workers("agent", self.queue, self.reconcile, workers=self.config.workers)
        finally:
            self.queue.shut_down()
            for task in [*tasks, *self._terminating.values()]:
                task.cancel()
            await asyncio.gather(*tasks, *self._terminating.values(), return_exceptions=True)
            if self.worker is not None:
                await self.worker.probes.aclose()
            if self.cluster_dns is not None:
                await self.cluster_dns.stop()

    async def _start_dns(self, dns: ClusterDns, runtime: Runtime) -> bool:
        """Cluster DNS on the bridge's gateway (a bind failure is tried again a few times);
        False (pods get the runtime's resolv.conf) when the runtime has no bridge or the
        address cannot be bound."""
        gateway = getattr(getattr(runtime, "network", None), "gateway", None)
        if not gateway:
            log.error("agent: cluster DNS needs Corral's bridge pod network; not started")
            return False
        for attempt in range(DNS_START_TRIES):
            try:
                await dns.start(str(gateway))
                log.info("agent: cluster DNS on %s", gateway)
                return True
            except OSError as exc:
                log.error("agent: cluster DNS not started on %s: %s", gateway, exc)
                if attempt + 1 < DNS_START_TRIES:
                    await asyncio.sleep(0.5 * 2 ** attempt)
        return False

    async def _register(self) -> None:
        """Create the Node, or (it exists: a restart) post its status and labels; retried
        until the API answers."""
        delay = 0.5
        while True:
            try:
                node = node_object(self.config)
                try:
                    await self.client.create(NODES, "", node)
                    log.info("agent: registered node %s", self.config.node_name)
                except AlreadyExists:
                    await self.client.patch(NODES, "", self.config.node_name,
                                            {"metadata": {"labels": node["metadata"]["labels"]}})
                    await post_node_status(self.client, self.config.node_name, node["status"])
                await renew_lease(self.client, self.config.node_name)
                return
            except (ApiError, OSError) as exc:
                log.warning("agent: cannot register node %s yet: %s", self.config.node_name,
                            getattr(exc, "message", exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _wait_for_node(self) -> Obj:
        while True:
            try:
                node = await self.client.get(NODES, "", self.config.node_name)
            except (ApiError, OSError) as exc:
                log.info("agent: reading node: %s", getattr(exc, "message", exc))
            else:
                if not self.config.needs_pod_cidr or (node.get("spec") or {}).get("podCIDR"):
                    return node
            await asyncio.sleep(0.25)

    async def _publish_port(self, port: int) -> None:
        """Tell the API where the server is (``daemonEndpoints``: pods/log and exec go there)."""
        status = {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}
        while True:
            try:
                await post_node_status(self.client, self.config.node_name, status)
                return
            except (ApiError, OSError) as exc:
                log.info("agent: publishing the server port: %s", getattr(exc, "message", exc))
                await asyncio.sleep(1.0)

    async def _heartbeat(self) -> None:
        missed = False
        while True:
            await asyncio.sleep(self.config.renew_period)
            try:
                await renew_lease(self.client, self.config.node_name)
                if missed:
                    await post_node_status(self.client, self.config.node_name,
                                           node_status(self.config))
                    log.warning("agent: control plane reachable again; node status posted")
                missed = False
            except (ApiError, OSError) as exc:
                if not missed:
                    log.warning("agent: lease not renewed: %s", getattr(exc, "message", exc))
                missed = True

    # -- the overlay -----------------------------------------------------------------------

    async def _run_overlay(self, overlay: Overlay) -> None:
        """Bring the overlay up, publish its key and endpoint on the Node, then keep one peer
        per other node: a Node informer marks a change, the loop syncs the peers after a short
        debounce (and every OVERLAY_RESYNC_SECONDS). A device that stopped answering (its
        process killed) is started again. Errors are logged and retried, never fatal: Pods on
        this node run without the overlay."""
        pod_cidr = (self.node.get("spec") or {}).get("podCIDR")
        delay = 1.0
        while True:
            try:
                await overlay.start(pod_cidr)
                break
            except Exception as exc:  # noqa: BLE001 - retried; the message says why
                log.error("agent: overlay not started: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        wanted = overlay.annotations()
        changed = asyncio.Event()
        nodes = self.informers.informer(NODES)
        nodes.add_handler(FuncHandler(lambda _: changed.set(), lambda _o, _n: changed.set(),
                                      lambda _: changed.set()))
        informer = spawn(nodes.run(), name="agent nodes informer")
        try:
            await nodes.synced.wait()
            while True:
                await asyncio.sleep(OVERLAY_DEBOUNCE_SECONDS)
                changed.clear()
                ok = await self._publish_overlay(nodes.get(self.config.node_name), wanted)
                try:
                    await overlay.sync_peers(nodes.list())
                except Exception as exc:  # noqa: BLE001 - the device went: bring it back
                    ok = False
                    log.warning("agent: overlay peers not synced: %s", exc)
                    with contextlib.suppress(Exception):
                        await overlay.start(pod_cidr)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), OVERLAY_RESYNC_SECONDS if ok
                                           else OVERLAY_RETRY_SECONDS)
        finally:
            informer.cancel()
            await asyncio.gather(informer, return_exceptions=True)

    async def _publish_overlay(self, node: Obj | None, wanted: dict[str, str]) -> bool:
        """The overlay's annotations on our Node, unless they are there already."""
        have = ((node or {}).get("metadata") or {}).get("annotations") or {}
        if node is not None and all(have.get(k) == v for k, v in wanted.items()):
            return True
        try:
            await self.client.patch(NODES, "", self.config.node_name,
                                    {"metadata": {"annotations": wanted}})
            log.info("agent: overlay key and endpoint %s published on node %s",
                     wanted.get("corral.dev/wireguard-endpoint"), self.config.node_name)
            return True
        except (ApiError, OSError) as exc:
            log.info("agent: publishing the overlay's annotations: %s",
                     getattr(exc, "message", exc))
            return False

    # -- pods ------------------------------------------------------------------------------

    def _queue_pod(self, pod: Obj) -> None:
        self.queue.add(key_of(pod))

    def _queue_uid(self, uid: str) -> None:
        for key, known in self._uids.items():
            if known == uid:
                self.queue.add(key)
                return

    async def reconcile(self, key: str) -> None:
        worker = self.worker
        assert worker is not None
        pod = self.pods.get(key)
        if pod is None:
            uid = self._uids.pop(key, None)
            if uid is not None and uid not in self._terminating:
                await worker.remove(uid)
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        old_uid = self._uids.get(key)
        if old_uid is not None and old_uid != uid and old_uid not in self._terminating:
            await worker.remove(old_uid)  # a new pod under the name of one that went
        self._uids[key] = uid
        if meta.get("deletionTimestamp"):
            if uid not in self._terminating:
                self._terminating[uid] = spawn(self._finish_deletion(pod),
                                               name=f"terminate {key}")
            return
        if is_terminating(pod):
            await worker.stop(pod)
            return
        try:
            result = await worker.sync(pod)
            await self._write_status(pod, result.status)
        except Unavailable as exc:
            # The control plane is away: the pod runs on; its status goes out when it is back.
            log.info("agent: %s not synced to the API: %s", key, exc.message)
            raise Requeue(STATUS_RETRY_SECONDS) from None
        if result.requeue_after is not None:
            raise Requeue(result.requeue_after)

    async def _write_status(self, pod: Obj, status: Obj) -> None:
        old = pod.get("status") or {}
        if all(old.get(k) == v for k, v in status.items()):
            return
        meta = pod["metadata"]
        try:
            await self.client.patch(PODS, meta["namespace"], meta["name"], {"status": status},
                                    patch_type="merge", subresource="status")
        except NotFound:
            pass  # deleted meanwhile: the informer will tell

    async def _finish_deletion(self, pod: Obj) -> None:
        """Stop the pod within its grace period, report it, then delete it for good."""
        meta = pod["metadata"]
        worker = self.worker
        assert worker is not None
        try:
            status = await worker.terminate(pod, grace_seconds(pod))
            for attempt in range(30):
                try:
                    await self._write_status(pod, status)
                    await self.client.delete(PODS, meta["namespace"], meta["name"],
                                             grace_period=0, uid=meta["uid"])
                    break
                except (NotFound, Conflict):
                    break  # gone already, or another pod now has the name
                except (ApiError, OSError) as exc:
                    log.info("agent: finishing deletion of %s/%s: %s", meta["namespace"],
                             meta["name"], getattr(exc, "message", exc))
                    await asyncio.sleep(min(2 ** attempt * 0.2, 5.0))
            await worker.remove(meta["uid"])
        finally:
            self._terminating.pop(meta["uid"], None)

    # -- the runtime's side ----------------------------------------------------------------

    async def _relist(self) -> None:
        """PLEG: every ``relist_period``, queue the pods whose runtime objects changed and
        remove the objects of pods this agent does not know."""
        runtime = self.runtime
        assert runtime is not None
        while True:
            try:
                await self._relist_once(runtime)
            except Exception:
                log.exception("agent: relisting the runtime failed")
            await asyncio.sleep(self.config.relist_period)

    async def _relist_once(self, runtime: Runtime) -> None:
        # Only this node's objects: agents of several nodes (a lab) may share one engine.
        mine = {LABEL_NODE_NAME: self.config.node_name}
        boxes, ctrs = await asyncio.gather(runtime.list_sandboxes(mine),
                                           runtime.list_containers(labels=mine))
        seen: dict[str, list[Any]] = {}
        where: dict[str, tuple[str, str]] = {}
        for obj in [*boxes, *ctrs]:
            uid = obj.labels.get(LABEL_POD_UID, "")
            state = getattr(obj, "state", None)
            seen.setdefault(uid, []).append((obj.id, str(state)))
            where[uid] = (obj.labels.get(LABEL_POD_NAMESPACE, ""),
                          obj.labels.get(LABEL_POD_NAME, ""))
        known = {p["metadata"]["uid"] for p in self.pods.list()}
        for uid, states in seen.items():
            fingerprint = sorted(states)
            changed = self._fingerprints.get(uid) != fingerprint
            self._fingerprints[uid] = fingerprint
            if uid in known:
                if changed:
                    namespace, name = where[uid]
                    self.queue.add(f"{namespace}/{name}")
            elif uid not in self._terminating and self.worker is not None:
                log.info("agent: removing runtime objects of unknown pod %s/%s (%s)",
                         *where[uid], uid)
                await self.worker.remove(uid)
        for uid in list(self._fingerprints):
            if uid not in seen:
                del self._fingerprints[uid]

    # -- events ----------------------------------------------------------------------------

    async def emit(self, pod: Obj, type_: str, reason: str, message: str) -> None:
        """An Event about ``pod``, unless the same one was recorded recently."""
        now = time.monotonic()
        key = (pod["metadata"].get("uid", ""), reason, message)
        last = self._recent_events.get(key)
        if last is not None and now - last < EVENT_REPEAT_SECONDS:
            return
        self._recent_events[key] = now
        if len(self._recent_events) > 10_000:
            cutoff = now - EVENT_REPEAT_SECONDS
            self._recent_events = {k: t for k, t in self._recent_events.items() if t > cutoff}
        ref = {"apiVersion": "v1", "kind": "Pod", "metadata": pod["metadata"]}
        await self._events.record(ref, type_, reason, message)

    def _probe_event(self, event: ProbeEvent) -> None:
        pod = next((p for p in self.pods.list() if p["metadata"]["uid"] == event.pod_uid), None)
        if pod is not None:
            spawn(self.emit(pod, event.type, event.reason, event.message), name="probe event")


def default_node_name() -> str:
    return socket.gethostname().lower()
