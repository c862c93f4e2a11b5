"""OverlayNetwork: Pod traffic between nodes through a WireGuard interface, as flannel's
``wireguard`` backend does it (DESIGN.md, Network).

Layout on a node whose podCIDR is 10.244.1.0/24, in a cluster on 10.244.0.0/16::

    corral0   10.244.1.1/24          the node's own Pods (BridgeNetwork; the more specific route)
    corral-wg (TUN, MTU underlay-80) 10.244.1.1/32; 10.244.0.0/16 dev corral-wg mtu 1420
              src 10.244.1.1
              one peer per other node: AllowedIPs = its podCIDR, endpoint = its IP:51820

``start`` loads the node's private key (``<state_dir>/wg.key``, base64 as ``wg genkey`` writes
it, mode 0600, written atomically; made on first start), brings up the interface with
``corral wg IFNAME`` (``python -m overlay.main``), sets the private key and listen port over
the UAPI socket, the MTU, and the route for the cluster CIDR. The route's ``src`` is the
node's gateway address on corral0, so packets the node itself sends to remote Pods carry a
source inside its podCIDR: the remote device accepts only inner sources within the sending
peer's AllowedIPs. The interface also holds that address (/32, as flannel's device holds its
subnet's): MASQUERADE ignores a route's ``src`` and takes the out interface's address, so
NodePort and LoadBalancer traffic the Service proxy sends on to a remote Pod leaves with the
gateway address, and the Pod's answer comes back through the overlay, not the underlay.

**Who owns the interface.** ``corral wg`` is started *detached* (its own session, as
wireguard-go and ``wg-quick`` leave it), not as a foreground child of the agent. The agent's
process is not on the data path: a kubelet restart does not take the Pod network down, and
flannel's restart leaves its interface and peers in place. So when the agent stops (SIGTERM,
an upgrade, a crash) the interface keeps carrying Pod traffic with the peers it has; a
restarted agent finds the UAPI socket live and the link in its namespace and *reuses* the
device (it only sets what differs: no handshake is dropped). ``stop`` deletes the interface, for
``corral down``; in ``corral lab`` the interface lives in the node's namespace and ``lab down``
stops every process of that namespace (``ip netns pids`` lists the detached ``corral wg`` too)
before deleting it.

The UAPI socket directory (/var/run/wireguard) is shared by all network namespaces of a
machine, so interfaces in different namespaces of one machine (a lab) need distinct names: a
live socket whose link is not in this namespace is refused with a message saying so.

``sync_peers(nodes)`` turns the Node objects into the wanted peers (annotations
``corral.dev/wireguard-public-key`` and ``corral.dev/wireguard-endpoint`` plus
``spec.podCIDR``; our own node and nodes without all three are skipped) and applies only the
difference through UAPI: new or changed peers are set with ``replace_allowed_ips``, peers of
nodes that went are removed, unchanged peers are not touched. ``peer_changes`` is the pure
diff.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeagent.network.addresses import gateway_of, parse_pod_cidr
from nodeagent.network.base import PodNetworkError
from nodeagent.network.command import run
from overlay.crypto import (
    generate_private_key,
    key_from_base64,
    key_to_base64,
    public_key,
)
from overlay.uapi import (
    DEFAULT_SOCKET_DIR,
    SOCKET_SUFFIX,
    DeviceStatus,
    DeviceUpdate,
    Endpoint,
    PeerUpdate,
    UapiError,
    format_set,
    parse_get,
)

log = logging.getLogger(__name__)

ANNOTATION_PUBLIC_KEY = "corral.dev/wireguard-public-key"
ANNOTATION_ENDPOINT = "corral.dev/wireguard-endpoint"
DEFAULT_IFNAME = "corral-wg"
DEFAULT_PORT = 51820
#: IPv6 (40) + UDP (8) + WireGuard header and tag (32): wireguard-go's 1420 on a 1500 underlay.
OVERLAY_OVERHEAD = 80
KEEPALIVE_SECONDS = 25
KEY_FILE = "wg.key"
#: What ``start`` made, for ``remove_overlay`` (``corral down``) to undo without the agent.
STATE_FILE = "overlay.json"
UAPI_TIMEOUT_S = 5.0
#: How long ``start`` waits for ``corral wg`` to have its interface and socket.
START_TIMEOUT_S = 20.0
MAX_IFNAME_LEN = 15


class OverlayError(Exception):
    """The overlay cannot be brought up or configured; one line saying why."""


@dataclass(frozen=True)
class WantedPeer:
    """One other node as a WireGuard peer."""

    node: str
    pod_cidr: ipaddress.IPv4Network
    endpoint: Endpoint


def wanted_peers(nodes: Iterable[dict[str, Any]], own_node: str,
                 own_key: bytes | None = None) -> dict[bytes, WantedPeer]:
    """Public key -> peer for every other node that published a key and an endpoint and has a
    podCIDR. A node with a malformed annotation is skipped with a warning; of two nodes with
    one key or one podCIDR, the one whose name sorts first wins (the same on every node)."""
    peers: dict[bytes, WantedPeer] = {}
    taken: dict[ipaddress.IPv4Network, str] = {}
    for node in sorted(nodes, key=lambda n: n.get("metadata", {}).get("name", "")):
        meta = node.get("metadata") or {}
        name = meta.get("name", "")
        if name == own_node:
            continue
        annotations = meta.get("annotations") or {}
        key_text = annotations.get(ANNOTATION_PUBLIC_KEY)
        endpoint_text = annotations.get(ANNOTATION_ENDPOINT)
        cidr_text = (node.get("spec") or {}).get("podCIDR")
        if not key_text or not endpoint_text or not cidr_text:
            continue  # not (yet) on the overlay, or no podCIDR yet
        try:
            key = key_from_base64(str(key_text))
            endpoint = Endpoint.parse(str(endpoint_text))
            cidr = parse_pod_cidr(str(cidr_text))
        except (ValueError, UapiError) as exc:
            log.warning("overlay: node %s skipped: %s", name, getattr(exc, "message", exc))
            continue
        if key == own_key or key in peers or cidr in taken:
            log.warning("overlay: node %s skipped: its key or podCIDR %s is %s's", name, cidr,
                        own_node if key == own_key else
                        peers[key].node if key in peers else taken[cidr])
            continue
        peers[key] = WantedPeer(name, cidr, endpoint)
        taken[cidr] = name
    return peers


def peer_changes(current: DeviceStatus, wanted: dict[bytes, WantedPeer], *,
                 keepalive: int = KEEPALIVE_SECONDS) -> list[PeerUpdate]:
    """The UAPI peer sections that turn ``current`` into ``wanted``: set new or changed peers
    (their allowed IPs replaced), remove the others; peers already as wanted are left out."""
    have = {peer.public_key: peer for peer in current.peers}
    changes: list[PeerUpdate] = []
    for key, peer in wanted.items():
        old = have.get(key)
        if old is not None and old.allowed_ips == [peer.pod_cidr] \
                and old.endpoint == peer.endpoint \
                and old.persistent_keepalive_interval == keepalive:
            continue
        changes.append(PeerUpdate(key, endpoint=peer.endpoint,
                                  persistent_keepalive_interval=keepalive,
                                  replace_allowed_ips=True, allowed_ips=[peer.pod_cidr]))
    changes.extend(PeerUpdate(key, remove=True) for key in have if key not in wanted)
    return changes


# -- the private key ---------------------------------------------------------------------------

def load_or_create_key(path: Path) -> bytes:
    """The private key in ``path`` (base64), made and written (0600, atomically) when absent.
    A damaged file is an OverlayError: replacing it silently would change the node's identity."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        key = generate_private_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (key_to_base64(key) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        log.info("overlay: new private key in %s", path)
        return key
    except OSError as exc:
        raise OverlayError(f"cannot read the private key {path}: {exc.strerror}") from None
    try:
        return key_from_base64(text)
    except ValueError as exc:
        raise OverlayError(f"{path} holds no WireGuard private key ({exc}); remove it to make "
                           "a new one") from None


