"""The pod spec and pod template, shared by Pods, ReplicaSets and Deployments.

Flow: defaulting (``default_pod_spec``: Kubernetes' ``SetDefaults_PodSpec``, containers, probes,
volumes), validation of a spec (containers, ports, volume mounts, resources, tolerations) and of
a controller's template (``validate_replicated_template``: labels match the selector, restart
policy Always), then the QoS class and the CONTAINERS/IMAGES/SELECTOR columns of controllers.
"""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from typing import Any

from ..errors import Cause, duplicate, forbidden_field, invalid_value, not_supported, required
from ..selectors import LabelSelector, format_label_selector
from ..table import Column
from ..validation import (
    inclusive_range_error,
    invalid_each,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
    is_valid_port_name,
    is_valid_port_num,
    not_found,
    parse_quantity,
    validate_annotations,
    validate_enum,
    validate_labels,
    validate_quantities,
)
from ._common import section, set_default

RESTART_POLICIES = ["Always", "Never", "OnFailure"]
DNS_POLICIES = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
TERMINATION_MESSAGE_POLICIES = ["FallbackToLogsOnError", "File"]
TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]
TOLERATION_OPERATORS = ["Equal", "Exists"]
CONTAINER_LISTS = ("initContainers", "containers")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1,
                  "failureThreshold": 3}
DEFAULT_FILE_MODE = 0o644
MAX_ACTIVE_DEADLINE_SECONDS = 2**32 - 1


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers, then app containers."""
    return [c for key in CONTAINER_LISTS for c in spec.get(key) or []]


# ------------------------------------------------------------------ defaulting

def default_pod_spec(spec: dict[str, Any]) -> None:
    """Kubernetes' pod spec defaults, as applied to Pods and to templates alike."""
    set_default(spec, "restartPolicy", "Always")
    set_default(spec, "dnsPolicy", "ClusterFirst")
    set_default(spec, "securityContext", {})
    set_default(spec, "terminationGracePeriodSeconds", 30)
    set_default(spec, "schedulerName", "default-scheduler")
    for container in containers(spec):
        _default_container(container)
    for volume in spec.get("volumes") or []:
        _default_volume(volume)


def image_pull_policy(image: str) -> str:
    """Always for ":latest" or untagged images, else IfNotPresent (a digest pins the image)."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rpartition(":")[2] if ":" in last else ("" if digest else "latest")
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_container(container: dict[str, Any]) -> None:
    set_default(container, "imagePullPolicy", image_pull_policy(container.get("image") or ""))
    set_default(container, "terminationMessagePath", "/dev/termination-log")
    set_default(container, "terminationMessagePolicy", "File")
    set_default(container, "resources", {})
    for port in container.get("ports") or []:
        set_default(port, "protocol", "TCP")
    for env in container.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if field_ref is not None:
            set_default(field_ref, "apiVersion", "v1")
    for key in PROBES:
        probe = container.get(key)
        if probe:
            for name, value in PROBE_DEFAULTS.items():
                set_default(probe, name, value)
            if probe.get("httpGet") is not None:
                set_default(probe["httpGet"], "path", "/")
                set_default(probe["httpGet"], "scheme", "HTTP")


def _default_volume(volume: dict[str, Any]) -> None:
    """A volume without a source is an emptyDir; projected files default to mode 0644."""
    if set(volume) <= {"name"}:
        volume["emptyDir"] = {}
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        if volume.get(source) is not None:
            set_default(volume[source], "defaultMode", DEFAULT_FILE_MODE)


def default_requests_from_limits(spec: dict[str, Any]) -> None:
    """Pods only (not templates): a limit without a request is also the request."""
    for container in containers(spec):
        resources = section(container, "resources")
        limits = resources.get("limits") or {}
        if limits:
            requests = section(resources, "requests")
            for name, value in limits.items():
                requests.setdefault(name, value)


# ------------------------------------------------------------------ validation

def validate_pod_spec(spec: dict[str, Any], path: str) -> list[Cause]:
    """Kubernetes' ``ValidatePodSpec``, its important rules."""
    causes: list[Cause] = []
    volumes = _validate_volumes(spec.get("volumes") or [], f"{path}.volumes", causes)
    if not spec.get("containers"):
        causes.append(required(f"{path}.containers"))
    names: set[str] = set()
    for key in CONTAINER_LISTS:
        for i, container in enumerate(spec.get(key) or []):
            causes += _validate_container(container, f"{path}.{key}[{i}]", volumes, names)
    causes += validate_enum(spec.get("restartPolicy"), RESTART_POLICIES, f"{path}.restartPolicy")
    causes += validate_enum(spec.get("dnsPolicy"), DNS_POLICIES, f"{path}.dnsPolicy")
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and not 1 <= deadline <= MAX_ACTIVE_DEADLINE_SECONDS:
        causes.append(invalid_value(f"{path}.activeDeadlineSeconds", deadline,
                                    inclusive_range_error(1, MAX_ACTIVE_DEADLINE_SECONDS)))
    for key in ("nodeName", "serviceAccountName", "schedulerName"):
        if spec.get(key):
            causes += invalid_each(f"{path}.{key}", spec[key], is_dns1123_subdomain(spec[key]))
    causes += validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector")
    for i, toleration in enumerate(spec.get("tolerations") or []):
        causes += _validate_toleration(toleration, f"{path}.tolerations[{i}]")
    return causes


