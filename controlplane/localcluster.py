"""Throwaway local control planes: N ``corral controller`` processes on loopback
(``ControlPlane``), or API servers inside this process (``InProcessCluster``), optionally with
control loops run as a leader's controller manager runs them (``start_controllers``).

For tests and benchmarks. The cluster PKI is created once and shared (as an operator copies it
to every controller host); each controller writes its own admin kubeconfig pointing at itself.
The store is the embedded Raft group of the controllers, or an external etcd given by its
endpoints. Faults by index: ``kill`` (SIGKILL) and ``restart`` (same data dir).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from raftstore.localprocess import LOOPBACK, MemberProcess, free_ports, track, untrack
from raftstore.store import Store

from .api.server import ApiServer
from .auth.pki import ClusterPKI
from .client import ApiClient, InformerFactory
from .client.tasks import spawn
from .controllers.garbagecollector import GarbageCollector
from .controllers.manager import ControllerManager, Loop
from .controllers.namespace import NamespaceController


class ControlPlaneError(RuntimeError):
    """A controller exited or did not become ready in time (with its log tail)."""


@dataclass
class _Controller(MemberProcess):
    index: int = 0
    peer: str = ""

    @property
    def client_url(self) -> str:
        return f"https://{LOOPBACK}:{self.client_port}"


class ControlPlane:
    def __init__(self, size: int = 3, *, etcd_endpoints: list[str] | None = None,
                 base_dir: str | None = None, start_timeout: float = 60.0,
                 fsync: str = "always", extra_args: tuple[str, ...] = ()) -> None:
        self.size = size
        self.etcd_endpoints = etcd_endpoints or []
        self.fsync = fsync
        self.extra_args = extra_args
        self._base_dir = base_dir
        self._start_timeout = start_timeout
        self._root: str | None = None
        self._controllers: list[_Controller] = []
        self.pki: ClusterPKI | None = None

    def start(self) -> ControlPlane:
        self._root = tempfile.mkdtemp(prefix="corral-cp-", dir=self._base_dir)
        track(self)
        try:
            self.pki = ClusterPKI.create(Path(self._root) / "pki")
            with open(self.secret_file, "w") as f:
                f.write(secrets.token_hex(16))
            ports = free_ports(2 * self.size)
            self._controllers = [
                _Controller(name=f"c{i}", data_dir=os.path.join(self._root, f"c{i}"),
                            client_port=ports[2 * i + 1], index=i,
                            peer=f"{LOOPBACK}:{ports[2 * i]}")
                for i in range(self.size)
            ]
            for c in self._controllers:
                c.spawn(self.command(c.index))
            for i in range(self.size):
                self.wait_ready(i)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def secret_file(self) -> str:
        assert self._root is not None
        return os.path.join(self._root, "secret")

    @property
    def pki_dir(self) -> str:
        assert self._root is not None
        return os.path.join(self._root, "pki")

    def kubeconfig(self, i: int) -> str:
        return self._controllers[i].data_dir + ".kubeconfig"

    def url(self, i: int) -> str:
        return self._controllers[i].client_url

    @property
    def urls(self) -> list[str]:
        return [c.client_url for c in self._controllers]

    def command(self, i: int) -> list[str]:
        c = self._controllers[i]
        store = (["--etcd-endpoints", ",".join(self.etcd_endpoints)] if self.etcd_endpoints else [
            "--listen-peer", c.peer,
            "--peers", ",".join(o.peer for o in self._controllers if o is not c),
            "--secret-file", self.secret_file, "--fsync", self.fsync,
        ])
        return [
            sys.executable, "-m", "controlplane.controller", *store,
            "--data-dir", c.data_dir,
            "--listen-api", f"{LOOPBACK}:{c.client_port}",
            "--pki-dir", self.pki_dir,
            "--kubeconfig", self.kubeconfig(i),
            *self.extra_args,
        ]

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the cluster CA and presenting the admin credential."""
        assert self.pki is not None
        return self.pki.client_ssl_context(self.pki.admin_cert_pem, self.pki.admin_key_pem)

    def wait_ready(self, i: int, timeout: float | None = None) -> None:
        c = self._controllers[i]
        deadline = time.monotonic() + (timeout or self._start_timeout)
        context = self.ssl_context()
        while time.monotonic() < deadline:
            if not c.running:
                raise ControlPlaneError(f"controller {c.name} exited:\n{c.log_tail()}")
            try:
                with urllib.request.urlopen(c.client_url + "/readyz", timeout=2.0,
                                            context=context) as answer:
                    if answer.status == 200 and os.path.exists(self.kubeconfig(i)):
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ControlPlaneError(f"controller {c.name} not ready in time:\n{c.log_tail()}")

    def kill(self, i: int) -> None:
        self._controllers[i].kill()

    def restart(self, i: int) -> None:
        c = self._controllers[i]
        c.kill()
        c.spawn(self.command(i))
        self.wait_ready(i)

    def pids(self) -> dict[str, int]:
        """Process ids of the running controllers, labelled c0, c1, ... (benchmark figures)."""
        return {f"c{c.index}": c.process.pid for c in self._controllers
                if c.running and c.process is not None}

    def log_tail(self, i: int) -> str:
        return self._controllers[i].log_tail()

    def stop(self) -> None:
        for c in self._controllers:
            c.kill()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        self._controllers = []
        untrack(self)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cleanup_loops(client: ApiClient) -> list[Loop]:
    """The loops that finish what deletes start: the garbage collector and the namespace
    controller, sharing informers (as in ``controller.leader_loops``)."""
    informers = InformerFactory(client)
    return [
        Loop("garbage-collector", lambda: GarbageCollector(client, informers=informers).run()),
        Loop("namespace", lambda: NamespaceController(client, informers=informers).run()),
    ]


