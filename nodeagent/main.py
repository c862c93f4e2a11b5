"""``corral agent``: the node agent as a process, and the choices it shares with ``corral up``:
which runtime (Docker when an engine answers, else processes), which pod network (Corral's
bridge when root, else Docker's own), and the agent's server.

The runtime is built once the Node is registered (``Agent`` calls ``RuntimeChoice.factory``
with the Node): the bridge network needs the podCIDR that node IPAM gives the Node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.client import ApiClient, InformerFactory
from nodeagent import images
from nodeagent.agent import Agent, AgentConfig, RuntimeFactory, default_node_name
from nodeagent.dns.node import NodeDns
from nodeagent.network import BridgeNetwork, PodNetworkError
from nodeagent.network.bridge import DEFAULT_BRIDGE
from nodeagent.network.overlay import (
    DEFAULT_IFNAME,
    DEFAULT_PORT,
    OVERLAY_OVERHEAD,
    OverlayError,
    OverlayNetwork,
    remove_overlay,
)
from nodeagent.proxy import IptablesApplier, Proxier
from nodeagent.proxy.announce import Announcer, remove_device
from nodeagent.runtime.base import LABEL_NODE_NAME, Runtime
from nodeagent.runtime.docker import DockerRuntime
from nodeagent.runtime.process import ProcessRuntime
from nodeagent.server import AgentServer, serving_ssl_context

log = logging.getLogger(__name__)

#: The kubelet's port.
DEFAULT_SERVER_PORT = 10250
#: Threads for blocking runtime calls: a stop waits out a grace period in one of them, so
#: asyncio's default (cores + 4) would let a few slow stops hold every pod's sync.
RUNTIME_THREADS = 64

RUNTIMES = ("auto", "docker", "process")
#: Under the agent's data dir: the pod network's state (IPAM, what was set up) and
#: ProcessRuntime's.
NETWORK_DIR, PROCESS_DIR = "network", "process-runtime"
#: What the runtime factory chose, for ``remove_pods_and_network`` to undo: the runtime, the
#: node whose pods it ran, the bridge network's settings.
STATE_FILE = "agent.json"
POD_NETWORKS = ("auto", "bridge", "docker")


class AgentSetupError(Exception):
    """The agent cannot start as configured; the message says why, in one line."""


@dataclass
class RuntimeChoice:
    name: str
    #: For the Node's nodeInfo.containerRuntimeVersion, e.g. ``docker://28.2.2``.
    version: str
    factory: RuntimeFactory
    #: The pod network needs the Node's podCIDR before pods start.
    needs_pod_cidr: bool
    #: What was chosen and why, for the user.
    summary: str


def _docker_client() -> Any | None:
    try:
        return images.docker_client(max_pool_size=RUNTIME_THREADS)
    except images.BaseImageError:
        return None


def bridge_possible() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and \
        shutil.which("nsenter") is not None


def choose_runtime(runtime: str, pod_network: str, data_dir: Path, *,
                   cluster_cidr: str | None = None, bridge: str = DEFAULT_BRIDGE,
                   mtu: int = 1500, service_proxy: bool = False,
                   progress: Callable[[str], None] = lambda _: None) -> RuntimeChoice:
    """The runtime and pod network for ``runtime``/``pod_network`` ("auto": the best that
    works here). Raises AgentSetupError for a choice this host cannot honour."""
    if runtime not in RUNTIMES:
        raise AgentSetupError(f"--runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if pod_network not in POD_NETWORKS:
        raise AgentSetupError(f"--pod-network must be one of {', '.join(POD_NETWORKS)}, "
                              f"not {pod_network!r}")
    client = _docker_client() if runtime in ("auto", "docker") else None
    if client is None:
        if runtime == "docker":
            raise AgentSetupError("no Docker engine answers (is dockerd running?)")
        state = data_dir / PROCESS_DIR

        async def processes(node: dict[str, Any]) -> Runtime:
            _save_state(data_dir, {"runtime": "process", "node": node["metadata"]["name"]})
            return ProcessRuntime(state)

        why = "as asked" if runtime == "process" else "no Docker engine answered"
        return RuntimeChoice("process", "process://corral", processes, False,
                             f"processes on the host ({why}); pods share the host's network")
    version = str(client.version().get("Version", "unknown"))
    use_bridge = pod_network == "bridge" or (pod_network == "auto" and bridge_possible())
    if pod_network == "bridge" and not bridge_possible():
        raise AgentSetupError("--pod-network bridge needs root, iproute2 and nsenter")

    async def docker(node: dict[str, Any]) -> Runtime:
        if not await asyncio.to_thread(_image_present, client, images.DEFAULT_TAG):
            progress(f"building the base image {images.DEFAULT_TAG} from busybox-static")
            await asyncio.to_thread(images.build_base_image, client, images.DEFAULT_TAG)
        network = None
        if use_bridge:
            pod_cidr = (node.get("spec") or {}).get("podCIDR")
            network = BridgeNetwork(pod_cidr, data_dir / NETWORK_DIR, bridge=bridge,
                                    cluster_cidr=cluster_cidr, mtu=mtu)
            try:
                await network.setup()
            except PodNetworkError as exc:
                raise AgentSetupError(f"pod network: {exc}") from None
            progress(f"pod network: bridge {network.bridge} {network.gateway} "
                     f"(podCIDR {pod_cidr})")
        _save_state(data_dir, {"runtime": "docker", "node": node["metadata"]["name"],
                               "network": {"podCIDR": network.pod_cidr, "bridge": bridge,
                                           "clusterCIDR": cluster_cidr} if network else None,
                               "serviceProxy": service_proxy})
        return DockerRuntime(client, sandbox_image=images.DEFAULT_TAG, network=network)

    how = f"Corral's bridge {bridge} on the node's podCIDR" if use_bridge else \
        "Docker's bridge network"
    return RuntimeChoice("docker", f"docker://{version}", docker, use_bridge,
                         f"Docker {version}; pod network: {how}")


def _save_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Written whole: a temporary file renamed over the old one."""
    path = data_dir / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


