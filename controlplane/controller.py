"""``corral controller``: one control-plane process — a store member, the API server and, while
this controller leads, the control loops (``controllers.manager``).

Start-up order: open the store (a RaftStore member of the controllers' Raft group, or a client
of an external etcd) -> load the cluster PKI, creating it if this is the cluster's first
controller -> issue this controller's serving certificate -> serve the API over HTTPS ->
write an admin kubeconfig pointing at this controller. Every controller serves reads, watches
and writes; writes from any of them go through the Raft log (or etcd).

Errors of configuration or data (bad flags, damaged PKI or store data, a busy port) end the
process with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from raftstore.durability import CorruptDataError
from raftstore.etcd import EtcdStore
from raftstore.member import (
    SECRET_ENV,
    add_raft_arguments,
    raft_config,
    until_terminated,
)
from raftstore.raft import ConfigError, RaftConfig, RaftStore, split_hostport
from raftstore.store import Store

from .api.allocators import (
    DEFAULT_NODE_PORT_RANGE,
    DEFAULT_SERVICE_CIDR,
    IPRange,
    PortRange,
)
from .api.server import ApiServer
from .auth.kubeconfig import write_kubeconfig
from .auth.pki import JOIN_TOKEN_FILE, ClusterPKI, PKIError, write_atomic
from .client import ApiClient, ApiError, InformerFactory
from .client.tasks import spawn
from .controllers.apiserverendpoints import ApiServerEndpoints, advertise_address
from .controllers.deployment import DeploymentController
from .controllers.endpoints import EndpointsController
from .controllers.endpointslice import EndpointSliceController
from .controllers.eventttl import EVENT_TTL_SECONDS, EventTTLController
from .controllers.garbagecollector import GarbageCollector
from .controllers.leaderelection import LeaseElector
from .controllers.manager import ControllerManager, Loop
from .controllers.namespace import NamespaceController
from .controllers.nodeipam import (
    CLUSTER_CIDR,
    NODE_MASK,
    CidrError,
    CidrSet,
    NodeIpamController,
)
from .controllers.nodelifecycle import (
    EVICTION_TIMEOUT_SECONDS,
    NODE_MONITOR_GRACE_SECONDS,
    NodeLifecycleController,
)
from .controllers.replicaset import ReplicaSetController
from .controllers.scheduler import Scheduler
from .controllers.serviceaccount import ServiceAccountController
from .controllers.servicelb import IPPool, ServiceLBController

log = logging.getLogger(__name__)

#: The in-cluster names of the API (the kubernetes Service's), in every serving certificate.
KUBERNETES_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local")
#: How long a stopping controller tries to take itself out of the kubernetes Endpoints.
WITHDRAW_TIMEOUT_S = 2.0


@dataclass
class ControllerConfig:
    """Everything one controller needs; built from flags by ``corral controller``."""

    listen_api: str = "127.0.0.1:6443"
    #: The store: a Raft member config, or etcd endpoints (exactly one of the two).
    raft: RaftConfig | None = None
    etcd_endpoints: list[str] = field(default_factory=list)
    pki_dir: Path | None = None
    #: Where to write the admin kubeconfig (None: do not write one).
    kubeconfig: Path | None = None
    #: Host names and addresses clients use to reach this controller (certificate SANs).
    tls_sans: list[str] = field(default_factory=list)
    #: Where pods reach this API server (the kubernetes Service's endpoint); None: the listen
    #: address when it is a specific non-loopback IP, else not published.
    advertise_address: str | None = None
    insecure: bool = False
    watch_progress_interval: float = 5.0
    #: The pods' network: node IPAM gives each Node a /node_cidr_mask_size of it ("": none).
    cluster_cidr: str = CLUSTER_CIDR
    node_cidr_mask_size: int = NODE_MASK
    #: A node whose Lease is older than this goes NotReady (Ready=Unknown) and gets tainted.
    node_monitor_grace_period: float = NODE_MONITOR_GRACE_SECONDS
    #: How long pods without a matching toleration stay on such a node before eviction.
    default_unreachable_toleration_seconds: float = EVICTION_TIMEOUT_SECONDS
    #: Events last seen longer ago than this are deleted.
    event_ttl: float = EVENT_TTL_SECONDS
    #: Where Services get their cluster IPs and node ports (kube-apiserver's flags).
    service_cluster_ip_range: str = DEFAULT_SERVICE_CIDR
    service_node_port_range: str = DEFAULT_NODE_PORT_RANGE
    #: Where LoadBalancer Services get their external IPs ("": none, they stay pending).
    load_balancer_ip_pool: str = ""


class Controller:
    """A running controller; ``start`` then ``stop`` (also usable in-process, by tests)."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.store: Store | None = None
        self.server: ApiServer | None = None
        self.port = 0
        self.pki: ClusterPKI | None = None
        self._client: ApiClient | None = None
        self._resources = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._endpoints: ApiServerEndpoints | None = None

    @property
    def url(self) -> str:
        host, _ = split_hostport(self.config.listen_api, "--listen-api")
        scheme = "http" if self.config.insecure else "https"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        config = self.config
        host, port = split_hostport(config.listen_api, "--listen-api")
        if not config.insecure:
            self.pki = load_or_create_pki(config.pki_dir)
        self.store = await open_store(config)
        self.server = ApiServer(self.store, pki=self.pki, insecure=config.insecure,
                                watch_progress_interval=config.watch_progress_interval,
                                service_cluster_ip_range=config.service_cluster_ip_range,
                                service_node_port_range=config.service_node_port_range)
        ssl_context = None
        if self.pki is not None:
            # Also the names and ClusterIP in-cluster clients use (kube-apiserver's defaults).
            in_cluster = [IPRange(config.service_cluster_ip_range).first(), *KUBERNETES_NAMES]
            cert, key = self.pki.issue_server_cert(host, [host, *config.tls_sans, *in_cluster])
            ssl_context = self.pki.server_ssl_context(cert, key)
        try:
            self.port = await self.server.start(host, port, ssl_context)
        except OSError as exc:
            await self.stop()
            raise ConfigError(f"cannot listen on {config.listen_api}: {exc.strerror}") from None
        if self.pki is not None and config.kubeconfig is not None:
            write_kubeconfig(config.kubeconfig, server=self.url, ca_pem=self.pki.ca_pem,
                             cert_pem=self.pki.admin_cert_pem, key_pem=self.pki.admin_key_pem)
        log.warning("API server listening on %s", self.url)
        if self.pki is not None:
            log.warning("nodes join with: corral join --server %s --token $(cat %s) "
                        "--ca-hash %s --node-name <name> --node-ip <address>", self.url,
                        self.pki.directory / JOIN_TOKEN_FILE, self.pki.ca_fingerprint())
        await self._start_control_loops()

    async def _start_control_loops(self) -> None:
        """The control loops, through this controller's own API, run while it leads."""
        ssl = None if self.pki is None else self.pki.client_ssl_context(
            self.pki.admin_cert_pem, self.pki.admin_key_pem)
        self._client = await self._resources.enter_async_context(
            ApiClient([self.url], ssl, user_agent="corral-controller"))
        store = self.store
        if isinstance(store, RaftStore):
            def is_leader() -> bool:
                return store.is_leader
        else:
            elector = LeaseElector(self._client, f"{socket.gethostname()}_{self.url}")
            self._tasks.append(spawn(elector.run(), name="leader election"))
            is_leader = elector.is_leader
        client = self._client
        config = self.config
        manager = ControllerManager(is_leader, lambda: leader_loops(client, config))
        if self.server is not None:
            self.server.metrics.leader.labels("corral-controller").set_function(
                lambda: float(manager.leading))
        self._tasks.append(spawn(manager.run(), name="controller manager"))
        address = advertise_address(split_hostport(config.listen_api, "--listen-api")[0],
                                    config.advertise_address)
        if address is not None:
            self._endpoints = ApiServerEndpoints(client, address, self.port)
            self._tasks.append(spawn(self._endpoints.run(), name="kubernetes endpoints"))

    async def stop(self) -> None:
        if self._endpoints is not None:
            try:  # leave the kubernetes Service's endpoints; best effort without a quorum
                await asyncio.wait_for(self._endpoints.withdraw(), WITHDRAW_TIMEOUT_S)
            except (ApiError, TimeoutError) as exc:
                log.info("kubernetes endpoints not withdrawn: %s", exc)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._resources.aclose()
        if self.server is not None:
            await self.server.stop()
        if self.store is not None:
            await self.store.close()


