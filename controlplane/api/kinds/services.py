"""Service strategy: a stable name and ports in front of the pods a selector picks.

Flow: defaulting (``SetDefaults_Service``, and the conversion rule that keeps ``clusterIP``
and ``clusterIPs`` in step), validation of type, ports and addresses, the update rules (an
allocated cluster IP and node ports carry over when the client leaves them out, as the
registry's ``patchAllocatedValues`` does, and never change), then the printer. Cluster IPs and
node ports are allocated by the registry (``allocators.ServiceAllocations``), not here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import Cause, duplicate, forbidden_field, invalid_value, required
from ..selectors import format_labels
from ..strategy import Column, Obj, Strategy
from ..table import AGE, NONE
from ..validation import (
    invalid_each,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_valid_ip,
    is_valid_port_name,
    is_valid_port_num,
    validate_enum,
    validate_labels,
)
from ._common import section, set_default
from ._podspec import PROTOCOLS

TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
AFFINITIES = ["ClientIP", "None"]
TRAFFIC_POLICIES = ["Cluster", "Local"]
HEADLESS = "None"
CLIENT_IP_TIMEOUT_S = 10800


def _has_cluster_ip(spec: dict[str, Any]) -> bool:
    return spec.get("type") != "ExternalName"


def _has_node_ports(spec: dict[str, Any]) -> bool:
    return spec.get("type") in ("NodePort", "LoadBalancer")


class ServiceStrategy(Strategy):
    has_status = True
    name_validator = staticmethod(is_dns1035_label)

    def initial_status(self, obj: Obj) -> None:
        obj["status"] = {"loadBalancer": {}}

    def default(self, obj: Obj) -> None:
        spec = section(obj, "spec")
        set_default(spec, "type", "ClusterIP")
        set_default(spec, "sessionAffinity", "None")
        for port in spec.get("ports") or []:
            set_default(port, "protocol", "TCP")
            if port.get("targetPort") in (None, 0, ""):
                port["targetPort"] = port.get("port")
        if spec["sessionAffinity"] == "ClientIP":
            client_ip = section(section(spec, "sessionAffinityConfig"), "clientIP")
            set_default(client_ip, "timeoutSeconds", CLIENT_IP_TIMEOUT_S)
        if _has_cluster_ip(spec):
            set_default(spec, "internalTrafficPolicy", "Cluster")
        if _has_node_ports(spec):
            set_default(spec, "externalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            set_default(spec, "allocateLoadBalancerNodePorts", True)
        _sync_cluster_ips(spec)

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        """Carry allocated values over when the update leaves them out (``kubectl apply`` of a
        manifest never names the cluster IP it was given)."""
        super().prepare_for_update(new, old)
        spec, old_spec = section(new, "spec"), old.get("spec") or {}
        _sync_cluster_ips(spec)
        if _has_cluster_ip(spec) and _has_cluster_ip(old_spec) and not spec.get("clusterIP"):
            for key in ("clusterIP", "clusterIPs"):
                if key in old_spec:
                    spec[key] = old_spec[key]
        if _has_node_ports(spec) and _has_node_ports(old_spec):
            by_name = {p.get("name") or "": p.get("nodePort") for p in old_spec.get("ports") or []}
            used = {p.get("nodePort") for p in spec.get("ports") or []}
            for port in spec.get("ports") or []:
                old_port = by_name.get(port.get("name") or "")
                if not port.get("nodePort") and old_port and old_port not in used:
                    port["nodePort"] = old_port

    def validate(self, obj: Obj) -> list[Cause]:
        spec: dict[str, Any] = obj.get("spec") or {}
        kind = spec.get("type")
        causes = validate_enum(kind, TYPES, "spec.type")
        causes += validate_enum(spec.get("sessionAffinity"), AFFINITIES, "spec.sessionAffinity")
        cluster_ip = spec.get("clusterIP") or ""
        if kind == "ExternalName":
            causes += _validate_external_name(spec)
        for i, ip in enumerate(spec.get("clusterIPs") or []):
            if ip != HEADLESS:
                causes += invalid_each(f"spec.clusterIPs[{i}]", ip, is_valid_ip(ip))
        ports = spec.get("ports") or []
        if not ports and cluster_ip != HEADLESS and kind != "ExternalName":
            causes.append(required("spec.ports"))
        causes += _validate_ports(ports, kind)
        for key in ("internalTrafficPolicy", "externalTrafficPolicy"):
            if spec.get(key) is not None:
                causes += validate_enum(spec[key], TRAFFIC_POLICIES, f"spec.{key}")
        return causes + validate_labels(spec.get("selector"), "spec.selector")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        """A cluster IP, once allocated, stays (unless the type moves to or from
        ExternalName, which has none)."""
        causes = self.validate(new)
        spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
        before = old_spec.get("clusterIP")
        if before and _has_cluster_ip(spec) and _has_cluster_ip(old_spec) \
                and spec.get("clusterIP") != before:
            causes.append(invalid_value("spec.clusterIPs[0]", spec.get("clusterIP") or "",
                                        "may not change once set"))
        return causes

    def columns(self) -> list[Column]:
        def spec_of(o: Obj) -> dict[str, Any]:
            return o.get("spec") or {}
        return [
            Column("Type", lambda o, _now: spec_of(o).get("type") or "",
                   description="type determines how the Service is exposed."),
            Column("Cluster-IP", lambda o, _now: (spec_of(o).get("clusterIPs") or [NONE])[0],
                   description="clusterIP is the IP address of the service."),
            Column("External-IP", _external_ip,
                   description="externalIPs is a list of IP addresses for which nodes in the "
                   "cluster will also accept traffic for this service."),
            Column("Port(s)", _ports, description="The list of ports that are exposed by "
                   "this service."),
            AGE,
            Column("Selector", lambda o, _now: format_labels(spec_of(o).get("selector")),
                   priority=1, description="Route service traffic to pods with label keys "
                   "and values matching this selector."),
        ]


def _sync_cluster_ips(spec: dict[str, Any]) -> None:
    """``clusterIP`` is ``clusterIPs[0]``; a client may send either (Kubernetes' conversion)."""
    if spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]
    elif spec.get("clusterIPs") and not spec.get("clusterIP"):
        spec["clusterIP"] = spec["clusterIPs"][0]