async def remove_pods_and_network(data_dir: Path) -> tuple[int, str | None]:
    """What ``corral down`` does on the node: remove every sandbox and container the agent of
    ``data_dir`` made for its node (in Docker, or processes) and its bridge with the NAT rule.
    Returns how many sandboxes were removed and the bridge removed, if any. The agent must not
    be running; objects of other nodes or clusters on the same engine are left alone. The
    overlay interface (``--overlay``), when the agent made one, is deleted too, and the Service
    proxy's iptables rules and LoadBalancer IPs (``--service-proxy``) when it ran."""
    try:
        await remove_overlay(data_dir / NETWORK_DIR)
    except OverlayError as exc:
        raise AgentSetupError(f"overlay: {exc}") from None
    saved = data_dir / STATE_FILE
    if not saved.exists():
        return 0, None  # the agent never got as far as running pods
    state = json.loads(saved.read_text())
    mine = {LABEL_NODE_NAME: state["node"]}
    settings = state.get("network")
    network = None if not settings else BridgeNetwork(
        settings["podCIDR"], data_dir / NETWORK_DIR, bridge=settings["bridge"],
        cluster_cidr=settings.get("clusterCIDR"))
    runtime: Runtime
    if state["runtime"] == "process":
        runtime = ProcessRuntime(data_dir / PROCESS_DIR)
    else:
        client = _docker_client()
        if client is None:
            raise AgentSetupError("no Docker engine answers: cannot remove the pods' containers")
        runtime = DockerRuntime(client, network=network)
    removed = 0
    for box in await runtime.list_sandboxes(mine):
        await runtime.remove_sandbox(box.id)
        removed += 1
    for ctr in await runtime.list_containers(labels=mine):
        await runtime.remove_container(ctr.id)
    if state.get("serviceProxy"):
        try:
            await IptablesApplier().teardown()
            await remove_device()
        except PodNetworkError as exc:
            raise AgentSetupError(f"service proxy: {exc}") from None
    if network is not None:
        await network.teardown()
    saved.unlink()
    return removed, network.bridge if network else None


