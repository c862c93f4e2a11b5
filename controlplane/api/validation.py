"""Generic validation, as Kubernetes' apimachinery does it: formats, metadata, quantities.

Flow: format checks that return Kubernetes' own messages (``is_dns1123_label``,
``is_qualified_name``, ...), helpers turning messages into causes at a field path, the checks
shared by many kinds (non-negative numbers, immutable fields, labels, annotations, label
selectors), ``validate_object_meta`` and ``validate_object_meta_update``, and last resource
quantities ("100m", "1Gi"), parsed exactly so that requests and limits compare right.
Everything here is pure: values in, messages or causes out. Field paths are written as
Kubernetes writes them ("metadata.name", "spec.containers[0].image").
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

from ..client.quantity import parse_quantity
from .errors import (
    Cause,
    cause,
    forbidden_field,
    invalid_value,
    not_supported,
    required,
)

DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
QUALIFIED_NAME_MAX_LENGTH = 63
LABEL_VALUE_MAX_LENGTH = 63
PORT_NAME_MAX_LENGTH = 15
TOTAL_ANNOTATION_SIZE_LIMIT_B = 256 * 1024
IMMUTABLE = "field is immutable"
NEGATIVE = "must be greater than or equal to 0"
NOT_POSITIVE = "must be greater than zero"

_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + "(\\." + _DNS1123_LABEL + ")*"
_DNS1035_LABEL = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = "(" + _QUALIFIED_NAME + ")?"
_CONFIG_MAP_KEY = "[-._a-zA-Z0-9]+"
_PERCENT = "[0-9]+%"

_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                      "characters or '-', and must start and end with an alphanumeric character")
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                          "characters, '-' or '.', and must start and end with an alphanumeric "
                          "character")
_DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or "
                      "'-', start with an alphabetic character, and end with an alphanumeric "
                      "character")
_QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start "
                       "and end with an alphanumeric character")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character")
_CONFIG_MAP_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
_PERCENT_MSG = "a valid percent string must be a numeric string followed by an ending '%'"


# ------------------------------------------------------------------ format checks (messages)

def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Kubernetes' ``RegexError``, examples and all (its double space included)."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    listed = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {listed}regex used for validation is '{fmt}')"


def inclusive_range_error(lo: int, hi: int) -> str:
    return f"must be between {lo} and {hi}, inclusive"


def _matches(fmt: str, value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(fmt, value) is not None


def _length_and_format(value: str, max_length: int, fmt: str, msg: str, *examples: str
                       ) -> list[str]:
    """The two checks most formats make, in Kubernetes' order: length, then pattern."""
    errs = [max_len_error(max_length)] if len(value) > max_length else []
    if not _matches(fmt, value):
        errs.append(regex_error(msg, fmt, *examples))
    return errs


def is_dns1123_label(value: str) -> list[str]:
    errs = _length_and_format(value, DNS1123_LABEL_MAX_LENGTH, _DNS1123_LABEL,
                              _DNS1123_LABEL_MSG, "my-name", "123-abc")
    if _matches(_DNS1123_SUBDOMAIN, value) and not _matches(_DNS1123_LABEL, value):
        errs[-1] = "must not contain dots"
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    return _length_and_format(value, DNS1123_SUBDOMAIN_MAX_LENGTH, _DNS1123_SUBDOMAIN,
                              _DNS1123_SUBDOMAIN_MSG, "example.com")


def is_dns1035_label(value: str) -> list[str]:
    return _length_and_format(value, DNS1123_LABEL_MAX_LENGTH, _DNS1035_LABEL,
                              _DNS1035_LABEL_MSG, "my-name", "abc-123")


