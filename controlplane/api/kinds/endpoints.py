"""Endpoints strategy: the addresses and ports behind a Service, written by the endpoints
controller. Light validation: addresses are IPs, ports are ports.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import Cause, required
from ..strategy import Column, Obj, Strategy
from ..table import AGE, NONE
from ..validation import (
    invalid_each,
    is_dns1123_label,
    is_valid_ip,
    is_valid_port_num,
    required_because,
    validate_enum,
)
from ._common import set_default
from ._podspec import PROTOCOLS

SHOWN_ADDRESSES = 3


class EndpointsStrategy(Strategy):
    def default(self, obj: Obj) -> None:
        for subset in obj.get("subsets") or []:
            for port in subset.get("ports") or []:
                set_default(port, "protocol", "TCP")

    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        for i, subset in enumerate(obj.get("subsets") or []):
            at = f"subsets[{i}]"
            if not subset.get("addresses") and not subset.get("notReadyAddresses"):
                causes.append(required_because(at, "must specify `addresses` or "
                                               "`notReadyAddresses`"))
            for key in ("addresses", "notReadyAddresses"):
                for j, address in enumerate(subset.get(key) or []):
                    ip = address.get("ip") or ""
                    causes += invalid_each(f"{at}.{key}[{j}].ip", ip, is_valid_ip(ip))
            causes += _validate_ports(subset.get("ports") or [], f"{at}.ports")
        return causes

    def columns(self) -> list[Column]:
        return [Column("Endpoints", _endpoints, description="The set of all endpoints is the "
                       "union of all subsets."), AGE]


def _validate_ports(ports: list[dict[str, Any]], path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, port in enumerate(ports):
        at = f"{path}[{i}]"
        name = port.get("name") or ""
        if name:
            causes += invalid_each(f"{at}.name", name, is_dns1123_label(name))
        elif len(ports) > 1:
            causes.append(required(f"{at}.name"))
        causes += invalid_each(f"{at}.port", port.get("port"), is_valid_port_num(port.get("port")))
        causes += validate_enum(port.get("protocol"), PROTOCOLS, f"{at}.protocol")
    return causes


def _endpoints(obj: Obj, _now: datetime) -> str:
    """The first three ip:port pairs, then "+ N more..." (printers.go's ``formatEndpoints``)."""
    subsets = obj.get("subsets") or []
    if not subsets:
        return NONE
    pairs = []
    for subset in subsets:
        ips = [a.get("ip") or "" for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        if not ports:
            pairs += ips
        for port in ports:
            pairs += [f"[{ip}]:{port.get('port')}" if ":" in ip else f"{ip}:{port.get('port')}"
                      for ip in ips]
    shown = ",".join(pairs[:SHOWN_ADDRESSES])
    more = len(pairs) - SHOWN_ADDRESSES
    return f"{shown} + {more} more..." if more > 0 else shown
