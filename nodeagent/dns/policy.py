"""A pod's resolv.conf, as the kubelet's ``dns.Configurer.GetPodDNS`` makes it, and the host's.

1. ``parse_resolv_conf`` / ``host_dns_config``: the host's resolver settings (nameserver,
   search or domain, options). When /etc/resolv.conf names only loopback servers (the
   systemd-resolved stub 127.0.0.53), /run/systemd/resolve/resolv.conf is read instead, as
   kubeadm points the kubelet at it: a loopback server means nothing inside a pod's network
   namespace, and forwarding to it from the cluster DNS may loop.
2. ``upstream_servers``: the host's servers that the cluster DNS may forward to (no loopback,
   not itself).
3. ``pod_dns_config``: by ``spec.dnsPolicy``:

   - ``ClusterFirst`` (the default): the cluster DNS, searches ``<ns>.svc.<zone>
     svc.<zone> <zone>`` then the host's, options ``ndots:5``; with ``hostNetwork`` it is
     ``Default`` instead;
   - ``ClusterFirstWithHostNet``: ``ClusterFirst`` even with ``hostNetwork``;
   - ``Default``: the host's settings;
   - ``None``: nothing but ``spec.dnsConfig``;

   then ``spec.dnsConfig`` is merged in for every policy: nameservers and searches appended
   (duplicates dropped), options merged by name (the pod's value wins). Limits as the
   kubelet's: 3 nameservers, 32 search domains of at most 2048 characters in all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nodeagent.runtime.base import DNSConfig

from .resolver import DEFAULT_ZONE

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
SYSTEMD_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")

CLUSTER_FIRST = "ClusterFirst"
CLUSTER_FIRST_WITH_HOST_NET = "ClusterFirstWithHostNet"
DEFAULT = "Default"
NONE = "None"

#: The kubelet's limits (k8s.io/kubernetes/pkg/apis/core/validation: MaxDNSNameservers,
#: MaxDNSSearchPaths, MaxDNSSearchListChars).
MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32
MAX_SEARCH_LIST_CHARS = 2048
#: The kubelet's options for ClusterFirst (defaultDNSOptions).
CLUSTER_OPTIONS = ("ndots:5",)


# 1. The host

def parse_resolv_conf(text: str) -> DNSConfig:
    """nameserver, search (or domain when there is no search: the last one wins, as in
    glibc) and options lines of a resolv.conf; comments and anything else ignored."""
    servers: list[str] = []
    searches: list[str] = []
    domain: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        word, args = fields[0], fields[1:]
        if word == "nameserver" and args:
            servers.append(args[0])
        elif word == "search":
            searches, domain = list(args), []
        elif word == "domain" and args:
            domain, searches = [args[0]], []
        elif word == "options":
            options.extend(args)
    return DNSConfig(tuple(servers), tuple(searches or domain), tuple(options))


def is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def host_dns_config(path: Path = HOST_RESOLV_CONF,
                    systemd_path: Path = SYSTEMD_RESOLV_CONF) -> DNSConfig:
    """The host's settings from ``path``; from ``systemd_path`` when ``path`` names only
    loopback servers and that file exists. An unreadable file gives an empty config."""
    try:
        config = parse_resolv_conf(path.read_text())
    except OSError:
        config = DNSConfig()
    if config.servers and all(is_loopback(s) for s in config.servers):
        try:
            return parse_resolv_conf(systemd_path.read_text())
        except OSError:
            pass
    return config


# 2. Upstreams of the cluster DNS

def upstream_servers(host: DNSConfig, *, exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """The servers the cluster DNS forwards to: the host's, minus loopback ones and
    ``exclude`` (its own listen addresses), which would send questions back to it."""
    skip = set(exclude)
    return tuple(s for s in host.servers if not is_loopback(s) and s not in skip)


# 3. Pods

def pod_dns_config(pod: dict[str, Any], *, nameserver: str | Sequence[str],
                   zone: str = DEFAULT_ZONE, host: DNSConfig | None = None) -> DNSConfig:
    """The resolver settings of ``pod``'s sandbox. ``nameserver``: the cluster DNS address(es)
    (the node's; the agent's bridge gateway); ``host``: the host's settings (read from
    /etc/resolv.conf when needed and not given)."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    policy = spec.get("dnsPolicy") or CLUSTER_FIRST
    if policy == CLUSTER_FIRST and spec.get("hostNetwork"):
        policy = DEFAULT
    cluster_servers = [nameserver] if isinstance(nameserver, str) else list(nameserver)
    if policy == CLUSTER_FIRST and not cluster_servers:
        policy = DEFAULT  # the kubelet without --cluster-dns: the host's (with a warning)

    if policy == NONE:
        servers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
    else:
        if host is None:
            host = host_dns_config()
        servers, searches, options = list(host.servers), list(host.searches), list(host.options)
        if policy in (CLUSTER_FIRST, CLUSTER_FIRST_WITH_HOST_NET) and cluster_servers:
            namespace = meta.get("namespace") or "default"
            zone = zone.strip(".")
            servers = cluster_servers
            searches = [f"{namespace}.svc.{zone}", f"svc.{zone}", zone] + searches
            options = list(CLUSTER_OPTIONS)

    extra = spec.get("dnsConfig") or {}
    servers = _unique(servers + list(extra.get("nameservers") or []))
    searches = _unique(searches + list(extra.get("searches") or []))
    options = _merge_options(options, extra.get("options") or [])
    return DNSConfig(tuple(servers[:MAX_NAMESERVERS]), tuple(_fit_searches(searches)),
                     tuple(options))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _merge_options(existing: Sequence[str], pod_options: Sequence[dict[str, Any]]) -> list[str]:
    merged: dict[str, str | None] = {}
    for option in existing:
        name, sep, value = option.partition(":")
        merged[name] = value if sep else None
    for option in pod_options:
        if option.get("name"):
            value = option.get("value")
            merged[option["name"]] = None if value is None else str(value)
    return [name if value in (None, "") else f"{name}:{value}" for name, value in merged.items()]


def _fit_searches(searches: list[str]) -> list[str]:
    """The first domains within the kubelet's limits (it drops the rest, with an Event)."""
    kept: list[str] = []
    for domain in searches[:MAX_SEARCH_PATHS]:
        if len(" ".join(kept + [domain])) > MAX_SEARCH_LIST_CHARS:
            break
        kept.append(domain)
    return kept