def leader_loops(client: ApiClient, config: ControllerConfig) -> list[Loop]:
    """The control loops of one term of leadership, sharing one informer per resource."""
    informers = InformerFactory(client)
    ipam = [Loop("nodeipam", lambda: NodeIpamController(
        client, cluster_cidr=config.cluster_cidr, node_mask=config.node_cidr_mask_size,
        informers=informers).run())] if config.cluster_cidr else []
    servicelb = [Loop("servicelb", lambda: ServiceLBController(
        client, pool=IPPool(config.load_balancer_ip_pool), informers=informers).run())] \
        if config.load_balancer_ip_pool else []
    return ipam + servicelb + [
        Loop("scheduler", lambda: Scheduler(client, informers=informers).run()),
        Loop("replicaset", lambda: ReplicaSetController(client, informers=informers).run()),
        Loop("deployment", lambda: DeploymentController(client, informers=informers).run()),
        Loop("endpoints", lambda: EndpointsController(client, informers=informers).run()),
        Loop("endpointslice",
             lambda: EndpointSliceController(client, informers=informers).run()),
        Loop("node-lifecycle", lambda: NodeLifecycleController(
            client, grace=config.node_monitor_grace_period,
            eviction_timeout=config.default_unreachable_toleration_seconds,
            informers=informers).run()),
        Loop("serviceaccount",
             lambda: ServiceAccountController(client, informers=informers).run()),
        Loop("garbage-collector", lambda: GarbageCollector(client, informers=informers).run()),
        Loop("namespace", lambda: NamespaceController(client, informers=informers).run()),
        Loop("event-ttl", lambda: EventTTLController(client, ttl=config.event_ttl).run()),
    ]