def is_qualified_name(value: str) -> list[str]:
    """Label keys, annotation keys and finalizers: ``[prefix/]name``."""
    parts = value.split("/")
    if len(parts) > 2:
        return ["a qualified name " + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME, "MyName",
                                                  "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    errs = []
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    if not name:
        errs.append("name part must be non-empty")
    errs += ["name part " + m for m in _length_and_format(
        name, QUALIFIED_NAME_MAX_LENGTH, _QUALIFIED_NAME, _QUALIFIED_NAME_MSG, "MyName",
        "my.name", "123-abc")]
    return errs


def is_label_value(value: str) -> list[str]:
    return _length_and_format(value, LABEL_VALUE_MAX_LENGTH, _LABEL_VALUE, _LABEL_VALUE_MSG,
                              "MyValue", "my_value", "12345")


def is_config_map_key(value: str) -> list[str]:
    """Keys of ConfigMap and Secret data: file names, hence no '.' or '..' prefixes."""
    errs = _length_and_format(value, DNS1123_SUBDOMAIN_MAX_LENGTH, _CONFIG_MAP_KEY,
                              _CONFIG_MAP_KEY_MSG, "key.name", "KEY_NAME", "key-name")
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def is_valid_port_num(port: Any) -> list[str]:
    if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
        return []
    return [inclusive_range_error(1, 65535)]


def is_valid_port_name(name: str) -> list[str]:
    """IANA service names as Kubernetes accepts them (lower case only)."""
    errs = []
    if len(name) > PORT_NAME_MAX_LENGTH:
        errs.append(max_len_error(PORT_NAME_MAX_LENGTH))
    if not _matches("[-a-z0-9]+", name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_valid_percent(value: str) -> list[str]:
    return [] if _matches(_PERCENT, value) else [regex_error(_PERCENT_MSG, _PERCENT, "1%", "93%")]


def is_valid_ip(value: str) -> list[str]:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    return []


def is_valid_cidr(value: str) -> list[str]:
    """An address and a prefix length ("10.244.1.0/24"); host bits may be set, as in Go."""
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
            return []
    except ValueError:
        pass
    return ["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]


def base64_error(value: str) -> str | None:
    """Why ``value`` is not standard base64 (as JSON ``[]byte`` fields carry), or None."""
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"illegal base64 data: {exc}"
    return None


# ------------------------------------------------------------------ messages -> causes

def invalid_each(path: str, value: Any, messages: Iterable[str]) -> list[Cause]:
    """One FieldValueInvalid cause per message, as Kubernetes reports format errors."""
    return [invalid_value(path, value, m) for m in messages]


def required_because(path: str, detail: str) -> Cause:
    return cause("FieldValueRequired", path, f"Required value: {detail}")


def not_found(path: str, value: Any) -> Cause:
    return cause("FieldValueNotFound", path, f"Not found: {value!r}")


def too_long(path: str, limit: int) -> Cause:
    return cause("FieldValueTooLong", path, f"Too long: may not be more than {limit} bytes")


def validate_nonnegative(value: Any, path: str) -> list[Cause]:
    """Unset (None) is valid: defaulting fills what must be set."""
    return [invalid_value(path, value, NEGATIVE)] if value is not None and value < 0 else []


def validate_positive(value: Any, path: str) -> list[Cause]:
    return [invalid_value(path, value, NOT_POSITIVE)] if value is not None and value <= 0 else []


def validate_immutable(new: Any, old: Any, path: str) -> list[Cause]:
    return [] if new == old else [invalid_value(path, new, IMMUTABLE)]


def validate_enum(value: Any, allowed: list[str], path: str) -> list[Cause]:
    """Unset is Required, anything else outside ``allowed`` is NotSupported."""
    if value in (None, ""):
        return [required(path)]
    return [] if value in allowed else [not_supported(path, value, allowed)]


def validate_labels(labels: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in sorted((labels or {}).items()):
        causes += invalid_each(path, key, is_qualified_name(key))
        causes += invalid_each(path, value, is_label_value(value))
    return causes


def validate_annotations(annotations: Any, path: str) -> list[Cause]:
    """Keys are qualified names, case aside; all keys and values fit in 256 KiB."""
    annotations = annotations or {}
    causes: list[Cause] = []
    for key in sorted(annotations):
        causes += invalid_each(path, key, is_qualified_name(key.lower()))
    size = sum(len(k) + len(v or "") for k, v in annotations.items())
    if size > TOTAL_ANNOTATION_SIZE_LIMIT_B:
        causes.append(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT_B))
    return causes


def validate_label_selector(selector: Any, path: str) -> list[Cause]:
    """A ``metav1.LabelSelector`` (matchLabels, matchExpressions), strictly."""
    if selector is None:
        return []
    causes = validate_labels(selector.get("matchLabels"), f"{path}.matchLabels")
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        at = f"{path}.matchExpressions[{i}]"
        op, values = expr.get("operator"), expr.get("values") or []
        if op in ("In", "NotIn"):
            if not values:
                causes.append(required_because(
                    f"{at}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                causes.append(forbidden_field(
                    f"{at}.values",
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            causes.append(invalid_value(f"{at}.operator", op, "not a valid selector operator"))
        causes += invalid_each(f"{at}.key", expr.get("key", ""),
                               is_qualified_name(expr.get("key") or ""))
        for j, value in enumerate(values):
            causes += invalid_each(f"{at}.values[{j}]", value, is_label_value(value))
    return causes


# ------------------------------------------------------------------ object metadata

NameValidator = Callable[[str], list[str]]
_OWNER_BANNED = {("", "v1", "Event")}
_EXCLUSIVE_FINALIZERS = ("orphan", "foregroundDeletion")


def validate_object_meta(meta: dict[str, Any], *, namespaced: bool,
                         name_validator: NameValidator) -> list[Cause]:
    """Kubernetes' ``ValidateObjectMeta``; the registry has already turned generateName into
    a name, so an empty name here means neither was given."""
    causes: list[Cause] = []
    name = meta.get("name")
    if not name:
        causes.append(required_because("metadata.name", "name or generateName is required"))
    else:
        causes += invalid_each("metadata.name", name, name_validator(name))
    namespace = meta.get("namespace")
    if namespaced:
        if not namespace:
            causes.append(required("metadata.namespace"))
        else:
            causes += invalid_each("metadata.namespace", namespace, is_dns1123_label(namespace))
    elif namespace:
        causes.append(forbidden_field("metadata.namespace", "not allowed on this type"))
    causes += validate_nonnegative(meta.get("generation"), "metadata.generation")
    return causes + _validate_meta_common(meta)


def _validate_meta_common(meta: dict[str, Any]) -> list[Cause]:
    causes = validate_labels(meta.get("labels"), "metadata.labels")
    causes += validate_annotations(meta.get("annotations"), "metadata.annotations")
    causes += _validate_owner_references(meta.get("ownerReferences") or [])
    finalizers = meta.get("finalizers") or []
    for finalizer in finalizers:
        causes += invalid_each("metadata.finalizers", finalizer, is_qualified_name(finalizer))
    if all(f in finalizers for f in _EXCLUSIVE_FINALIZERS):
        causes.append(invalid_value("metadata.finalizers", finalizers,
                                    "finalizer orphan and foregroundDeletion cannot be both set"))
    return causes


def _validate_owner_references(refs: list[dict[str, Any]]) -> list[Cause]:
    path = "metadata.ownerReferences"
    causes: list[Cause] = []
    controller = ""
    for ref in refs:
        api_version, kind = ref.get("apiVersion") or "", ref.get("kind") or ""
        group, _, version = api_version.rpartition("/")
        if not version:
            causes.append(invalid_value(f"{path}.apiVersion", api_version,
                                        "version must not be empty"))
        for key in ("kind", "name", "uid"):
            if not ref.get(key):
                causes.append(invalid_value(f"{path}.{key}", ref.get(key, ""), "must not be empty"))
        if (group, version, kind) in _OWNER_BANNED:
            causes.append(invalid_value(path, ref, f"{group}/{version}, Kind={kind} is "
                                        "disallowed from being an owner"))
        if ref.get("controller"):
            this = f"{kind}/{ref.get('name', '')}"
            if controller:
                causes.append(invalid_value(
                    path, refs, 'Only one reference can have Controller set to true. Found '
                    f'"true" in references for {controller} and {this}'))
            else:
                controller = this
    return causes


def validate_object_meta_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    """Kubernetes' ``ValidateObjectMetaUpdate``: identity and timestamps never change.

    Like Kubernetes' registry, the caller copies uid, creationTimestamp and the deletion
    fields from the old object when the client left them out, before calling this.
    """
    causes: list[Cause] = []
    if old.get("deletionTimestamp"):
        added = sorted(set(new.get("finalizers") or ()) - set(old.get("finalizers") or ()))
        if added:
            causes.append(forbidden_field(
                "metadata.finalizers", "no new finalizers can be added if the object is being "
                f"deleted, found new finalizers {added}"))
    if (new.get("generation") or 0) < (old.get("generation") or 0):
        causes.append(invalid_value("metadata.generation", new.get("generation"),
                                    "must not be decremented"))
    for key in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                "deletionGracePeriodSeconds"):
        causes += validate_immutable(new.get(key), old.get(key), f"metadata.{key}")
    causes += validate_labels(new.get("labels"), "metadata.labels")
    causes += validate_annotations(new.get("annotations"), "metadata.annotations")
    return causes + _validate_owner_references(new.get("ownerReferences") or [])


# ------------------------------------------------------------------ resource quantities

def validate_quantities(resources: Any, path: str, *, positive: bool = False
                        ) -> tuple[dict[str, Fraction], list[Cause]]:
    """A ``ResourceList`` (name -> quantity): the parsed values and the causes of bad ones."""
    parsed: dict[str, Fraction] = {}
    causes: list[Cause] = []
    for name, raw in sorted((resources or {}).items()):
        at = f"{path}[{name}]"
        try:
            amount = parse_quantity(raw)
        except ValueError as exc:
            causes.append(invalid_value(at, raw, str(exc)))
            continue
        if positive and amount <= 0:
            causes.append(invalid_value(at, raw, NOT_POSITIVE))
        elif amount < 0:
            causes.append(invalid_value(at, raw, NEGATIVE))
        parsed[name] = amount
    return parsed, causes
