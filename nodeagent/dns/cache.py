"""``DnsCache``: the Services, Endpoints and (optionally) Pods the resolver reads, with the
indexes it needs (namespaces with Services, ClusterIP -> Services, endpoint IP -> addresses,
pod IPs by namespace). Pure: fed by ``update_*``/``delete_*`` calls, which
``nodeagent.dns.watch`` makes from informers and tests make directly.

Objects are kept as given and never mutated (informer caches share them). Every change bumps
``serial``, the zone's SOA serial.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .resolver import ready_addresses, service_ips

Obj = dict[str, Any]


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "default", str(meta.get("name", ""))


def _pod_ips(pod: Obj) -> set[str]:
    status = pod.get("status") or {}
    ips = {p.get("ip") for p in status.get("podIPs") or []} | {status.get("podIP")}
    return {ip for ip in ips if ip}


class DnsCache:
    """A ``ClusterView`` kept by informer events."""

    def __init__(self) -> None:
        self.serial = 1
        self._services: dict[tuple[str, str], Obj] = {}
        self._endpoints: dict[tuple[str, str], Obj] = {}
        self._pods: dict[tuple[str, str], set[str]] = {}
        self._namespaces: Counter[str] = Counter()
        self._service_ips: dict[str, set[tuple[str, str]]] = {}
        self._endpoint_ips: dict[str, set[tuple[str, str]]] = {}
        self._pod_ips: Counter[tuple[str, str]] = Counter()

    # ------------------------------------------------------------ feeding

    def update_service(self, svc: Obj) -> None:
        key = _key(svc)
        self._drop_service(key)
        self._services[key] = svc
        self._namespaces[key[0]] += 1
        for ip in service_ips(svc):
            self._service_ips.setdefault(ip, set()).add(key)
        self.serial += 1

    def delete_service(self, svc: Obj) -> None:
        self._drop_service(_key(svc))
        self.serial += 1

    def update_endpoints(self, endpoints: Obj) -> None:
        key = _key(endpoints)
        self._drop_endpoints(key)
        self._endpoints[key] = endpoints
        for _, address in ready_addresses(endpoints):
            self._endpoint_ips.setdefault(address["ip"], set()).add(key)
        self.serial += 1

    def delete_endpoints(self, endpoints: Obj) -> None:
        self._drop_endpoints(_key(endpoints))
        self.serial += 1

    def update_pod(self, pod: Obj) -> None:
        key = _key(pod)
        self._drop_pod(key)
        ips = _pod_ips(pod)
        self._pods[key] = ips
        for ip in ips:
            self._pod_ips[(key[0], ip)] += 1
        self.serial += 1

    def delete_pod(self, pod: Obj) -> None:
        self._drop_pod(_key(pod))
        self.serial += 1

    def _drop_service(self, key: tuple[str, str]) -> None:
        old = self._services.pop(key, None)
        if old is None:
            return
        self._namespaces[key[0]] -= 1
        if self._namespaces[key[0]] <= 0:
            del self._namespaces[key[0]]
        for ip in service_ips(old):
            _discard(self._service_ips, ip, key)

    def _drop_endpoints(self, key: tuple[str, str]) -> None:
        old = self._endpoints.pop(key, None)
        for _, address in ready_addresses(old):
            _discard(self._endpoint_ips, address["ip"], key)

    def _drop_pod(self, key: tuple[str, str]) -> None:
        for ip in self._pods.pop(key, set()):
            self._pod_ips[(key[0], ip)] -= 1
            if self._pod_ips[(key[0], ip)] <= 0:
                del self._pod_ips[(key[0], ip)]

    # ------------------------------------------------------------ ClusterView

    def service(self, namespace: str, name: str) -> Obj | None:
        return self._services.get((namespace, name))

    def endpoints(self, namespace: str, name: str) -> Obj | None:
        return self._endpoints.get((namespace, name))

    def has_namespace(self, namespace: str) -> bool:
        return namespace in self._namespaces

    def services_by_ip(self, ip: str) -> list[Obj]:
        return [self._services[k] for k in sorted(self._service_ips.get(ip, ()))]

    def endpoints_by_ip(self, ip: str) -> list[tuple[Obj, Obj]]:
        found = []
        for key in sorted(self._endpoint_ips.get(ip, ())):
            endpoints = self._endpoints[key]
            found.extend((endpoints, address) for _, address in ready_addresses(endpoints)
                         if address["ip"] == ip)
        return found

    def has_pod_ip(self, namespace: str, ip: str) -> bool:
        return (namespace, ip) in self._pod_ips


def _discard(index: dict[str, set[tuple[str, str]]], ip: str, key: tuple[str, str]) -> None:
    keys = index.get(ip)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[ip]