def load_or_create_pki(directory: Path | None) -> ClusterPKI:
    """The cluster's PKI; a first controller creates it (cluster creation)."""
    if directory is None:
        raise ConfigError("--pki-dir is required unless --insecure")
    if (directory / "ca.crt").exists():
        return ClusterPKI.load(directory)
    log.warning("no cluster CA in %s: creating the cluster's PKI", directory)
    return ClusterPKI.create(directory)


async def open_store(config: ControllerConfig) -> Store:
    if config.etcd_endpoints:
        return EtcdStore(config.etcd_endpoints)
    if config.raft is None:
        raise ConfigError("a controller needs --listen-peer/--data-dir (embedded store) or "
                          "--etcd-endpoints")
    return await RaftStore.open(config.raft)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral controller",
        description="Run one Corral controller: a member of the replicated store and the "
        "Kubernetes API over HTTPS.")
    add_raft_arguments(p, required=False)
    p.add_argument("--etcd-endpoints", default="", metavar="URL,...",
                   help="use an external etcd cluster instead of the embedded store")
    p.add_argument("--listen-api", default="127.0.0.1:6443", metavar="HOST:PORT",
                   help="address of the Kubernetes API (default %(default)s)")
    p.add_argument("--pki-dir", type=Path,
                   help="the cluster's CA, join token and admin credential (default: "
                   "DATA_DIR/pki; created if absent)")
    p.add_argument("--kubeconfig", type=Path,
                   help="where to write an admin kubeconfig (default DATA_DIR/admin.kubeconfig)")
    p.add_argument("--tls-san", action="append", default=[], metavar="HOST",
                   help="another name or address clients reach this controller by")
    p.add_argument("--advertise-address", default=None, metavar="IP",
                   help="the address pods reach this API at, published as an endpoint of the "
                   "kubernetes Service (default: the --listen-api host when it is a specific "
                   "non-loopback IP)")
    p.add_argument("--insecure", action="store_true",
                   help="DEVELOPMENT ONLY: plain HTTP and no authentication")
    p.add_argument("--watch-progress-interval", type=float, default=5.0, metavar="SECONDS",
                   help="how often idle watches get a bookmark (default %(default)s)")
    p.add_argument("--cluster-cidr", default=CLUSTER_CIDR, metavar="CIDR",
                   help="the pods' network, from which each node gets its podCIDR (default "
                   "%(default)s; empty: allocate none)")
    p.add_argument("--node-cidr-mask-size", type=int, default=NODE_MASK, metavar="BITS",
                   help="prefix length of each node's podCIDR (default %(default)s)")
    p.add_argument("--node-monitor-grace-period", type=_positive_seconds,
                   default=NODE_MONITOR_GRACE_SECONDS, metavar="SECONDS",
                   help="a node whose lease is older than this goes NotReady "
                   "(default %(default)s)")
    p.add_argument("--default-unreachable-toleration-seconds", type=_positive_seconds,
                   default=EVICTION_TIMEOUT_SECONDS, metavar="SECONDS",
                   help="how long pods stay on a NotReady node unless they tolerate it longer "
                   "or shorter (default %(default)s)")
    p.add_argument("--event-ttl", type=_positive_seconds, default=EVENT_TTL_SECONDS,
                   metavar="SECONDS", help="how long Events are kept after they last happened "
                   "(default %(default)s)")
    p.add_argument("--service-cluster-ip-range", default=DEFAULT_SERVICE_CIDR, metavar="CIDR",
                   help="the IPv4 range Services get their cluster IPs from (default "
                   "%(default)s; the first address is the kubernetes Service's)")
    p.add_argument("--service-node-port-range", default=DEFAULT_NODE_PORT_RANGE,
                   metavar="BASE-MAX", help="the ports NodePort and LoadBalancer Services get "
                   "their node ports from (default %(default)s)")
    p.add_argument("--load-balancer-ip-pool", default="", metavar="CIDR|FIRST-LAST,...",
                   help="the IPv4 addresses LoadBalancer Services get their external IP from, "
                   "announced by the nodes' agents (--service-proxy) on their network; a "
                   "CIDR's network and broadcast addresses are left out (default: none, "
                   "LoadBalancer Services stay pending)")
    return p