def _image_present(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def detect_node_ip() -> str:
    """The address of the interface of the default route (no packet is sent: a UDP socket's
    connect only picks a source); loopback when there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never reached
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def server_starter(ssl_context: ssl.SSLContext, host: str, port: int,
                   servers: list[AgentServer]) -> Callable[[Runtime], Awaitable[int]]:
    """Starts the agent's server over the runtime once it exists; ``servers`` collects it for
    the caller to stop."""
    async def start(runtime: Runtime) -> int:
        server = AgentServer(runtime, ssl_context)
        bound = await server.start(host, port)
        servers.append(server)
        return bound
    return start


async def until_signalled(task: asyncio.Task[None]) -> None:
    """Until SIGINT or SIGTERM, or until ``task`` ends (then what ended it is raised): how a
    supervisor stops the agent. Pods keep running, as when a kubelet stops."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task in done:
        task.result()


def use_runtime_threads() -> None:
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(RUNTIME_THREADS, thread_name_prefix="runtime"))


# -- corral agent ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral agent",
        description="Run the node agent: register this host as a Node and run the Pods bound "
        "to it.")
    p.add_argument("--kubeconfig", type=Path, required=True,
                   help="the node's credential (written by `corral join`)")
    p.add_argument("--server", default="", metavar="URL,...",
                   help="every controller's API URL, to fail over between them (default: the "
                   "kubeconfig's server)")
    p.add_argument("--tls-cert-file", type=Path, required=True,
                   help="the agent server's certificate, signed by the cluster CA")
    p.add_argument("--tls-private-key-file", type=Path, required=True)
    p.add_argument("--client-ca-file", type=Path, required=True,
                   help="the cluster CA: callers of the agent's server must present a "
                   "certificate it signed")
    p.add_argument("--node-name", default=default_node_name())
    p.add_argument("--node-ip", default="", help="the node's address (default: the address "
                   "of the default route's interface)")
    p.add_argument("--data-dir", type=Path, default=Path("/var/lib/corral/agent"))
    p.add_argument("--port", type=int, default=DEFAULT_SERVER_PORT,
                   help="the agent server's port (default %(default)s; 0: any free port)")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES)
    p.add_argument("--pod-network", default="auto", choices=POD_NETWORKS)
    p.add_argument("--cluster-cidr", default="10.244.0.0/16",
                   help="the cluster's pod network (traffic leaving it is masqueraded)")
    p.add_argument("--bridge", default=DEFAULT_BRIDGE, help="the pods' bridge")
    p.add_argument("--overlay", action="store_true",
                   help="join the nodes' Pod networks through a WireGuard interface (needs "
                   "Corral's bridge pod network); the key and endpoint go on the Node")
    p.add_argument("--overlay-interface", default=DEFAULT_IFNAME, metavar="NAME",
                   help="the WireGuard interface (default %(default)s; distinct per node when "
                   "nodes share a machine: its UAPI socket directory is shared)")
    p.add_argument("--overlay-port", type=int, default=DEFAULT_PORT,
                   help="the WireGuard UDP port (default %(default)s)")
    p.add_argument("--underlay-mtu", type=int, default=1500,
                   help="the MTU of the node's network; the overlay's and the Pods' is "
                   f"{OVERLAY_OVERHEAD} less with --overlay (default %(default)s)")
    p.add_argument("--service-proxy", action="store_true",
                   help="proxy Services on this node (kube-proxy's iptables mode; needs "
                   "Corral's bridge pod network) and announce the LoadBalancer IPs it is "
                   "elected for on its network")
    p.add_argument("--cluster-dns", action="store_true",
                   help="serve cluster DNS on the bridge's gateway (port 53) and name it in "
                   "the Pods' resolv.conf (needs Corral's bridge pod network)")
    p.add_argument("--node-label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--register-with-taint", action="append", default=[],
                   metavar="KEY=VALUE:EFFECT")
    p.add_argument("--image-pull-fallback", action="store_true",
                   help="when a pull fails, use the image present on the node (labs without "
                   "a registry) and say so in a Warning Event")
    p.add_argument("--log-level", default="INFO")
    return p