@dataclass
class InProcessCluster:
    """API servers in this process sharing one store, as controllers share the Raft store:
    fast clusters for tests of clients and controllers."""

    pki: ClusterPKI
    store: Store
    servers: dict[str, ApiServer] = field(default_factory=dict)
    _manager: tuple[ApiClient, asyncio.Task[None]] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """The URL of the first server still running."""
        return next(iter(self.servers))

    def admin_client(self, urls: list[str], **kw: Any) -> ApiClient:
        ssl = self.pki.client_ssl_context(self.pki.admin_cert_pem, self.pki.admin_key_pem)
        return ApiClient(urls, ssl, **kw)

    def node_client(self, node_name: str, urls: list[str], **kw: Any) -> ApiClient:
        """A client with node ``node_name``'s credential (what an agent gets by joining)."""
        cert, key = self.pki.issue_client_cert(f"system:node:{node_name}", ["system:nodes"])
        return ApiClient(urls, self.pki.client_ssl_context(cert, key), **kw)

    async def start_server(self, port: int = 0) -> str:
        """Serve the store on one more server (on ``port``: 0 for any); its URL."""
        server = ApiServer(self.store, pki=self.pki, watch_progress_interval=0.2)
        cert, key = self.pki.issue_server_cert("test", ["127.0.0.1"])
        port = await server.start("127.0.0.1", port, self.pki.server_ssl_context(cert, key))
        await server.wait_seeded()
        url = f"https://127.0.0.1:{port}"
        self.servers[url] = server
        return url

    async def stop_server(self, url: str) -> None:
        await self.servers.pop(url).stop()

    async def start_controllers(
            self, make_loops: Callable[[ApiClient], list[Loop]] = cleanup_loops) -> None:
        """Run control loops against the servers, through a ``ControllerManager`` that always
        leads (a real cluster runs them on its leader): by default the garbage collector and
        the namespace controller, without which deletes do not cascade."""
        if self._manager is not None:
            raise RuntimeError("the controllers are running already")
        client = await self.admin_client(list(self.servers)).__aenter__()
        manager = ControllerManager(lambda: True, lambda: make_loops(client), poll=0.05)
        self._manager = client, spawn(manager.run(), name="in-process controller manager")

    async def stop_controllers(self) -> None:
        if self._manager is None:
            return
        (client, task), self._manager = self._manager, None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
