"""What a container's environment is: the kubelet's ``makeEnvironmentVariables``, in Python.

The flow, in the order the code below appears:

1. ``SourceLookup`` is the boundary to the API: it fetches a ConfigMap or a Secret by namespace
   and name (``None`` when it does not exist). The agent backs it with its informer cache or the
   API client; ``DictLookup`` is the in-memory one for tests and hollow nodes. ``volumes`` uses
   the same boundary.
2. ``expand`` is Kubernetes' ``$(VAR)`` expansion (third_party/forked/golang/expansion): a
   reference to a defined variable is replaced, an undefined one is left as written, ``$$`` is a
   literal ``$``, and a ``$`` before anything else is kept as is.
3. The downward API: ``field_path_value`` reads the metadata fields a pod exposes (shared with
   downwardAPI volumes), ``pod_field_value`` adds what only the kubelet knows (node name, host
   and pod IPs), and ``container_resource_value`` reads a container's requests and limits
   through a divisor, rounding up as the kubelet does. A limit that is not set reads as the
   node's allocatable amount, when the caller gives it.
4. ``resolve_env`` puts it together: ``envFrom`` first (keys that are not valid variable names
   are skipped and logged, as the kubelet's "InvalidEnvironmentVariableNames" Event), then
   ``env`` in order, where each entry may refer to every variable defined before it and to the
   Service variables (``serviceenv``), which come last unless the container set the name.

Ordering. The kubelet collects the variables in a Go map and emits them in map order (random);
only the values are specified: an ``env`` entry overrides an ``envFrom`` key of the same name,
and a later ``envFrom`` source overrides an earlier one. We keep the same values and choose a
stable order: a variable stays at the position where it was first defined, so the result (and
any hash over it) does not change from one sync to the next.

Errors are ``ContainerConfigError`` whose message is the text the kubelet shows in the
container's ``waiting`` state with reason ``CreateContainerConfigError``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any, Protocol

from controlplane.client.quantity import parse_quantity

log = logging.getLogger(__name__)

Obj = dict[str, Any]

#: The container waiting reason the caller reports a ``ContainerConfigError`` with.
REASON_CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"

CONFIGMAPS = "configmaps"
SECRETS = "secrets"
#: The resource names in the kubelet's NotFound messages (its watch-based managers register
#: ``corev1.Resource("configmap")`` and ``("secret")``, singular).
_SINGULAR = {CONFIGMAPS: "configmap", SECRETS: "secret"}
_KIND = {CONFIGMAPS: "ConfigMap", SECRETS: "Secret"}

#: apimachinery's ``IsEnvVarName``.
ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")

#: ``ConvertDownwardAPIFieldLabel``: the field paths a v1 ``fieldRef`` may name.
FIELD_LABELS = frozenset({
    "metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace",
    "metadata.uid", "spec.nodeName", "spec.restartPolicy", "spec.serviceAccountName",
    "spec.schedulerName", "status.phase", "status.hostIP", "status.hostIPs", "status.podIP",
    "status.podIPs",
})


class ContainerConfigError(Exception):
    """The container cannot be configured (reason ``CreateContainerConfigError``); the message
    is the kubelet's, e.g. ``configmap "app" not found``."""


# ------------------------------------------------------------------ the lookup boundary

class SourceLookup(Protocol):
    """Reads ConfigMaps and Secrets of the pod's namespace; a boundary so that resolution is
    tested without an API."""

    async def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        """The object (``resource`` is "configmaps" or "secrets"), or None when absent."""
        ...


