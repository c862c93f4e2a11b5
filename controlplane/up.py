"""``corral up``: a whole cluster on one machine, in one foreground process.

One controller (a single-member store, the API, the control loops) and one node agent, both in
this process, state under ``--data-dir``:

    <data-dir>/controller/   the store's journal and snapshots, the Raft secret
    <data-dir>/pki/          the cluster CA and credentials
    <data-dir>/agent/        the agent's volumes, pod network state, credentials
    <data-dir>/admin.kubeconfig

A second ``corral up`` on the same directory resumes the same cluster: same CA, same objects,
and the agent adopts the pods that kept running (stopping ``corral up`` stops the control
plane and the agent, not the pods, as stopping a kubelet does). ``corral down`` removes the
pods' containers and the pod network (``--purge``: the data directory too). One ``corral up``
at a time holds a directory (an exclusive lock on ``<data-dir>/lock``); ``corral down`` refuses
while it is held.

This is a composition root: it is the one module besides ``cli.py`` that wires the control
plane and the node agent together (tests/test_layering.py exempts it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import ssl
import sys
import time
from pathlib import Path

from controlplane.auth.authn import NODE_USER_PREFIX, NODES_GROUP
from controlplane.auth.pki import ClusterPKI, PKIError, write_atomic
from controlplane.client import ApiClient
from controlplane.controller import Controller, ControllerConfig, ensure_raft_secret
from controlplane.controllers.nodeipam import CLUSTER_CIDR
from controlplane.dirlock import Busy, holding
from nodeagent.agent import Agent, AgentConfig, default_node_name
from nodeagent.main import (
    POD_NETWORKS,
    RUNTIMES,
    AgentSetupError,
    choose_runtime,
    remove_pods_and_network,
    server_starter,
    until_signalled,
    use_runtime_threads,
)
from nodeagent.network.bridge import DEFAULT_BRIDGE
from nodeagent.server import AgentServer, serving_ssl_context
from raftstore.durability import CorruptDataError
from raftstore.raft import ConfigError, RaftConfig

log = logging.getLogger(__name__)

NODE_IP = "127.0.0.1"
AGENT_READY_TIMEOUT_S = 120.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral up",
        description="Run a one-machine cluster in the foreground: one controller and one "
        "node agent. Ctrl-C stops it; running it again on the same --data-dir resumes it.")
    p.add_argument("--data-dir", type=Path, default=Path("corral-data"),
                   help="where the cluster's state lives (default ./%(default)s)")
    p.add_argument("--listen-api", default="127.0.0.1:6443", metavar="HOST:PORT",
                   help="the Kubernetes API's address (default %(default)s)")
    p.add_argument("--listen-peer", default="127.0.0.1:2380", metavar="HOST:PORT",
                   help="the store's Raft address (default %(default)s)")
    p.add_argument("--node-name", default=default_node_name())
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="docker, process, or auto: Docker when an engine answers")
    p.add_argument("--pod-network", default="auto", choices=POD_NETWORKS,
                   help="bridge (corral0, needs root), docker, or auto")
    p.add_argument("--cluster-cidr", default=CLUSTER_CIDR,
                   help="the pods' network; the node gets a /24 of it (default %(default)s)")
    p.add_argument("--bridge", default=DEFAULT_BRIDGE,
                   help="the pods' bridge (default %(default)s)")
    p.add_argument("--log-level", default="WARNING")
    return p


class Progress:
    """One line per step on stdout, with the seconds since start: the user sees it come up."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def __call__(self, message: str) -> None:
        sys.stdout.write(f"[{time.monotonic() - self._start:5.1f}s] {message}\n")
        sys.stdout.flush()


def _raft_secret(data_dir: Path) -> str:
    return ensure_raft_secret(data_dir).read_text().strip()


async def up(args: argparse.Namespace) -> None:
    data_dir: Path = args.data_dir.resolve()
    with holding(data_dir, "corral up"):
        await _up(args, data_dir)


