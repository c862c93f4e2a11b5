"""controlplane.api.validation: Kubernetes' format messages, object metadata, quantities.

Tables of input and expected output: format checks (exact Kubernetes texts where clients see
them), metadata on create and update (as (field, reason) pairs), label selectors, and
quantity parsing.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from controlplane.api import validation as v


def fields(causes: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(c["field"], c["reason"]) for c in causes]


# ------------------------------------------------------------------ formats

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
             "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
             "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


@pytest.mark.parametrize("value, expected", [
    ("web", []),
    ("a.b-c", []),
    ("a" * 253, []),
    ("Web", [SUBDOMAIN_MSG]),
    ("-web", [SUBDOMAIN_MSG]),
    ("web.", [SUBDOMAIN_MSG]),
    ("", [SUBDOMAIN_MSG]),
    ("a" * 254, ["must be no more than 253 characters"]),
])
def test_dns1123_subdomain(value: str, expected: list[str]) -> None:
    assert v.is_dns1123_subdomain(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("web-1", []),
    ("a" * 63, []),
    ("a.b", ["must not contain dots"]),
    ("under_score", [LABEL_MSG]),
    ("a" * 64, ["must be no more than 63 characters"]),
])
def test_dns1123_label(value: str, expected: list[str]) -> None:
    assert v.is_dns1123_label(value) == expected


@pytest.mark.parametrize("value, valid", [
    ("svc", True), ("svc-1", True), ("1svc", False), ("svc.a", False), ("Svc", False),
])
def test_dns1035_label(value: str, valid: bool) -> None:
    assert (v.is_dns1035_label(value) == []) is valid


@pytest.mark.parametrize("value, expected_prefixes", [
    ("app", []),
    ("example.com/App_1", []),
    ("a/b/c", ["a qualified name "]),
    ("/app", ["prefix part must be non-empty"]),
    ("Example.com/app", ["prefix part a lowercase RFC 1123 subdomain"]),
    ("example.com/", ["name part must be non-empty", "name part must consist"]),
    ("-app", ["name part must consist"]),
    ("a" * 64, ["name part must be no more than 63 characters"]),
])
def test_qualified_name(value: str, expected_prefixes: list[str]) -> None:
    messages = v.is_qualified_name(value)
    assert len(messages) == len(expected_prefixes)
    for message, prefix in zip(messages, expected_prefixes, strict=True):
        assert message.startswith(prefix)


@pytest.mark.parametrize("value, valid", [
    ("", True), ("v1.2_3-x", True), ("-v", False), ("a b", False), ("a" * 64, False),
])
def test_label_value(value: str, valid: bool) -> None:
    assert (v.is_label_value(value) == []) is valid


@pytest.mark.parametrize("value, valid", [
    ("app.properties", True), ("KEY_1-x", True), (".hidden", True), (".", False), ("..", False),
    ("..x", False), ("a/b", False), ("", False),
])
def test_config_map_key(value: str, valid: bool) -> None:
    assert (v.is_config_map_key(value) == []) is valid


@pytest.mark.parametrize("value, valid", [
    ("http", True), ("web-8080", True), ("8080", False), ("-http", False), ("a--b", False),
    ("HTTP", False), ("a" * 16, False),
])
def test_port_name(value: str, valid: bool) -> None:
    assert (v.is_valid_port_name(value) == []) is valid


@pytest.mark.parametrize("value, valid", [(1, True), (65535, True), (0, False), (65536, False),
                                          (True, False), ("80", False)])
def test_port_number(value: object, valid: bool) -> None:
    assert (v.is_valid_port_num(value) == []) is valid


@pytest.mark.parametrize("value, valid", [
    ("10.244.1.0/24", True), ("10.244.1.7/24", True), ("fd00::/64", True),
    ("10.244.1.0", False), ("10.244.1.0/33", False), ("nonsense", False),
])
def test_cidr(value: str, valid: bool) -> None:
    assert (v.is_valid_cidr(value) == []) is valid


# ------------------------------------------------------------------ object metadata

@pytest.mark.parametrize("meta, namespaced, expected", [
    ({"name": "web", "namespace": "default"}, True, []),
    ({"name": "node-1"}, False, []),
    ({}, True, [("metadata.name", "FieldValueRequired"),
                ("metadata.namespace", "FieldValueRequired")]),
    ({"name": "Web", "namespace": "default"}, True, [("metadata.name", "FieldValueInvalid")]),
    ({"name": "web", "namespace": "a.b"}, True, [("metadata.namespace", "FieldValueInvalid")]),
    ({"name": "n", "namespace": "default"}, False, [("metadata.namespace", "FieldValueForbidden")]),
    ({"name": "web", "namespace": "d", "labels": {"-bad": "ok", "app": "bad value"}}, True,
     [("metadata.labels", "FieldValueInvalid"), ("metadata.labels", "FieldValueInvalid")]),
    ({"name": "web", "namespace": "d", "annotations": {"Example.COM/Key": "anything at all"}},
     True, []),
    ({"name": "web", "namespace": "d", "annotations": {"a": "x" * (256 * 1024)}}, True,
     [("metadata.annotations", "FieldValueTooLong")]),
    ({"name": "web", "namespace": "d", "finalizers": ["example.com/cleanup", "bad/fin/al"]}, True,
     [("metadata.finalizers", "FieldValueInvalid")]),
    ({"name": "web", "namespace": "d", "finalizers": ["orphan", "foregroundDeletion"]}, True,
     [("metadata.finalizers", "FieldValueInvalid")]),
    ({"name": "web", "namespace": "d", "generation": -1}, True,
     [("metadata.generation", "FieldValueInvalid")]),
    ({"name": "web", "namespace": "d", "ownerReferences": [{"apiVersion": "apps/v1"}]}, True,
     [("metadata.ownerReferences.kind", "FieldValueInvalid"),
      ("metadata.ownerReferences.name", "FieldValueInvalid"),
      ("metadata.ownerReferences.uid", "FieldValueInvalid")]),
    ({"name": "web", "namespace": "d", "ownerReferences": [
        {"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "1"}]}, True,
     [("metadata.ownerReferences", "FieldValueInvalid")]),
    ({"name": "web", "namespace": "d", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": n, "uid": n, "controller": True}
        for n in ("a", "b")]}, True,
     [("metadata.ownerReferences", "FieldValueInvalid")]),
])
def test_validate_object_meta(meta: dict, namespaced: bool, expected: list) -> None:
    causes = v.validate_object_meta(meta, namespaced=namespaced,
                                    name_validator=v.is_dns1123_subdomain)
    assert fields(causes) == expected


def test_name_is_required_with_kubernetes_detail() -> None:
    [cause] = v.validate_object_meta({}, namespaced=False, name_validator=v.is_dns1123_label)
    assert cause["message"] == "Required value: name or generateName is required"


OLD_META = {"name": "web", "namespace": "d", "uid": "u1", "generation": 3,
            "creationTimestamp": "2024-01-01T00:00:00Z", "resourceVersion": "7"}


@pytest.mark.parametrize("change, expected", [
    ({}, []),
    ({"labels": {"app": "web"}}, []),
    ({"name": "other"}, [("metadata.name", "FieldValueInvalid")]),
    ({"uid": "u2"}, [("metadata.uid", "FieldValueInvalid")]),
    ({"creationTimestamp": "2025-01-01T00:00:00Z"},
     [("metadata.creationTimestamp", "FieldValueInvalid")]),
    ({"generation": 2}, [("metadata.generation", "FieldValueInvalid")]),
    ({"deletionTimestamp": "2025-01-01T00:00:00Z"},
     [("metadata.deletionTimestamp", "FieldValueInvalid")]),
    ({"labels": {"app": "a b"}}, [("metadata.labels", "FieldValueInvalid")]),
])
def test_validate_object_meta_update(change: dict, expected: list) -> None:
    assert fields(v.validate_object_meta_update({**OLD_META, **change}, OLD_META)) == expected


def test_no_new_finalizers_while_deleting() -> None:
    old = {**OLD_META, "deletionTimestamp": "t", "finalizers": ["a.io/x"]}
    assert fields(v.validate_object_meta_update({**old, "finalizers": []}, old)) == []
    assert fields(v.validate_object_meta_update({**old, "finalizers": ["a.io/x", "b.io/y"]},
                                                old)) == [("metadata.finalizers",
                                                           "FieldValueForbidden")]


@pytest.mark.parametrize("selector, expected", [
    (None, []),
    ({"matchLabels": {"app": "web"}}, []),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}, []),
    ({"matchExpressions": [{"key": "tier", "operator": "In"}]},
     [("s.matchExpressions[0].values", "FieldValueRequired")]),
    ({"matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["a"]}]},
     [("s.matchExpressions[0].values", "FieldValueForbidden")]),
    ({"matchExpressions": [{"key": "tier", "operator": "Near"}]},
     [("s.matchExpressions[0].operator", "FieldValueInvalid")]),
    ({"matchExpressions": [{"key": "-t", "operator": "In", "values": ["a b"]}]},
     [("s.matchExpressions[0].key", "FieldValueInvalid"),
      ("s.matchExpressions[0].values[0]", "FieldValueInvalid")]),
    ({"matchLabels": {"app": "a b"}}, [("s.matchLabels", "FieldValueInvalid")]),
])
def test_validate_label_selector(selector: dict | None, expected: list) -> None:
    assert fields(v.validate_label_selector(selector, "s")) == expected


def test_immutable_and_numbers() -> None:
    assert v.validate_immutable("a", "a", "spec.x") == []
    [cause] = v.validate_immutable("b", "a", "spec.x")
    assert cause["message"].endswith(": field is immutable")
    assert fields(v.validate_nonnegative(-1, "n")) == [("n", "FieldValueInvalid")]
    assert v.validate_nonnegative(0, "n") == v.validate_nonnegative(None, "n") == []
    assert fields(v.validate_positive(0, "n")) == [("n", "FieldValueInvalid")]
    assert fields(v.validate_enum(None, ["A"], "e")) == [("e", "FieldValueRequired")]
    assert fields(v.validate_enum("B", ["A"], "e")) == [("e", "FieldValueNotSupported")]


# ------------------------------------------------------------------ quantities

@pytest.mark.parametrize("text, value", [
    ("2", Fraction(2)),
    ("100m", Fraction(1, 10)),
    ("1.5", Fraction(3, 2)),
    ("1Gi", Fraction(2**30)),
    ("128Mi", Fraction(128 * 2**20)),
    ("1k", Fraction(1000)),
    ("1e3", Fraction(1000)),
    ("5E-1", Fraction(1, 2)),
    ("250u", Fraction(1, 4000)),
    ("-1", Fraction(-1)),
    (".5", Fraction(1, 2)),
    (3, Fraction(3)),
    (0.25, Fraction(1, 4)),
])
def test_parse_quantity(text: str | int | float, value: Fraction) -> None:
    assert v.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Gb", "1.2.3", "1e", "Mi", "1 Gi x", ".", True,
                                  None])
def test_parse_quantity_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="quantities must match the regular expression"):
        v.parse_quantity(text)  # type: ignore[arg-type]


def test_validate_quantities() -> None:
    parsed, causes = v.validate_quantities({"cpu": "500m", "memory": "x", "gpu": "-1"}, "r")
    assert parsed == {"cpu": Fraction(1, 2), "gpu": Fraction(-1)}
    assert fields(causes) == [("r[gpu]", "FieldValueInvalid"), ("r[memory]", "FieldValueInvalid")]
    _, causes = v.validate_quantities({"storage": "0"}, "r", positive=True)
    assert fields(causes) == [("r[storage]", "FieldValueInvalid")]