class DictLookup:
    """An in-memory ``SourceLookup``. It hands out copies, as an API would, so that nothing
    the resolver does can change what the next caller sees."""

    def __init__(self, *, configmaps: Iterable[Obj] = (), secrets: Iterable[Obj] = ()) -> None:
        self._objects: dict[tuple[str, str, str], Obj] = {}
        for obj in configmaps:
            self.put(CONFIGMAPS, obj)
        for obj in secrets:
            self.put(SECRETS, obj)

    def put(self, resource: str, obj: Obj) -> None:
        meta = obj["metadata"]
        self._objects[(resource, meta.get("namespace", "default"), meta["name"])] = copy.deepcopy(obj)

    def delete(self, resource: str, namespace: str, name: str) -> None:
        self._objects.pop((resource, namespace, name), None)

    async def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        obj = self._objects.get((resource, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None


def not_found_message(resource: str, name: str) -> str:
    """The kubelet's text for a missing source: ``configmap "app" not found``."""
    return f'{_SINGULAR.get(resource, resource)} "{name}" not found'


def missing_key_message(resource: str, namespace: str, name: str, key: str) -> str:
    """The kubelet's text for a missing key: ``couldn't find key k in ConfigMap default/app``."""
    return f"couldn't find key {key} in {_KIND.get(resource, resource)} {namespace}/{name}"


def secret_data(secret: Obj) -> dict[str, bytes]:
    """A Secret's ``data``, decoded: the API stores and serves it base64-encoded (``stringData``
    is folded into ``data`` on write and never stored)."""
    out: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            name = (secret.get("metadata") or {}).get("name", "")
            raise ValueError(f'secret "{name}": data key {key} is not valid base64') from exc
    return out


def configmap_binary_data(configmap: Obj) -> dict[str, bytes]:
    """A ConfigMap's ``binaryData``, decoded from its base64 wire form."""
    out: dict[str, bytes] = {}
    for key, value in (configmap.get("binaryData") or {}).items():
        try:
            out[key] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            name = (configmap.get("metadata") or {}).get("name", "")
            raise ValueError(f'configmap "{name}": binaryData key {key} is not valid base64') from exc
    return out


def _text(value: bytes) -> str:
    """Secret bytes as an environment value. Go puts the raw bytes in; the runtime API takes
    text, so bytes that are not UTF-8 become U+FFFD."""
    return value.decode("utf-8", errors="replace")


# ------------------------------------------------------------------ $(VAR) expansion

_OPERATOR, _OPENER, _CLOSER = "$", "(", ")"


def mapping_for(*contexts: Mapping[str, str]) -> Callable[[str], str]:
    """``expansion.MappingFuncFor``: the first context defining a name wins; an undefined
    reference expands to itself, ``$(NAME)``."""
    def mapping(name: str) -> str:
        for context in contexts:
            if name in context:
                return context[name]
        return f"{_OPERATOR}{_OPENER}{name}{_CLOSER}"
    return mapping


def expand(value: str, mapping: Callable[[str], str]) -> str:
    """``expansion.Expand``: ``$(NAME)`` -> ``mapping(NAME)``, ``$$`` -> ``$``, an unclosed
    ``$(`` and a ``$`` before any other character (or at the end) stay as written."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(value):
        if value[cursor] == _OPERATOR and cursor + 1 < len(value):
            out.append(value[checkpoint:cursor])
            read, is_var, advance = _read_variable_name(value[cursor + 1:])
            out.append(mapping(read) if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + value[checkpoint:]


def _read_variable_name(rest: str) -> tuple[str, bool, int]:
    """``tryReadVariableName``: what follows a ``$``: (text, is a variable, chars consumed)."""
    if rest[0] == _OPERATOR:
        return _OPERATOR, False, 1
    if rest[0] == _OPENER:
        closer = rest.find(_CLOSER, 1)
        if closer >= 0:
            return rest[1:closer], True, closer + 1
        return _OPERATOR + _OPENER, False, 1
    return _OPERATOR + rest[0], False, 1


# ------------------------------------------------------------------ the downward API

def split_subscripted(path: str) -> tuple[str, str] | None:
    """``metadata.labels['k']`` -> ("metadata.labels", "k"); None when not subscripted."""
    if not path.endswith("']"):
        return None
    head, sep, subscript = path[:-2].partition("['")
    if not sep or not head:
        return None
    return head, subscript


def _go_quote(text: str) -> str:
    """Go's ``%q`` of a string (used by ``FormatMap`` for whole label/annotation maps)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
               "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    out = ['"']
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def format_map(values: Mapping[str, str]) -> str:
    """``fieldpath.FormatMap``: ``key="value"`` lines in key order, no trailing newline."""
    return "\n".join(f"{key}={_go_quote(values[key])}" for key in sorted(values))


def field_path_value(pod: Obj, path: str) -> str:
    """``fieldpath.ExtractFieldPathAsString``: the metadata fields of a pod. downwardAPI volumes
    support exactly these; ValueError (the kubelet's text) for anything else."""
    meta = pod.get("metadata") or {}
    subscripted = split_subscripted(path)
    if subscripted is not None:
        head, key = subscripted
        if head == "metadata.annotations":
            return str((meta.get("annotations") or {}).get(key, ""))
        if head == "metadata.labels":
            return str((meta.get("labels") or {}).get(key, ""))
        raise ValueError(f'fieldPath "{path}" does not support subscript')
    if path == "metadata.annotations":
        return format_map(meta.get("annotations") or {})
    if path == "metadata.labels":
        return format_map(meta.get("labels") or {})
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta.get(path.removeprefix("metadata."), ""))
    raise ValueError(f"unsupported fieldPath: {path}")


def convert_field_label(api_version: str, path: str) -> str:
    """``ConvertDownwardAPIFieldLabel``: checks that a v1 ``fieldRef`` may name ``path``."""
    if api_version != "v1":
        raise ValueError(f"unsupported pod version: {api_version}")
    subscripted = split_subscripted(path)
    if subscripted is not None:
        if subscripted[0] in ("metadata.annotations", "metadata.labels"):
            return path
        raise ValueError(f"field label does not support subscript: {path}")
    if path == "spec.host":    # old v1 clients
        return "spec.nodeName"
    if path not in FIELD_LABELS:
        raise ValueError(f"field label not supported: {path}")
    return path


def pod_field_value(pod: Obj, field_ref: Mapping[str, Any], *, pod_ips: Sequence[str],
                    host_ips: Sequence[str], node_name: str) -> str:
    """``podFieldSelectorRuntimeValue``: an env ``fieldRef``. Node and IP fields come from the
    agent (the pod's status may not carry them yet when the container is created)."""
    path = convert_field_label(field_ref.get("apiVersion") or "v1", field_ref.get("fieldPath", ""))
    spec = pod.get("spec") or {}
    if path == "spec.nodeName":
        return str(spec.get("nodeName") or node_name)
    if path == "spec.serviceAccountName":
        return str(spec.get("serviceAccountName") or "")
    if path == "status.hostIP":
        return host_ips[0] if host_ips else ""
    if path == "status.hostIPs":
        return ",".join(host_ips)
    if path == "status.podIP":
        return pod_ips[0] if pod_ips else ""
    if path == "status.podIPs":
        return ",".join(pod_ips)
    return field_path_value(pod, path)


#: ``resourceFieldRef.resource`` -> (section of ``resources``, resource name, reads as CPU).
_RESOURCE_FIELDS: dict[str, tuple[str, str, bool]] = {
    "limits.cpu": ("limits", "cpu", True),
    "limits.memory": ("limits", "memory", False),
    "limits.ephemeral-storage": ("limits", "ephemeral-storage", False),
    "requests.cpu": ("requests", "cpu", True),
    "requests.memory": ("requests", "memory", False),
    "requests.ephemeral-storage": ("requests", "ephemeral-storage", False),
}
#: ``MergeContainerResourceLimits``: the limits that default to the node's allocatable.
_DEFAULTED_LIMITS = ("cpu", "memory", "ephemeral-storage")


def find_container(pod: Obj, name: str) -> Obj:
    """The pod's container (regular or init) of that name; ValueError as the kubelet's."""
    spec = pod.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if container.get("name") == name:
            return container
    raise ValueError(f"container {name} not found")


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def container_resource_value(selector: Mapping[str, Any], pod: Obj, container: Obj | None, *,
                             allocatable: Mapping[str, str | int | float] | None = None) -> str:
    """``ExtractResourceValueByContainerNameAndNodeAllocatable``: a request or limit divided by
    ``divisor`` (default 1), rounded up: CPU in millicores, the others in units. An unset (or
    zero) limit reads as the node's allocatable amount; without one it reads as 0."""
    if selector.get("containerName"):
        container = find_container(pod, selector["containerName"])
    if container is None:
        raise ValueError("resourceFieldRef without a container")
    resource = selector.get("resource", "")
    if resource not in _RESOURCE_FIELDS:
        raise ValueError(f"unsupported container resource : {resource}")
    section, name, is_cpu = _RESOURCE_FIELDS[resource]
    values = dict(((container.get("resources") or {}).get(section)) or {})
    quantity = parse_quantity(values[name]) if name in values else Fraction(0)
    if section == "limits" and quantity == 0 and name in _DEFAULTED_LIMITS and allocatable \
            and name in allocatable:
        quantity = parse_quantity(allocatable[name])
    divisor = parse_quantity(selector.get("divisor", 0) or 0)
    if divisor == 0:
        divisor = Fraction(1)
    if is_cpu:    # Quantity.MilliValue rounds up, then the quotient is rounded up
        return str(_ceil_div(math.ceil(quantity * 1000), math.ceil(divisor * 1000)))
    return str(_ceil_div(math.ceil(quantity), math.ceil(divisor)))


# ------------------------------------------------------------------ resolution

async def _fetch(lookup: SourceLookup, cache: dict[tuple[str, str], Obj | None], resource: str,
                 namespace: str, name: str) -> Obj | None:
    """One fetch per source per resolution, as the kubelet's per-call maps: every entry sees
    the same version of a ConfigMap."""
    key = (resource, name)
    if key not in cache:
        cache[key] = await lookup.get(resource, namespace, name)
    return cache[key]


def _source_data(resource: str, obj: Obj) -> dict[str, str]:
    """The string data a source contributes to the environment (ConfigMap ``binaryData`` is
    never used for env, as in the kubelet)."""
    if resource == SECRETS:
        return {key: _text(value) for key, value in secret_data(obj).items()}
    return {key: str(value) for key, value in (obj.get("data") or {}).items()}


async def resolve_env(pod: Obj, container: Obj, lookup: SourceLookup, *, pod_ip: str,
                      host_ip: str, node_name: str, pod_ips: Sequence[str] = (),
                      host_ips: Sequence[str] = (),
                      allocatable: Mapping[str, str | int | float] | None = None,
                      services: Mapping[str, str] | None = None,
                      ) -> list[tuple[str, str]]:
    """The container's environment, as ``makeEnvironmentVariables``: ``envFrom`` then ``env``;
    (name, value) pairs in first-definition order, then the Service variables (``services``,
    from ``serviceenv``) the container does not set itself; ``$(VAR)`` sees both, its own
    first.
    ``pod_ips``/``host_ips`` default to the single IPs. ``ContainerConfigError`` when a
    required source or key is missing or a field cannot be read."""
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    pod_ips = list(pod_ips) or ([pod_ip] if pod_ip else [])
    host_ips = list(host_ips) or ([host_ip] if host_ip else [])
    cache: dict[tuple[str, str], Obj | None] = {}
    env: dict[str, str] = {}
    services = services or {}
    try:
        for env_from in container.get("envFrom") or []:
            await _add_env_from(env, env_from, pod, container, lookup, cache, namespace)
        mapping = mapping_for(env, services)
        for entry in container.get("env") or []:
            value = await _env_value(entry, pod, container, lookup, cache, namespace, mapping,
                                     pod_ips=pod_ips, host_ips=host_ips, node_name=node_name,
                                     allocatable=allocatable)
            if value is not None:
                env[entry["name"]] = value
    except ValueError as exc:
        raise ContainerConfigError(str(exc)) from exc
    return list(env.items()) + [(k, v) for k, v in services.items() if k not in env]


async def _add_env_from(env: dict[str, str], env_from: Mapping[str, Any], pod: Obj,
                        container: Obj, lookup: SourceLookup,
                        cache: dict[tuple[str, str], Obj | None], namespace: str) -> None:
    if env_from.get("configMapRef") is not None:
        resource, ref = CONFIGMAPS, env_from["configMapRef"]
    elif env_from.get("secretRef") is not None:
        resource, ref = SECRETS, env_from["secretRef"]
    else:
        return
    name = ref.get("name", "")
    obj = await _fetch(lookup, cache, resource, namespace, name)
    if obj is None:
        if ref.get("optional"):
            return
        raise ContainerConfigError(not_found_message(resource, name))
    prefix = env_from.get("prefix") or ""
    invalid: list[str] = []
    for key, value in _source_data(resource, obj).items():
        key = prefix + key
        if not ENV_VAR_NAME.fullmatch(key):
            invalid.append(key)
            continue
        env[key] = value
    if invalid:
        log.warning("pod %s/%s container %s: keys [%s] from the EnvFrom %s %s/%s were skipped "
                    "since they are considered invalid environment variable names",
                    namespace, (pod.get("metadata") or {}).get("name", ""), container.get("name"),
                    ", ".join(sorted(invalid)), _SINGULAR[resource], namespace, name)


async def _env_value(entry: Mapping[str, Any], pod: Obj, container: Obj, lookup: SourceLookup,
                     cache: dict[tuple[str, str], Obj | None], namespace: str,
                     mapping: Callable[[str], str], *, pod_ips: Sequence[str],
                     host_ips: Sequence[str], node_name: str,
                     allocatable: Mapping[str, str | int | float] | None) -> str | None:
    """One ``env`` entry's value; None when an optional source or key is missing (the variable
    is then not set at all, an earlier ``envFrom`` value of that name stays)."""
    value = entry.get("value") or ""
    source = entry.get("valueFrom")
    if value or not source:
        return expand(value, mapping) if value else ""
    if source.get("fieldRef") is not None:
        return pod_field_value(pod, source["fieldRef"], pod_ips=pod_ips, host_ips=host_ips,
                               node_name=node_name)
    if source.get("resourceFieldRef") is not None:
        return container_resource_value(source["resourceFieldRef"], pod, container,
                                        allocatable=allocatable)
    if source.get("configMapKeyRef") is not None:
        resource, ref = CONFIGMAPS, source["configMapKeyRef"]
    elif source.get("secretKeyRef") is not None:
        resource, ref = SECRETS, source["secretKeyRef"]
    else:
        return ""
    name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
    obj = await _fetch(lookup, cache, resource, namespace, name)
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(not_found_message(resource, name))
    data = _source_data(resource, obj)
    if key not in data:
        if optional:
            return None
        raise ContainerConfigError(missing_key_message(resource, namespace, name, key))
    return data[key]
