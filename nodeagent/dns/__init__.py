"""Cluster DNS, served by every agent on its node (CoreDNS's ``kubernetes`` plugin in small).

| module | what it holds |
|---|---|
| ``resolver`` | pure: one question and a ``ClusterView`` in, an ``Answer`` (records, rcode, SOA, or "forward") out |
| ``cache`` | pure: ``DnsCache``, the ``ClusterView`` fed with Services, Endpoints and Pods |
| ``watch`` | informers (``controlplane.client``) feeding a ``DnsCache`` |
| ``server`` | ``DnsServer``: asyncio UDP and TCP, dnslib for the wire format, forwarding upstream |
| ``policy`` | pure: a pod's resolv.conf by its ``dnsPolicy`` (``pod_dns_config``); the host's |

Wiring into the agent (once the bridge exists, so its gateway address can be bound)::

    cache = DnsCache()
    resolver = Resolver(cache, zone="cluster.local")
    server = DnsServer(resolver, gateway_ip, 53,
                       upstreams=upstream_servers(host_dns_config(), exclude=[gateway_ip]))
    await server.start()
    spawn(watch.run(InformerFactory(client), cache), name="dns informers")  # or watch.attach
    ...
    dns = pod_dns_config(pod, nameserver=gateway_ip)         # -> sandbox_config(..., dns=dns)
    ...
    await server.stop()
"""

from .cache import DnsCache
from .policy import host_dns_config, parse_resolv_conf, pod_dns_config, upstream_servers
from .resolver import (
    DEFAULT_ZONE,
    PODS_DISABLED,
    PODS_INSECURE,
    PODS_VERIFIED,
    TTL_SECONDS,
    Answer,
    ClusterView,
    Record,
    Resolver,
)
from .server import DnsServer

__all__ = [
    "DEFAULT_ZONE",
    "PODS_DISABLED",
    "PODS_INSECURE",
    "PODS_VERIFIED",
    "TTL_SECONDS",
    "Answer",
    "ClusterView",
    "DnsCache",
    "DnsServer",
    "Record",
    "Resolver",
    "host_dns_config",
    "parse_resolv_conf",
    "pod_dns_config",
    "upstream_servers",
]