def _validate_external_name(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    name = (spec.get("externalName") or "").rstrip(".")
    if not name:
        causes.append(required("spec.externalName"))
    else:
        causes += invalid_each("spec.externalName", name, is_dns1123_subdomain(name))
    if spec.get("clusterIP"):
        causes.append(forbidden_field("spec.clusterIP",
                                      "may not be set for `type` 'ExternalName'"))
    return causes


def _validate_ports(ports: list[dict[str, Any]], kind: Any) -> list[Cause]:
    causes: list[Cause] = []
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        at = f"spec.ports[{i}]"
        name = port.get("name") or ""
        if not name and len(ports) > 1:
            causes.append(required(f"{at}.name"))
        elif name:
            causes += invalid_each(f"{at}.name", name, is_dns1123_label(name))
            if name in names:
                causes.append(duplicate(f"{at}.name", name))
            names.add(name)
        causes += invalid_each(f"{at}.port", port.get("port"), is_valid_port_num(port.get("port")))
        causes += validate_enum(port.get("protocol"), PROTOCOLS, f"{at}.protocol")
        target = port.get("targetPort")
        if isinstance(target, str):
            causes += invalid_each(f"{at}.targetPort", target, is_valid_port_name(target))
        elif target is not None:
            causes += invalid_each(f"{at}.targetPort", target, is_valid_port_num(target))
        node_port = port.get("nodePort")
        if node_port:
            if kind == "ClusterIP":
                causes.append(forbidden_field(f"{at}.nodePort",
                                              "may not be used when `type` is 'ClusterIP'"))
            causes += invalid_each(f"{at}.nodePort", node_port, is_valid_port_num(node_port))
        key = (port.get("port"), port.get("protocol"))
        if key in seen:
            causes.append(duplicate(at, f"{key[0]}/{key[1]}"))
        seen.add(key)
    return causes


def _external_ip(svc: Obj, _now: datetime) -> str:
    spec, status = svc.get("spec") or {}, svc.get("status") or {}
    external = spec.get("externalIPs") or []
    kind = spec.get("type")
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or NONE
    if kind == "LoadBalancer":
        ingress = (status.get("loadBalancer") or {}).get("ingress") or []
        balancers = sorted({i.get("ip") or i.get("hostname") for i in ingress} - {None, ""})
        return ",".join(balancers + external) or "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName") or ""
    return "<unknown>"


def _ports(svc: Obj, _now: datetime) -> str:
    pieces = []
    for port in (svc.get("spec") or {}).get("ports") or []:
        node = f":{port['nodePort']}" if port.get("nodePort") else ""
        pieces.append(f"{port.get('port')}{node}/{port.get('protocol')}")
    return ",".join(pieces) or NONE
