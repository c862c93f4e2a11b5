"""The Service environment variables of a container, as the kubelet sets them
(``pkg/kubelet/envvars``): ``<NAME>_SERVICE_HOST``/``_SERVICE_PORT`` and Docker's link variables
for the Services of the pod's namespace (``enableServiceLinks``, default true), and always the
``kubernetes`` Service's (``KUBERNETES_SERVICE_HOST``: what in-cluster clients read to find
the API).

Pure: Services (core v1 dicts) in, ordered (name, value) pairs out. The kubelet walks a Go map,
so its order is random; here Services are taken by name, each one's variables in the kubelet's
order, so the environment (and the container's spec hash) is stable from one sync to the next.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]

#: The Services of ``default`` every pod sees, whatever its namespace (the kubelet's
#: ``masterServices``).
MASTER_SERVICES = ("kubernetes",)


def _var(name: str) -> str:
    return name.upper().replace("-", "_")


def _has_cluster_ip(service: Obj) -> bool:
    ip = (service.get("spec") or {}).get("clusterIP")
    return bool(ip) and ip != "None"


def visible_services(services: Iterable[Obj], namespace: str, enable_links: bool) -> list[Obj]:
    """The Services whose variables a pod of ``namespace`` gets, by name: its namespace's (with
    links enabled), and the master Services of ``default`` unless one of its own has the name."""
    chosen: dict[str, Obj] = {}
    for service in services:
        meta = service.get("metadata") or {}
        name, ns = meta.get("name"), meta.get("namespace") or "default"
        if not isinstance(name, str) or not _has_cluster_ip(service):
            continue
        if ns == "default" and name in MASTER_SERVICES:
            chosen.setdefault(name, service)
        elif ns == namespace and enable_links:
            chosen[name] = service
    return [chosen[name] for name in sorted(chosen)]


def service_variables(service: Obj) -> list[tuple[str, str]]:
    """One Service's variables: host and first port, named ports, then Docker's link
    variables per port (the first port also as ``<NAME>_PORT``)."""
    spec = service.get("spec") or {}
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)
             and isinstance(p.get("port"), int)]
    if not ports:
        return []
    prefix, ip = _var(service["metadata"]["name"]), spec["clusterIP"]
    host = f"[{ip}]" if ":" in ip else ip
    out = [(f"{prefix}_SERVICE_HOST", ip), (f"{prefix}_SERVICE_PORT", str(ports[0]["port"]))]
    out += [(f"{prefix}_SERVICE_PORT_{_var(p['name'])}", str(p["port"]))
            for p in ports if p.get("name")]
    for i, p in enumerate(ports):
        protocol = str(p.get("protocol") or "TCP")
        url = f"{protocol.lower()}://{host}:{p['port']}"
        if i == 0:
            out.append((f"{prefix}_PORT", url))
        port_prefix = f"{prefix}_PORT_{p['port']}_{protocol.upper()}"
        out += [(port_prefix, url), (f"{port_prefix}_PROTO", protocol.lower()),
                (f"{port_prefix}_PORT", str(p["port"])), (f"{port_prefix}_ADDR", ip)]
    return out


def service_env(services: Iterable[Obj], pod: Obj) -> dict[str, str]:
    """The Service variables of ``pod`` (its namespace, its ``enableServiceLinks``)."""
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    enable_links = (pod.get("spec") or {}).get("enableServiceLinks") is not False
    env: dict[str, str] = {}
    for service in visible_services(services, namespace, enable_links):
        env.update(service_variables(service))
    return env