def config_from_args(args: argparse.Namespace) -> ControllerConfig:
    etcd = [e for e in args.etcd_endpoints.split(",") if e]
    data_dir: Path | None = args.data_dir
    if not etcd and (args.listen_peer is None or data_dir is None):
        raise ConfigError("the embedded store needs --listen-peer and --data-dir "
                          "(or give --etcd-endpoints)")
    if etcd and args.listen_peer:
        raise ConfigError("--etcd-endpoints and --listen-peer exclude each other")
    if data_dir is None and (args.pki_dir is None and not args.insecure):
        raise ConfigError("--pki-dir is required with --etcd-endpoints and no --data-dir")
    if args.cluster_cidr:
        try:
            CidrSet(args.cluster_cidr, args.node_cidr_mask_size)
        except CidrError as exc:
            raise ConfigError(f"--cluster-cidr/--node-cidr-mask-size: {exc}") from None
    try:
        IPRange(args.service_cluster_ip_range)
        PortRange(args.service_node_port_range)
    except ValueError as exc:
        raise ConfigError(f"--service-cluster-ip-range/--service-node-port-range: {exc}") \
            from None
    if args.load_balancer_ip_pool:
        try:
            IPPool(args.load_balancer_ip_pool)
        except ValueError as exc:
            raise ConfigError(f"--load-balancer-ip-pool: {exc}") from None
    if not etcd and args.secret_file is None and not os.environ.get(SECRET_ENV):
        args.secret_file = ensure_raft_secret(data_dir)
    return ControllerConfig(
        listen_api=args.listen_api,
        raft=None if etcd else raft_config(args),
        etcd_endpoints=etcd,
        pki_dir=args.pki_dir or (data_dir / "pki" if data_dir else None),
        kubeconfig=args.kubeconfig or (data_dir / "admin.kubeconfig" if data_dir else None),
        tls_sans=args.tls_san,
        advertise_address=args.advertise_address,
        insecure=args.insecure,
        watch_progress_interval=args.watch_progress_interval,
        cluster_cidr=args.cluster_cidr,
        node_cidr_mask_size=args.node_cidr_mask_size,
        node_monitor_grace_period=args.node_monitor_grace_period,
        default_unreachable_toleration_seconds=args.default_unreachable_toleration_seconds,
        event_ttl=args.event_ttl,
        service_cluster_ip_range=args.service_cluster_ip_range,
        service_node_port_range=args.service_node_port_range,
        load_balancer_ip_pool=args.load_balancer_ip_pool,
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def ensure_raft_secret(data_dir: Path) -> Path:
    """``DATA_DIR/raft-secret``, made on first start: a one-controller cluster needs no setup.

    Further controllers must be given the same secret (``--secret-file``, copied from here).
    """
    path = data_dir / "raft-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, secrets.token_hex(16).encode())
    return path


async def serve(config: ControllerConfig) -> None:
    controller = Controller(config)
    await controller.start()
    try:
        await until_terminated()
    finally:
        await controller.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(config_from_args(args)))
    except (ConfigError, CorruptDataError, PKIError) as exc:
        sys.stderr.write(f"corral controller: {exc}\n")
        return 2
    except Exception as exc:  # noqa: BLE001 - one line for the user, the details in the log
        log.debug("controller failed", exc_info=True)
        sys.stderr.write(f"corral controller: {type(exc).__name__}: {exc} (run with "
                         "--log-level DEBUG for details)\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
