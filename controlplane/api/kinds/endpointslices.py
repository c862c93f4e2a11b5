"""EndpointSlice strategy (discovery.k8s.io/v1): a Service's endpoints in slices of at most
100, written by the endpointslice controller (label ``kubernetes.io/service-name``).

Validation as Kubernetes' ``ValidateEndpointSlice``: ``addressType`` IPv4, IPv6 or FQDN and
immutable; each endpoint has 1 to 100 addresses of that type; ports are named uniquely.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime

from ..errors import Cause, duplicate, invalid_value, required
from ..strategy import Column, Obj, Strategy
from ..table import AGE, NONE
from ..validation import (
    invalid_each,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_valid_port_num,
    too_long,
    validate_enum,
    validate_immutable,
)
from ._common import set_default
from ._podspec import PROTOCOLS

ADDRESS_TYPES = ["IPv4", "IPv6", "FQDN"]
MAX_ENDPOINTS = 1000
MAX_ADDRESSES = 100
MAX_PORTS = 20000
SHOWN_ENDPOINTS = 3


class EndpointSliceStrategy(Strategy):
    def default(self, obj: Obj) -> None:
        for port in obj.get("ports") or []:
            set_default(port, "protocol", "TCP")
            set_default(port, "name", "")

    def validate(self, obj: Obj) -> list[Cause]:
        address_type = obj.get("addressType")
        causes = validate_enum(address_type, ADDRESS_TYPES, "addressType")
        endpoints = obj.get("endpoints") or []
        if len(endpoints) > MAX_ENDPOINTS:
            causes.append(too_long("endpoints", MAX_ENDPOINTS))
        for i, endpoint in enumerate(endpoints):
            causes += _validate_endpoint(endpoint, address_type, f"endpoints[{i}]")
        ports = obj.get("ports") or []
        if len(ports) > MAX_PORTS:
            causes.append(too_long("ports", MAX_PORTS))
        names: set[str] = set()
        for i, port in enumerate(ports):
            at = f"ports[{i}]"
            name = port.get("name") or ""
            if name:
                causes += invalid_each(f"{at}.name", name, is_dns1123_label(name))
            if name in names:
                causes.append(duplicate(f"{at}.name", name))
            names.add(name)
            if port.get("port") is not None:
                causes += invalid_each(f"{at}.port", port.get("port"),
                                       is_valid_port_num(port.get("port")))
            causes += validate_enum(port.get("protocol"), PROTOCOLS, f"{at}.protocol")
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return validate_immutable(new.get("addressType"), old.get("addressType"),
                                  "addressType") + self.validate(new)

    def columns(self) -> list[Column]:
        return [
            Column("AddressType", lambda o, _now: o.get("addressType") or "",
                   description="The IP protocol for this slice"),
            Column("Ports", _ports, description="The ports of this slice"),
            Column("Endpoints", _endpoints, description="The endpoints of this slice"),
            AGE,
        ]


def _validate_endpoint(endpoint: Obj, address_type: str | None, at: str) -> list[Cause]:
    causes: list[Cause] = []
    addresses = endpoint.get("addresses") or []
    if not addresses:
        causes.append(required(f"{at}.addresses"))
    elif len(addresses) > MAX_ADDRESSES:
        causes.append(too_long(f"{at}.addresses", MAX_ADDRESSES))
    for j, address in enumerate(addresses):
        causes += invalid_each(f"{at}.addresses[{j}]", address,
                               _address_errors(address, address_type))
    for key in ("ready", "serving", "terminating"):
        value = (endpoint.get("conditions") or {}).get(key)
        if value is not None and not isinstance(value, bool):
            causes.append(invalid_value(f"{at}.conditions.{key}", value, "must be a boolean"))
    if endpoint.get("nodeName"):
        causes += invalid_each(f"{at}.nodeName", endpoint["nodeName"],
                               is_dns1123_subdomain(endpoint["nodeName"]))
    if endpoint.get("hostname"):
        causes += invalid_each(f"{at}.hostname", endpoint["hostname"],
                               is_dns1123_label(endpoint["hostname"]))
    return causes


def _address_errors(address: object, address_type: str | None) -> list[str]:
    if not isinstance(address, str):
        return ["must be a string"]
    if address_type == "FQDN":
        return is_dns1123_subdomain(address)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ["must be a valid IP address"]
    if address_type == "IPv4" and ip.version != 4:
        return ["must be a valid IPv4 address"]
    if address_type == "IPv6" and ip.version != 6:
        return ["must be a valid IPv6 address"]
    return []


def _ports(obj: Obj, _now: datetime) -> str:
    ports = [str(p.get("port")) for p in obj.get("ports") or [] if p.get("port") is not None]
    return ",".join(ports) if ports else "<unset>"


def _endpoints(obj: Obj, _now: datetime) -> str:
    """The first three addresses, then "+ N more..." (printers.go's ``formatEndpointSlice``)."""
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addresses:
        return NONE
    shown = ",".join(addresses[:SHOWN_ENDPOINTS])
    more = len(addresses) - SHOWN_ENDPOINTS
    return f"{shown} + {more} more..." if more > 0 else shown
