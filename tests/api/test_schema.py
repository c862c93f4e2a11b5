"""Typed decoding (``controlplane.api.schema``): Kubernetes' JSON decoding rules, as tables.

Each table row is an input object and what Kubernetes answers for it: the unknown-field paths
of strict decoding, or the ``json: cannot unmarshal ...`` text of a type error, or the decoded
(pruned, normalized) object. Properties then check, over generated objects (``objgen``), that
decoding never raises, accepts every well-typed object untouched, and is idempotent.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import objgen
from controlplane.api import resources, schema
from controlplane.api.schema import decode

ROOT = Path(__file__).resolve().parents[2]
POD = "io.k8s.api.core.v1.Pod"
DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"
CONFIGMAP = "io.k8s.api.core.v1.ConfigMap"
SECRET = "io.k8s.api.core.v1.Secret"
SERVICE = "io.k8s.api.core.v1.Service"
LEASE = "io.k8s.api.coordination.v1.Lease"
NODE = "io.k8s.api.core.v1.Node"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def pod(**spec: Any) -> dict[str, Any]:
    container = {"name": "c", "image": "busybox:1"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [container], **spec}}


def deployment(template_spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}}, "spec": template_spec}}}


# ----------------------------------------------------------------------------- unknown fields

UNKNOWN_CASES = [
    # (type, object, unknown paths, pruned object)
    (CONFIGMAP, {"metadata": {"name": "a"}, "data": {}, "extra": 1},
     ["extra"], {"metadata": {"name": "a"}, "data": {}}),
    (CONFIGMAP, {"metadata": {"name": "a", "labelz": {"x": "y"}}},
     ["metadata.labelz"], {"metadata": {"name": "a"}}),
    (POD, pod(bogus=True), ["spec.bogus"], pod()),
    (DEPLOYMENT,
     deployment({"containers": [{"name": "a", "image": "x"},
                                {"name": "b", "imagex": "y", "ports": [{"containerPort": 80,
                                                                       "hostPortz": 1}]}]}),
     ["spec.template.spec.containers[1].imagex",
      "spec.template.spec.containers[1].ports[0].hostPortz"],
     deployment({"containers": [{"name": "a", "image": "x"},
                                {"name": "b", "ports": [{"containerPort": 80}]}]})),
    # Case matters: "Image" is not "image" (sigs.k8s.io/json decodes case-sensitively).
    (POD, {"spec": {"containers": [{"name": "c", "Image": "x"}]}},
     ["spec.containers[0].Image"], {"spec": {"containers": [{"name": "c"}]}}),
    # The subtree of an unknown field is dropped whole: nothing inside it is reported.
    (POD, {"spec": {"extra": {"deeper": {"x": 1}}}}, ["spec.extra"], {"spec": {}}),
    # Free-form fields (managedFields[].fieldsV1) keep whatever they hold.
    (CONFIGMAP, {"metadata": {"managedFields": [{"fieldsV1": {"f:data": {"f:x": {}}}}]}},
     [], {"metadata": {"managedFields": [{"fieldsV1": {"f:data": {"f:x": {}}}}]}}),
    # apiVersion and kind are fields of every top-level type, even one that is not a kind.
    ("io.k8s.api.core.v1.PodSpec", {"apiVersion": "v1", "kind": "PodSpec", "x": 1},
     ["x"], {"apiVersion": "v1", "kind": "PodSpec"}),
]


@pytest.mark.parametrize(("type_name", "obj", "unknown", "pruned"), UNKNOWN_CASES)
def test_unknown_fields_are_reported_and_pruned(type_name: str, obj: dict[str, Any],
                                                unknown: list[str], pruned: Any) -> None:
    before = copy.deepcopy(obj)
    decoded = decode(obj, type_name)
    assert decoded.unknown_fields == unknown
    assert decoded.type_errors == []
    assert decoded.object == pruned
    assert obj == before, "decode must not mutate its input"


def test_strict_and_warn_messages_match_kubernetes() -> None:
    decoded = decode(pod(containers=[{"name": "c", "imagex": "y"}], foo=1), POD)
    assert decoded.warnings() == ['unknown field "spec.containers[0].imagex"',
                                  'unknown field "spec.foo"']
    assert decoded.strict_message() == ('strict decoding error: unknown field '
                                        '"spec.containers[0].imagex", unknown field "spec.foo"')
    assert decode(pod(), POD).strict_message() == ""


def test_reports_are_capped_but_everything_is_pruned() -> None:
    obj = {"metadata": {"name": "a"}, **{f"x{i}": i for i in range(1000)}}
    decoded = decode(obj, CONFIGMAP)
    assert len(decoded.unknown_fields) == schema.MAX_REPORTED
    assert decoded.object == {"metadata": {"name": "a"}}


def test_unchanged_object_is_returned_as_is() -> None:
    obj = deployment({"containers": [{"name": "a", "image": "x", "ports": [
        {"containerPort": 80, "protocol": "TCP"}]}]})
    assert decode(obj, DEPLOYMENT).object is obj


# ----------------------------------------------------------------------------- type errors

TYPE_ERRORS = [
    # (type, object, field path, message)
    (POD, {"spec": {"containers": "nginx"}}, "spec.containers",
     "json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type "
     "[]v1.Container"),
    (POD, {"spec": {"containers": ["nginx"]}}, "spec.containers[0]",
     "json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type "
     "v1.Container"),
    (POD, {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]}},
     "spec.containers[0].ports[0].containerPort",
     "json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports."
     "containerPort of type int32"),
    (CONFIGMAP, {"metadata": {"labels": {"app": 1}}}, "metadata.labels[app]",
     "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type "
     "string"),
    (CONFIGMAP, {"metadata": []}, "metadata",
     "json: cannot unmarshal array into Go struct field ConfigMap.metadata of type "
     "v1.ObjectMeta"),
    (CONFIGMAP, {"immutable": "yes"}, "immutable",
     "json: cannot unmarshal string into Go struct field ConfigMap.immutable of type bool"),
    (DEPLOYMENT, {"spec": {"replicas": True}}, "spec.replicas",
     "json: cannot unmarshal bool into Go struct field DeploymentSpec.spec.replicas of type "
     "int32"),
    (DEPLOYMENT, {"spec": {"replicas": 1.5}}, "spec.replicas",
     "json: cannot unmarshal number 1.5 into Go struct field DeploymentSpec.spec.replicas of "
     "type int32"),
    (DEPLOYMENT, {"spec": {"replicas": 2 ** 31}}, "spec.replicas",
     "json: cannot unmarshal number 2147483648 into Go struct field DeploymentSpec.spec.replicas "
     "of type int32"),
    (SERVICE, {"spec": {"ports": [{"port": 80, "targetPort": True}]}},
     "spec.ports[0].targetPort",
     "json: cannot unmarshal bool into Go struct field ServicePort.spec.ports.targetPort of type "
     "intstr.IntOrString"),
    (CONFIGMAP, {"metadata": {"creationTimestamp": 12}}, "metadata.creationTimestamp",
     "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.creationTimestamp "
     "of type string"),
    (CONFIGMAP, {"metadata": {"creationTimestamp": "2024-02-30T00:00:00Z"}},
     "metadata.creationTimestamp",
     'metadata.creationTimestamp: parsing time "2024-02-30T00:00:00Z" as '
     '"2006-01-02T15:04:05Z07:00": not an RFC 3339 date-time'),
    (POD, pod(containers=[{"name": "c", "resources": {"limits": {"memory": "1GB"}}}]),
     "spec.containers[0].resources.limits[memory]",
     "spec.containers[0].resources.limits[memory]: " + schema.QUANTITY_FORMAT_ERROR),
    (POD, pod(containers=[{"name": "c", "resources": {"limits": {"memory": "1K"}}}]),
     "spec.containers[0].resources.limits[memory]",
     "spec.containers[0].resources.limits[memory]: " + schema.QUANTITY_SUFFIX_ERROR),
    (SECRET, {"data": {"k": "not base64!"}}, "data[k]",
     "data[k]: illegal base64 data at input byte 3"),
    (POD, [], "", "json: cannot unmarshal array into Go value of type v1.Pod"),
    (POD, None, "", "json: cannot unmarshal null into Go value of type v1.Pod"),
]


@pytest.mark.parametrize(("type_name", "obj", "field", "message"), TYPE_ERRORS)
def test_type_errors_name_the_field_as_go_does(type_name: str, obj: Any, field: str,
                                               message: str) -> None:
    decoded = decode(obj, type_name)
    assert decoded.type_errors == [
        {"reason": schema.TYPE_INVALID, "field": field, "message": message}]


def test_every_type_error_is_reported() -> None:
    obj = {"spec": {"replicas": "3", "paused": "no", "minReadySeconds": [],
                    "selector": {"matchLabels": {"a": False}}}}
    fields = [c["field"] for c in decode(obj, DEPLOYMENT).type_errors]
    assert fields == ["spec.replicas", "spec.paused", "spec.minReadySeconds",
                      "spec.selector.matchLabels[a]"]


# ----------------------------------------------------------------------------- accepted values

ACCEPTED = [
    # (type, object, decoded)
    # Quantity: a string (spaces trimmed, as Kubernetes' TrimSpace) or a JSON number.
    (POD, pod(containers=[{"name": "c", "resources": {
        "limits": {"cpu": 1, "memory": "1Gi", "x": 0.5, "y": " 2Gi ", "z": 2.0, "e": "1e3"},
        "requests": {"cpu": "100m", "w": "+.5", "v": "1E"}}}]),
     pod(containers=[{"name": "c", "resources": {
         "limits": {"cpu": "1", "memory": "1Gi", "x": "0.5", "y": "2Gi", "z": "2", "e": "1e3"},
         "requests": {"cpu": "100m", "w": "+.5", "v": "1E"}}}])),
    # IntOrString: an int32 or any string; an integral float becomes an int.
    (SERVICE, {"spec": {"ports": [{"port": 80, "targetPort": "http"},
                                  {"port": 81, "targetPort": 8081.0}]}},
     {"spec": {"ports": [{"port": 80, "targetPort": "http"},
                         {"port": 81, "targetPort": 8081}]}}),
    (DEPLOYMENT, {"spec": {"strategy": {"rollingUpdate": {"maxSurge": "25%",
                                                          "maxUnavailable": 0}}}},
     {"spec": {"strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}}}),
    # int64 fields take what int32 ones refuse; integral floats become ints.
    (POD, pod(securityContext={"runAsUser": 2 ** 32, "fsGroup": 1000.0}),
     pod(securityContext={"runAsUser": 2 ** 32, "fsGroup": 1000})),
    # Times: RFC 3339 with a zone, any fraction (MicroTime for leases).
    (LEASE, {"spec": {"renewTime": "2024-05-01T10:00:00.123456Z",
                      "acquireTime": "2024-05-01T12:00:00+02:00"}},
     {"spec": {"renewTime": "2024-05-01T10:00:00.123456Z",
               "acquireTime": "2024-05-01T12:00:00+02:00"}}),
    # []byte: standard base64, line breaks ignored.
    (SECRET, {"data": {"a": "aGVsbG8=", "b": "aGVs\nbG8="}, "stringData": {"c": "plain"}},
     {"data": {"a": "aGVsbG8=", "b": "aGVs\nbG8="}, "stringData": {"c": "plain"}}),
]


@pytest.mark.parametrize(("type_name", "obj", "expected"), ACCEPTED)
def test_accepted_values_are_normalized(type_name: str, obj: Any, expected: Any) -> None:
    decoded = decode(obj, type_name)
    assert decoded.type_errors == [] and decoded.unknown_fields == []
    assert decoded.object == expected


NULLS = [
    # null on a struct field leaves it unset: the key goes.
    (POD, pod(nodeName=None, securityContext=None), pod()),
    (CONFIGMAP, {"metadata": None, "data": None}, {}),
    # null in a list or map becomes the element's zero value, as Go's decoder makes it.
    (POD, {"spec": {"containers": [None], "nodeSelector": {"a": None}}},
     {"spec": {"containers": [{}], "nodeSelector": {"a": ""}}}),
    (POD, {"spec": {"containers": [{"name": "c", "args": [None, "x"], "resources": {
        "limits": {"cpu": None}}}]}},
     {"spec": {"containers": [{"name": "c", "args": ["", "x"], "resources": {
         "limits": {"cpu": "0"}}}]}}),
]


@pytest.mark.parametrize(("type_name", "obj", "expected"), NULLS)
def test_null_means_unset(type_name: str, obj: Any, expected: Any) -> None:
    decoded = decode(obj, type_name)
    assert decoded.type_errors == [] and decoded.unknown_fields == []
    assert decoded.object == expected


def test_unknown_type_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        decode({}, "io.k8s.api.core.v1.NoSuchThing")


@pytest.mark.parametrize(("expr", "go"), [
    ("[]io.k8s.api.core.v1.Container", "[]v1.Container"),
    ("{}io.k8s.apimachinery.pkg.api.resource.Quantity", "map[string]resource.Quantity"),
    ("io.k8s.apimachinery.pkg.util.intstr.IntOrString", "intstr.IntOrString"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Time", "v1.Time"),
    ("[]int64", "[]int64"), ("byte", "[]uint8"), ("boolean", "bool"),
])
def test_go_type_names(expr: str, go: str) -> None:
    assert schema.go_type(expr) == go


# ----------------------------------------------------------------------------- the data file

def test_every_served_kind_and_its_list_have_a_schema() -> None:
    types = schema.types()
    for rt in resources.RESOURCES:
        for name in (rt.schema, rt.schema + "List"):
            assert "properties" in types[name], name
        assert {"group": rt.group, "version": rt.version, "kind": rt.kind} in \
            types[rt.schema]["gvk"]
        assert types[rt.schema]["properties"]["metadata"] == \
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def test_every_type_expression_resolves() -> None:
    types = schema.types()
    primitives = {"string", "int32", "int64", "boolean", "double", "byte"}
    for name, entry in types.items():
        for field, expr in entry.get("properties", {}).items():
            base = expr
            while base[:2] in ("[]", "{}"):
                base = base[2:]
            assert base in primitives or base in types, f"{name}.{field}: {expr}"


def test_flattened_types_are_restored() -> None:
    props = {n: e.get("properties", {}) for n, e in schema.types().items()}
    assert props["io.k8s.api.core.v1.ServicePort"]["targetPort"] == \
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
    assert props["io.k8s.api.core.v1.ResourceRequirements"]["limits"] == \
        "{}io.k8s.apimachinery.pkg.api.resource.Quantity"
    assert props["io.k8s.api.core.v1.EmptyDirVolumeSource"]["sizeLimit"] == \
        "io.k8s.apimachinery.pkg.api.resource.Quantity"
    assert props["io.k8s.api.coordination.v1.LeaseSpec"]["renewTime"] == \
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
    assert props["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["generation"] == "int64"
    assert props["io.k8s.api.core.v1.ContainerPort"]["containerPort"] == "int32"
    assert "containerPort" in schema.types()["io.k8s.api.core.v1.ContainerPort"]["required"]


def test_data_file_is_small() -> None:
    path = ROOT / "controlplane/api/schema_data" / schema.DATA_FILE
    assert path.stat().st_size < 300_000


def test_data_file_is_what_the_generator_makes() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts/gen_schema.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------- properties

KINDS = sorted({rt.schema for rt in resources.RESOURCES})


@pytest.mark.parametrize("type_name", KINDS)
@FUZZ
@given(data=st.data())
def test_well_typed_objects_decode_untouched(type_name: str, data: st.DataObject) -> None:
    obj = data.draw(objgen.valid_objects(type_name))
    decoded = decode(obj, type_name)
    assert decoded.unknown_fields == [] and decoded.type_errors == []
    assert decoded.object is obj


@pytest.mark.parametrize("type_name", KINDS)
@FUZZ
@given(data=st.data())
def test_mutated_objects_never_raise_and_decode_idempotently(type_name: str,
                                                             data: st.DataObject) -> None:
    obj = data.draw(objgen.invalid_objects(type_name))
    before = copy.deepcopy(obj)  # floats are shared, so a NaN still compares equal to itself
    decoded = decode(obj, type_name)
    assert obj == before, "decode must not mutate its input"
    json.dumps(decoded.object)
    again = decode(decoded.object, type_name)
    assert again.unknown_fields == []
    if not decoded.type_errors:
        assert again.type_errors == [] and again.object is decoded.object


@pytest.mark.parametrize("type_name", [POD, DEPLOYMENT, CONFIGMAP, "io.k8s.api.core.v1.PodSpec"])
@FUZZ
@given(value=objgen.json_values())
def test_arbitrary_json_never_raises(type_name: str, value: Any) -> None:
    decoded = decode(value, type_name)
    assert isinstance(decoded.object, dict)
    for c in decoded.type_errors:
        assert set(c) == {"reason", "field", "message"} and c["message"]


def test_values_json_cannot_hold_are_type_errors() -> None:
    """What a YAML loader may produce (timestamps, byte strings, int keys): errors, no crash."""
    obj = {"metadata": {"creationTimestamp": datetime(2024, 1, 1), "labels": {1: "a"},
                        "finalizers": ("x",)},
           "binaryData": {"k": b"x"}, "immutable": {True}}
    decoded = decode(obj, CONFIGMAP)
    assert [c["field"] for c in decoded.type_errors] == [
        "metadata.creationTimestamp", "metadata.finalizers", "binaryData[k]", "immutable"]
    assert decoded.type_errors[0]["message"].startswith("json: cannot unmarshal datetime into")


def test_hostile_strings_are_fine() -> None:
    big = "a" * 1_000_000
    obj = {"metadata": {"name": big, "labels": {"\ud800": "\x00"}}, "data": {big: big},
           "binaryData": {"x": "\ud800"}}
    decoded = decode(obj, CONFIGMAP)
    assert [c["field"] for c in decoded.type_errors] == ["binaryData[x]"]