# -- UAPI client -------------------------------------------------------------------------------

async def uapi_request(path: Path, request: str, *, timeout: float = UAPI_TIMEOUT_S) -> str:
    """Send one request on the UAPI socket ``path`` and return the answer (up to the blank
    line). OSError (no socket, refused, timed out) when nobody answers."""
    async def exchange() -> str:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(request.encode())
            await writer.drain()
            lines = []
            while (line := await reader.readline()) not in (b"", b"\n"):
                lines.append(line.decode(errors="replace"))
            return "".join(lines) + "\n"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    try:
        return await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        raise OSError(f"{path}: no answer within {timeout:g}s") from None


async def uapi_get(path: Path) -> DeviceStatus:
    return parse_get(await uapi_request(path, "get=1\n\n"))


async def uapi_set(path: Path, update: DeviceUpdate) -> None:
    answer = await uapi_request(path, "set=1\n" + "".join(
        line + "\n" for line in format_set(update)) + "\n")
    code = answer.strip().rpartition("errno=")[2]
    if code != "0":
        raise UapiError(abs(int(code)) if code.lstrip("-").isdigit() else 0,
                        f"the device refused the set request ({answer.strip()[:60]!r})")


# -- the interface -----------------------------------------------------------------------------

class OverlayNetwork:
    """The node's end of the overlay (see the module docstring)."""

    def __init__(self, node_name: str, node_ip: str, state_dir: Path, *,
                 ifname: str = DEFAULT_IFNAME, listen_port: int = DEFAULT_PORT,
                 cluster_cidr: str = "10.244.0.0/16", underlay_mtu: int = 1500,
                 host_netns: str | None = None, wg_command: Sequence[str] | None = None,
                 socket_dir: Path = DEFAULT_SOCKET_DIR,
                 keepalive: int = KEEPALIVE_SECONDS) -> None:
        if not ifname or len(ifname) > MAX_IFNAME_LEN or "/" in ifname or " " in ifname:
            raise OverlayError(f"invalid interface name {ifname!r}")
        if not 0 < listen_port < 65536:
            raise OverlayError(f"invalid listen port {listen_port}")
        if not 1280 + OVERLAY_OVERHEAD <= underlay_mtu <= 65535:
            raise OverlayError(f"invalid underlay MTU {underlay_mtu}")
        try:
            self.cluster_cidr = str(ipaddress.ip_network(cluster_cidr, strict=True))
            self.endpoint = str(Endpoint(ipaddress.ip_address(node_ip), listen_port))
        except ValueError as exc:
            raise OverlayError(str(exc)) from None
        self.node_name = node_name
        self.node_ip = node_ip
        self.state_dir = Path(state_dir)
        self.ifname = ifname
        self.listen_port = listen_port
        self.mtu = underlay_mtu - OVERLAY_OVERHEAD
        self.host_netns = host_netns
        self.wg_command = list(wg_command) if wg_command else [sys.executable, "-m",
                                                               "overlay.main"]
        self.socket_path = Path(socket_dir) / f"{ifname}{SOCKET_SUFFIX}"
        self.keepalive = keepalive
        self._private_key = load_or_create_key(self.state_dir / KEY_FILE)
        self._public_key = public_key(self._private_key)
        self._lock = asyncio.Lock()

    @property
    def public_key(self) -> str:
        """Base64, as ``wg`` shows it and as the Node's annotation carries it."""
        return key_to_base64(self._public_key)

    def annotations(self) -> dict[str, str]:
        return {ANNOTATION_PUBLIC_KEY: self.public_key, ANNOTATION_ENDPOINT: self.endpoint}

    # -- start, stop -----------------------------------------------------------------------

    async def start(self, pod_cidr: str | None = None) -> bool:
        """Bring the interface up (or reuse the one a previous agent left) and configure it;
        safe to repeat. ``pod_cidr`` (the node's) gives the route its source address.
        Returns whether ``corral wg`` was started (False: an existing device was reused)."""
        async with self._lock:
            started = False
            if not await self._device_alive():
                await self._launch()
                started = True
            await self._configure_device()
            await self._configure_link(pod_cidr)
            self._save_state()
            log.info("overlay: %s %s (%s, MTU %d, %s)", self.ifname,
                     "started" if started else "reused", self.endpoint, self.mtu,
                     self.cluster_cidr)
            return started

    async def stop(self) -> None:
        """Delete the interface (``corral wg`` exits and removes its socket). Idempotent."""
        async with self._lock:
            await delete_interface(self.ifname, self.host_netns, self.socket_path)
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / STATE_FILE).unlink()

    async def _device_alive(self) -> bool:
        """A live socket whose link is in our namespace: reuse it. A live socket without the
        link here belongs to another namespace: refuse (one socket directory for all)."""
        try:
            await uapi_get(self.socket_path)
        except (OSError, UapiError):
            return False
        if await self._link_exists():
            return True
        raise OverlayError(f"{self.socket_path} is served by an interface {self.ifname} in "
                           "another network namespace; give this node another interface name")

    async def _launch(self) -> None:
        """``corral wg IFNAME``, detached: it returns once the interface and socket exist."""
        if await self._link_exists():
            raise OverlayError(f"an interface {self.ifname} exists but no live UAPI socket "
                               f"{self.socket_path} serves it (not a Corral/wireguard-go one?)")
        argv = [*self.wg_command, self.ifname]
        if self.host_netns:
            argv = ["ip", "netns", "exec", self.host_netns, *argv]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        errors = self.state_dir / f"{self.ifname}.log"
        # Its errors until it is ready (and its log, with LOG_LEVEL set) go to this file;
        # close_fds (the default): the daemon must hold none of the agent's sockets.
        with errors.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=err)
        try:
            code = await asyncio.wait_for(proc.wait(), START_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise OverlayError(f"{' '.join(argv)}: not ready within {START_TIMEOUT_S:g}s") \
                from None
        if code != 0:
            tail = errors.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise OverlayError(f"{' '.join(argv)} failed (exit {code}): {tail[0]}")

    async def _configure_device(self) -> None:
        try:
            status = await uapi_get(self.socket_path)
            update = DeviceUpdate()
            if status.private_key != self._private_key:
                update.private_key = self._private_key
            if status.listen_port != self.listen_port:
                update.listen_port = self.listen_port
            if update.private_key is not None or update.listen_port is not None:
                await uapi_set(self.socket_path, update)
        except (OSError, UapiError) as exc:
            raise OverlayError(f"configuring {self.ifname}: {exc}") from None

    async def _configure_link(self, pod_cidr: str | None) -> None:
        route = ["route", "replace", self.cluster_cidr, "dev", self.ifname, "mtu", str(self.mtu)]
        address: list[str] = []
        if pod_cidr:
            try:
                gateway = str(gateway_of(parse_pod_cidr(pod_cidr)))
            except ValueError as exc:
                raise OverlayError(str(exc)) from None
            route += ["src", gateway]
            address = ["address", "replace", f"{gateway}/32", "dev", self.ifname]
        try:
            await run(*self._ip("link", "set", "dev", self.ifname, "mtu", str(self.mtu), "up"))
            if address:
                await run(*self._ip(*address))
            await run(*self._ip(*route))
        except PodNetworkError as exc:
            raise OverlayError(str(exc)) from None

    def _save_state(self) -> None:
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"ifname": self.ifname, "netns": self.host_netns,
                                   "socket": str(self.socket_path)}))
        os.replace(tmp, path)

    def _ip(self, *args: str) -> tuple[str, ...]:
        return ("ip", "-n", self.host_netns, *args) if self.host_netns else ("ip", *args)

    async def _link_exists(self) -> bool:
        result = await run(*self._ip("link", "show", "dev", self.ifname), check=False)
        return result.returncode == 0

    # -- peers -----------------------------------------------------------------------------

    async def sync_peers(self, nodes: Iterable[dict[str, Any]]) -> list[PeerUpdate]:
        """Make the device's peers those of ``nodes`` (see ``wanted_peers``); returns the
        changes applied (empty: nothing to do). OverlayError when the device does not answer."""
        wanted = wanted_peers(nodes, self.node_name, self._public_key)
        async with self._lock:
            try:
                current = await uapi_get(self.socket_path)
                changes = peer_changes(current, wanted, keepalive=self.keepalive)
                if changes:
                    await uapi_set(self.socket_path, DeviceUpdate(peers=changes))
            except (OSError, UapiError) as exc:
                raise OverlayError(f"{self.ifname}: {exc}") from None
        if changes:
            names = {key: peer.node for key, peer in wanted.items()}
            log.info("overlay: peers set: %s; removed: %d",
                     ", ".join(names[c.public_key] for c in changes if not c.remove) or "none",
                     sum(c.remove for c in changes))
        return changes


async def delete_interface(ifname: str, netns: str | None, socket_path: Path) -> None:
    """Delete the overlay interface; wait (briefly) for its ``corral wg`` to remove its socket."""
    ip = ("ip", "-n", netns) if netns else ("ip",)
    shown = await run(*ip, "link", "show", "dev", ifname, check=False)
    if shown.returncode == 0:
        result = await run(*ip, "link", "del", "dev", ifname, check=False)
        if result.returncode != 0 and \
                (await run(*ip, "link", "show", "dev", ifname, check=False)).returncode == 0:
            raise OverlayError(f"cannot delete {ifname}: {result.stderr.strip()}")
    for _ in range(50):
        try:
            await uapi_get(socket_path)
        except (OSError, UapiError):
            return
        await asyncio.sleep(0.1)
    log.warning("overlay: %s still answers after %s was deleted", socket_path, ifname)


async def remove_overlay(state_dir: Path) -> str | None:
    """What ``corral down`` does: delete the interface ``start`` recorded in ``state_dir``;
    returns its name, None when there was none."""
    path = Path(state_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OverlayError(f"{path} is damaged: {exc}") from None
    await delete_interface(state["ifname"], state.get("netns"), Path(state["socket"]))
    path.unlink()
    return str(state["ifname"])