def _validate_volumes(volumes: list[dict[str, Any]], path: str, causes: list[Cause]) -> set[str]:
    names: set[str] = set()
    for i, volume in enumerate(volumes):
        name = volume.get("name") or ""
        at = f"{path}[{i}].name"
        if not name:
            causes.append(required(at))
        elif messages := is_dns1123_label(name):
            causes += invalid_each(at, name, messages)
        elif name in names:
            causes.append(duplicate(at, name))
        names.add(name)
    return names


def _validate_container(container: dict[str, Any], path: str, volumes: set[str],
                        names: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    name = container.get("name") or ""
    if not name:
        causes.append(required(f"{path}.name"))
    elif messages := is_dns1123_label(name):
        causes += invalid_each(f"{path}.name", name, messages)
    elif name in names:
        causes.append(duplicate(f"{path}.name", name))
    names.add(name)
    image = container.get("image") or ""
    if not image:
        causes.append(required(f"{path}.image"))
    elif image != image.strip():
        causes.append(invalid_value(f"{path}.image", image,
                                    "must not have leading or trailing whitespace"))
    causes += validate_enum(container.get("imagePullPolicy"), PULL_POLICIES,
                            f"{path}.imagePullPolicy")
    causes += validate_enum(container.get("terminationMessagePolicy"),
                            TERMINATION_MESSAGE_POLICIES, f"{path}.terminationMessagePolicy")
    causes += _validate_ports(container.get("ports") or [], f"{path}.ports")
    causes += _validate_mounts(container.get("volumeMounts") or [], f"{path}.volumeMounts",
                               volumes)
    for i, env in enumerate(container.get("env") or []):
        if not env.get("name"):
            causes.append(required(f"{path}.env[{i}].name"))
    return causes + _validate_resources(container.get("resources") or {}, f"{path}.resources")


def _validate_ports(ports: list[dict[str, Any]], path: str) -> list[Cause]:
    causes: list[Cause] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        at = f"{path}[{i}]"
        name = port.get("name")
        if name:
            if messages := is_valid_port_name(name):
                causes += invalid_each(f"{at}.name", name, messages)
            elif name in names:
                causes.append(duplicate(f"{at}.name", name))
            names.add(name)
        if not port.get("containerPort"):
            causes.append(required(f"{at}.containerPort"))
        else:
            causes += invalid_each(f"{at}.containerPort", port["containerPort"],
                                   is_valid_port_num(port["containerPort"]))
        if port.get("hostPort"):
            causes += invalid_each(f"{at}.hostPort", port["hostPort"],
                                   is_valid_port_num(port["hostPort"]))
        causes += validate_enum(port.get("protocol"), PROTOCOLS, f"{at}.protocol")
    return causes


def _validate_mounts(mounts: list[dict[str, Any]], path: str, volumes: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    paths: set[str] = set()
    for i, mount in enumerate(mounts):
        at = f"{path}[{i}]"
        name, mount_path = mount.get("name") or "", mount.get("mountPath") or ""
        if not name:
            causes.append(required(f"{at}.name"))
        elif name not in volumes:
            causes.append(not_found(f"{at}.name", name))
        if not mount_path:
            causes.append(required(f"{at}.mountPath"))
        elif mount_path in paths:
            causes.append(invalid_value(f"{at}.mountPath", mount_path, "must be unique"))
        paths.add(mount_path)
    return causes


def _validate_resources(resources: dict[str, Any], path: str) -> list[Cause]:
    limits, causes = validate_quantities(resources.get("limits"), f"{path}.limits")
    requests, more = validate_quantities(resources.get("requests"), f"{path}.requests")
    for name, amount in requests.items():
        if name in limits and amount > limits[name]:
            causes.append(invalid_value(
                f"{path}.requests", resources["requests"][name],
                f"must be less than or equal to {name} limit of {resources['limits'][name]}"))
    return causes + more


def validate_taint_effect(effect: Any, path: str, *, allow_empty: bool) -> list[Cause]:
    """Taints need an effect; tolerations may leave it empty (any effect)."""
    if not effect:
        return [] if allow_empty else [required(path)]
    return [] if effect in TAINT_EFFECTS else [not_supported(path, effect, TAINT_EFFECTS)]


def _validate_toleration(toleration: dict[str, Any], path: str) -> list[Cause]:
    key, op = toleration.get("key") or "", toleration.get("operator") or ""
    value, effect = toleration.get("value") or "", toleration.get("effect") or ""
    causes = invalid_each(f"{path}.key", key, is_qualified_name(key)) if key else []
    if not key and op != "Exists":
        causes.append(invalid_value(f"{path}.operator", op, "operator must be Exists when `key` "
                                    'is empty, which means "match all values and all keys"'))
    if toleration.get("tolerationSeconds") is not None and effect != "NoExecute":
        causes.append(invalid_value(f"{path}.effect", effect,
                                    "effect must be 'NoExecute' when `tolerationSeconds` is set"))
    if op in ("", "Equal"):
        if messages := is_label_value(value):
            causes.append(invalid_value(f"{path}.operator", value, ";".join(messages)))
    elif op == "Exists":
        if value:
            causes.append(invalid_value(f"{path}.operator", toleration,
                                        "value must be empty when `operator` is 'Exists'"))
    else:
        causes.append(not_supported(f"{path}.operator", op, TOLERATION_OPERATORS))
    return causes + validate_taint_effect(effect, f"{path}.effect", allow_empty=True)


def validate_pod_template(template: dict[str, Any], path: str) -> list[Cause]:
    """Kubernetes' ``ValidatePodTemplateSpec`` (its labels path lacks "metadata", as there)."""
    meta = template.get("metadata") or {}
    return (validate_labels(meta.get("labels"), f"{path}.labels")
            + validate_annotations(meta.get("annotations"), f"{path}.annotations")
            + validate_pod_spec(template.get("spec") or {}, f"{path}.spec"))


def validate_replicated_template(template: dict[str, Any] | None, path: str,
                                 selector: LabelSelector) -> list[Cause]:
    """A ReplicaSet's or Deployment's template: its pods must be selected and restart."""
    if template is None:
        return [required(path)]
    causes: list[Cause] = []
    labels = (template.get("metadata") or {}).get("labels")
    if not selector.empty and not selector.matches(labels):
        causes.append(invalid_value(f"{path}.metadata.labels", labels,
                                    "`selector` does not match template `labels`"))
    causes += validate_pod_template(template, path)
    spec = template.get("spec") or {}
    if spec.get("restartPolicy") not in (None, "Always"):
        causes.append(not_supported(f"{path}.spec.restartPolicy", spec["restartPolicy"],
                                    ["Always"]))
    if spec.get("activeDeadlineSeconds") is not None:
        causes.append(forbidden_field(f"{path}.spec.activeDeadlineSeconds",
                                      "activeDeadlineSeconds in ReplicaSet is not Supported"))
    return causes


# ------------------------------------------------------------------ QoS and columns

_QOS_RESOURCES = ("cpu", "memory")


def qos_class(spec: dict[str, Any]) -> str:
    """Kubernetes' ``GetPodQOS`` over cpu and memory; a limit alone counts as the request too
    (pod defaulting copies it), so the answer does not depend on defaulting having run."""
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for container in containers(spec):
        resources = container.get("resources") or {}
        declared_limits = _nonzero(resources.get("limits"))
        declared_requests = {**declared_limits, **_nonzero(resources.get("requests"))}
        for name, amount in declared_requests.items():
            requests[name] = requests.get(name, Fraction(0)) + amount
        for name, amount in declared_limits.items():
            limits[name] = limits.get(name, Fraction(0)) + amount
        if set(declared_limits) != set(_QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"


def _nonzero(resources: Any) -> dict[str, Fraction]:
    """The non-zero cpu and memory amounts (bad quantities are validation's business)."""
    amounts: dict[str, Fraction] = {}
    for name in _QOS_RESOURCES:
        try:
            amount = parse_quantity((resources or {})[name])
        except (KeyError, ValueError):
            continue
        if amount:
            amounts[name] = amount
    return amounts


def _template_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return spec.get("containers") or []


def _join(obj: dict[str, Any], key: str) -> str:
    return ",".join(c.get(key) or "" for c in _template_containers(obj))


def template_columns() -> list[Column]:
    """The wide columns of ReplicaSets and Deployments."""
    def selector(obj: dict[str, Any], _now: datetime) -> str:
        return format_label_selector((obj.get("spec") or {}).get("selector"))
    return [
        Column("Containers", lambda o, _now: _join(o, "name"), priority=1,
               description="Names of each container in the template."),
        Column("Images", lambda o, _now: _join(o, "image"), priority=1,
               description="Images referenced by each container in the template."),
        Column("Selector", selector, priority=1,
               description="Label query over pods that should match the replicas count."),
    ]