async def _up(args: argparse.Namespace, data_dir: Path) -> None:
    progress = Progress()
    resumed = (data_dir / "pki" / "ca.crt").exists()
    progress(("resuming the cluster in " if resumed else "creating a cluster in ") + str(data_dir))
    use_runtime_threads()
    controller_dir = data_dir / "controller"
    kubeconfig = data_dir / "admin.kubeconfig"
    controller = Controller(ControllerConfig(
        listen_api=args.listen_api,
        raft=RaftConfig(address=args.listen_peer, peers=[], data_dir=controller_dir,
                        secret=_raft_secret(controller_dir)),
        pki_dir=data_dir / "pki", kubeconfig=kubeconfig, cluster_cidr=args.cluster_cidr))
    await controller.start()
    servers: list[AgentServer] = []
    try:
        assert controller.server is not None
        await controller.server.wait_seeded()  # "default" and the system namespaces exist
        progress(f"control plane: API on {controller.url} (store, API and controllers)")
        pki = controller.pki
        assert pki is not None
        agent_dir = data_dir / "agent"
        agent_dir.mkdir(parents=True, exist_ok=True)
        choice = choose_runtime(args.runtime, args.pod_network, agent_dir,
                                cluster_cidr=args.cluster_cidr, bridge=args.bridge,
                                progress=progress)
        progress(f"runtime: {choice.summary}")
        tls = _agent_tls(pki, args.node_name, agent_dir)
        node_ssl = _node_client_ssl(pki, args.node_name)
        config = AgentConfig(node_name=args.node_name, data_dir=agent_dir, node_ip=NODE_IP,
                             image_fallback=True, needs_pod_cidr=choice.needs_pod_cidr,
                             container_runtime_version=choice.version)
        async with ApiClient([controller.url], node_ssl, user_agent="corral-agent") as client:
            agent = Agent(client, config, choice.factory,
                          start_server=server_starter(tls, NODE_IP, 0, servers))
            task = asyncio.create_task(agent.run(), name="agent")
            await _wait_ready(agent, task)
            progress(f"node {args.node_name}: Ready")
            _print_ready(kubeconfig)
            await until_signalled(task)
            progress("stopping (pods keep running; `corral up` again resumes them)")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        for server in servers:
            await server.stop()
        await controller.stop()
    progress("stopped")


async def _wait_ready(agent: Agent, task: asyncio.Task[None]) -> None:
    ready = asyncio.create_task(agent.ready.wait())
    done, _ = await asyncio.wait({ready, task}, timeout=AGENT_READY_TIMEOUT_S,
                                 return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if task in done:
        task.result()  # raises what ended the agent
        raise AgentSetupError("the agent stopped before it was ready")
    if not done:
        raise AgentSetupError(f"the agent was not ready within {AGENT_READY_TIMEOUT_S:.0f} s")


def _agent_tls(pki: ClusterPKI, node_name: str, agent_dir: Path) -> ssl.SSLContext:
    """The agent server's TLS: a serving certificate from the cluster CA (the API verifies it
    when it proxies logs and exec), client certificates of the CA required."""
    cert, key = pki.issue_server_cert(node_name, [node_name, NODE_IP])
    write_atomic(agent_dir / "server.crt", cert, 0o644)
    write_atomic(agent_dir / "server.key", key)
    return serving_ssl_context(pki.ca_pem, agent_dir / "server.crt", agent_dir / "server.key")


def _node_client_ssl(pki: ClusterPKI, node_name: str) -> ssl.SSLContext:
    """The agent's credential: user system:node:<name>, which the node authorizer knows."""
    cert, key = pki.issue_client_cert(f"{NODE_USER_PREFIX}{node_name}", [NODES_GROUP])
    return pki.client_ssl_context(cert, key)


def _print_ready(kubeconfig: Path) -> None:
    sys.stdout.write(
        "\nThe cluster is up. In another shell:\n\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        "  kubectl get nodes\n"
        "  kubectl apply -f examples/web.yaml\n\n"
        "Ctrl-C stops it.\n\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(up(args))
    except (AgentSetupError, Busy, ConfigError, CorruptDataError, PKIError) as exc:
        sys.stderr.write(f"corral up: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


# -- corral down -------------------------------------------------------------------------------

def build_down_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral down",
        description="Remove what `corral up` left running on this machine: the pods' "
        "containers and the pod network. The cluster's state stays (unless --purge).")
    p.add_argument("--data-dir", type=Path, default=Path("corral-data"))
    p.add_argument("--purge", action="store_true",
                   help="also delete the data directory: the cluster is gone for good")
    return p


async def down(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    if not data_dir.is_dir():
        raise AgentSetupError(f"{data_dir} is not a corral data directory")
    with holding(data_dir, "corral up"):
        removed, bridge = await remove_pods_and_network(data_dir / "agent")
        sys.stdout.write(f"removed {removed} pod sandboxes"
                         + (f" and the bridge {bridge}" if bridge else "") + "\n")
        if args.purge:
            shutil.rmtree(data_dir)
            sys.stdout.write(f"deleted {data_dir}\n")
    return 0


def down_main(argv: list[str] | None = None) -> int:
    args = build_down_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(down(args))
    except (AgentSetupError, Busy) as exc:
        sys.stderr.write(f"corral down: {exc}\n")
        return 2

