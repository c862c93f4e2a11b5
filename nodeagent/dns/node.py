"""``NodeDns``: the cluster DNS of one node as the agent runs it (``corral agent
--cluster-dns``): a ``DnsServer`` on the bridge's gateway (port 53), fed by cluster-wide
informers, and each pod's resolv.conf naming that gateway (``dns_for``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controlplane.client import ApiClient, InformerFactory
from controlplane.client.tasks import spawn
from nodeagent.runtime.base import DNSConfig

from . import watch
from .cache import DnsCache
from .policy import host_dns_config, pod_dns_config, upstream_servers
from .resolver import DEFAULT_ZONE, Resolver
from .server import DNS_PORT, DnsServer

log = logging.getLogger(__name__)


class NodeDns:
    """``start(gateway_ip)`` binds the server and starts the informers; ``stop()`` undoes it.
    ``dns_for(pod)`` is None until started (pods then get the runtime's default)."""

    def __init__(self, client: ApiClient, *, zone: str = DEFAULT_ZONE,
                 port: int = DNS_PORT, informers: InformerFactory | None = None) -> None:
        self.informers = informers or InformerFactory(client)
        self.zone = zone
        self.port = port
        self.cache = DnsCache()
        self.server: DnsServer | None = None
        self.gateway: str | None = None
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, gateway_ip: str) -> None:
        server = DnsServer(Resolver(self.cache, zone=self.zone), gateway_ip, self.port,
                           upstreams=upstream_servers(host_dns_config(), exclude=[gateway_ip]))
        await server.start()
        self.server, self.gateway = server, gateway_ip
        self._task = spawn(watch.run(self.informers, self.cache, synced=self.synced),
                           name="agent dns informers")

    def dns_for(self, pod: dict[str, Any]) -> DNSConfig | None:
        if self.gateway is None:
            return None
        return pod_dns_config(pod, nameserver=self.gateway, zone=self.zone)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