def parse_labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AgentSetupError(f"--node-label {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def parse_taints(items: list[str]) -> list[dict[str, str]]:
    taints = []
    for item in items:
        spec, sep, effect = item.rpartition(":")
        key, _, value = spec.partition("=")
        if not sep or not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise AgentSetupError(f"--register-with-taint {item!r}: expected "
                                  "KEY[=VALUE]:NoSchedule|PreferNoSchedule|NoExecute")
        taints.append({"key": key, **({"value": value} if value else {}), "effect": effect})
    return taints


async def run_agent(args: argparse.Namespace) -> None:
    use_runtime_threads()
    node_ip = args.node_ip or detect_node_ip()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    overlay = None
    if args.overlay:
        try:
            overlay = OverlayNetwork(args.node_name, node_ip, args.data_dir / NETWORK_DIR,
                                     ifname=args.overlay_interface, listen_port=args.overlay_port,
                                     cluster_cidr=args.cluster_cidr,
                                     underlay_mtu=args.underlay_mtu)
        except OverlayError as exc:
            raise AgentSetupError(f"--overlay: {exc}") from None
    choice = choose_runtime(args.runtime, args.pod_network, args.data_dir,
                            cluster_cidr=args.cluster_cidr, bridge=args.bridge,
                            mtu=overlay.mtu if overlay else 1500,
                            service_proxy=args.service_proxy, progress=log.warning)
    log.warning("runtime: %s", choice.summary)
    if overlay is not None and not choice.needs_pod_cidr:
        raise AgentSetupError("--overlay needs Corral's bridge pod network (--pod-network "
                              "bridge, root, a Docker engine)")
    for flag, wanted in (("--service-proxy", args.service_proxy),
                         ("--cluster-dns", args.cluster_dns)):
        if wanted and not choice.needs_pod_cidr:
            raise AgentSetupError(f"{flag} needs Corral's bridge pod network (--pod-network "
                                  "bridge, root, a Docker engine)")
    config = AgentConfig(
        node_name=args.node_name, data_dir=args.data_dir, node_ip=node_ip,
        labels=parse_labels(args.node_label), taints=parse_taints(args.register_with_taint),
        image_fallback=args.image_pull_fallback, needs_pod_cidr=choice.needs_pod_cidr,
        container_runtime_version=choice.version)
    try:
        tls = serving_ssl_context(args.client_ca_file.read_bytes(), args.tls_cert_file,
                                  args.tls_private_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise AgentSetupError(f"the server's TLS files: {exc}") from None
    servers: list[AgentServer] = []
    urls = [u for u in args.server.split(",") if u] or None
    try:
        client = ApiClient.from_kubeconfig(args.kubeconfig, urls=urls, user_agent="corral-agent")
    except (OSError, ValueError) as exc:
        raise AgentSetupError(f"--kubeconfig: {exc}") from None
    async with client:
        informers = InformerFactory(client)
        proxier = Proxier(client, IptablesApplier(), cluster_cidr=args.cluster_cidr,
                          node_ips=[node_ip], informers=informers) if args.service_proxy else None
        announcer = Announcer(client, args.node_name, node_ip, informers=informers) \
            if args.service_proxy else None
        agent = Agent(client, config, choice.factory,
                      start_server=server_starter(tls, node_ip, args.port, servers),
                      overlay=overlay, service_proxy=proxier, lb_announcer=announcer,
                      cluster_dns=NodeDns(client, informers=informers) if args.cluster_dns
                      else None, informers=informers)
        task = asyncio.create_task(agent.run(), name="agent")
        try:
            await until_signalled(task)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for server in servers:
                await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_agent(args))
    except AgentSetupError as exc:
        sys.stderr.write(f"corral agent: {exc}\n")
        return 2
    return 0
