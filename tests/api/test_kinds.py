"""controlplane.api.kinds: every kind's defaults, validation, update rules and printer.

Flow: a valid object per kind and a helper that runs it through the registry's create steps
(prepare, default, validate metadata and spec); a table of edits that make each kind invalid,
with the (field, reason) Kubernetes reports; defaults; update rules; the pod STATUS logic of
printers.go as a table of pod statuses; the headers of ``kubectl get``; graceful deletion and
field labels.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from typing import Any

import pytest

from controlplane.api import table
from controlplane.api.resources import RESOURCES, ResourceType, by_kind
from controlplane.api.validation import validate_object_meta, validate_object_meta_update

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
CREATED = "2024-06-01T11:00:00Z"
DELETE = object()


def meta(name: str, namespace: str | None = "default", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "creationTimestamp": CREATED, **extra}
    if namespace:
        out["namespace"] = namespace
    return out


def container(name: str = "web", image: str = "nginx:1.25", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, **extra}


TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container()]}}
VALID: dict[str, dict[str, Any]] = {
    "Pod": {"metadata": meta("web"), "spec": {"containers": [container()]}},
    "Deployment": {"metadata": meta("web"), "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE}},
    "ReplicaSet": {"metadata": meta("web-1"), "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE}},
    "Service": {"metadata": meta("web"), "spec": {
        "selector": {"app": "web"}, "ports": [{"port": 80}]}},
    "Namespace": {"metadata": meta("team-a", None)},
    "ConfigMap": {"metadata": meta("conf"), "data": {"a.conf": "x=1"},
                  "binaryData": {"logo.png": "iVBORw=="}},
    "Secret": {"metadata": meta("creds"), "data": {"password": "aHVudGVyMg=="}},
    "Node": {"metadata": meta("node-1", None), "spec": {"podCIDR": "10.244.1.0/24"}},
    "PersistentVolume": {"metadata": meta("pv-1", None), "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
        "hostPath": {"path": "/data"}}},
    "PersistentVolumeClaim": {"metadata": meta("data"), "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
    "Event": {"metadata": meta("web.1"), "involvedObject": {
        "kind": "Pod", "namespace": "default", "name": "web"}, "reason": "Started",
        "type": "Normal", "message": "Started container web"},
    "Endpoints": {"metadata": meta("web"), "subsets": [
        {"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 8080}]}]},
    "ServiceAccount": {"metadata": meta("builder")},
    "Lease": {"metadata": meta("node-1", "kube-node-lease"), "spec": {
        "holderIdentity": "node-1", "leaseDurationSeconds": 40}},
    "EndpointSlice": {"metadata": meta("web-abc12", labels={"kubernetes.io/service-name": "web"}),
                      "addressType": "IPv4",
                      "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "n1",
                                     "conditions": {"ready": True, "serving": True,
                                                    "terminating": False}}],
                      "ports": [{"name": "http", "port": 8080}]},
}


def rt_of(kind: str) -> ResourceType:
    found = next(r for r in RESOURCES if r.kind == kind)
    assert by_kind(found.group, kind) is found
    return found


def put(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set (or, with DELETE, remove) ``path`` such as "spec.containers[0].image"."""
    keys: list[Any] = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
    target = obj
    for key in keys[:-1]:
        target = target[key] if isinstance(key, int) else target.setdefault(key, {})
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value


def edited(kind: str, edits: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(VALID[kind])
    for path, value in edits.items():
        put(obj, path, value)
    return obj


def create(kind: str, obj: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The registry's create steps: prepare, default, validate metadata and the kind."""
    rt = rt_of(kind)
    obj = copy.deepcopy(obj)
    rt.strategy.prepare_for_create(obj)
    rt.strategy.default(obj)
    causes = validate_object_meta(obj["metadata"], namespaced=rt.namespaced,
                                  name_validator=rt.strategy.name_validator)
    return obj, causes + rt.strategy.validate(obj)


def update(kind: str, old: dict[str, Any], new: dict[str, Any]
           ) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The registry's update steps, from a stored ``old``."""
    rt = rt_of(kind)
    new = copy.deepcopy(new)
    rt.strategy.prepare_for_update(new, old)
    rt.strategy.default(new)
    causes = validate_object_meta_update(new["metadata"], old["metadata"])
    return new, causes + rt.strategy.validate_update(new, old)


def created(kind: str, edits: dict[str, Any] | None = None) -> dict[str, Any]:
    obj, causes = create(kind, edited(kind, edits or {}))
    assert causes == []
    return obj


def fields(causes: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted((c["field"], c["reason"]) for c in causes)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_objects_pass(kind: str) -> None:
    obj, causes = create(kind, VALID[kind])
    assert causes == []
    _same, causes = update(kind, obj, obj)
    assert causes == []


def test_every_served_kind_is_covered() -> None:
    assert sorted(r.kind for r in RESOURCES) == sorted(VALID)


# ------------------------------------------------------------------ invalid objects

INVALID: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    ("Pod", {"spec.containers": []}, [("spec.containers", "FieldValueRequired")]),
    ("Pod", {"spec.containers[0].name": "Web"}, [("spec.containers[0].name", "FieldValueInvalid")]),
    ("Pod", {"spec.initContainers": [container()]},
     [("spec.containers[0].name", "FieldValueDuplicate")]),
    ("Pod", {"spec.containers[0].image": ""}, [("spec.containers[0].image", "FieldValueRequired")]),
    ("Pod", {"spec.containers[0].image": " nginx"},
     [("spec.containers[0].image", "FieldValueInvalid")]),
    ("Pod", {"spec.containers[0].ports": [{"containerPort": 70000}, {"containerPort": 0}]},
     [("spec.containers[0].ports[0].containerPort", "FieldValueInvalid"),
      ("spec.containers[0].ports[1].containerPort", "FieldValueRequired")]),
    ("Pod", {"spec.containers[0].ports": [{"name": "http", "containerPort": 80},
                                          {"name": "http", "containerPort": 81,
                                           "protocol": "ICMP"}]},
     [("spec.containers[0].ports[1].name", "FieldValueDuplicate"),
      ("spec.containers[0].ports[1].protocol", "FieldValueNotSupported")]),
    ("Pod", {"spec.restartPolicy": "Sometimes", "spec.dnsPolicy": "Google"},
     [("spec.dnsPolicy", "FieldValueNotSupported"),
      ("spec.restartPolicy", "FieldValueNotSupported")]),
    ("Pod", {"spec.containers[0].volumeMounts": [{"name": "data", "mountPath": "/d"},
                                                 {"name": "data", "mountPath": "/d"}],
             "spec.volumes": [{"name": "data"}, {"name": "data"}]},
     [("spec.containers[0].volumeMounts[1].mountPath", "FieldValueInvalid"),
      ("spec.volumes[1].name", "FieldValueDuplicate")]),
    ("Pod", {"spec.containers[0].volumeMounts": [{"name": "nope", "mountPath": "/d"}]},
     [("spec.containers[0].volumeMounts[0].name", "FieldValueNotFound")]),
    ("Pod", {"spec.containers[0].resources": {"requests": {"cpu": "2"},
                                              "limits": {"cpu": "1", "memory": "lots"}}},
     [("spec.containers[0].resources.limits[memory]", "FieldValueInvalid"),
      ("spec.containers[0].resources.requests", "FieldValueInvalid"),
      ("spec.containers[0].resources.requests[memory]", "FieldValueInvalid")]),
    ("Pod", {"spec.tolerations": [{"operator": "Equal", "value": "x"},
                                  {"key": "k", "operator": "Exists", "value": "v",
                                   "effect": "Sometimes"},
                                  {"key": "k", "operator": "Exists", "tolerationSeconds": 5}]},
     [("spec.tolerations[0].operator", "FieldValueInvalid"),
      ("spec.tolerations[1].effect", "FieldValueNotSupported"),
      ("spec.tolerations[1].operator", "FieldValueInvalid"),
      ("spec.tolerations[2].effect", "FieldValueInvalid")]),
    ("Pod", {"spec.nodeSelector": {"disk": "very fast"}, "spec.activeDeadlineSeconds": 0,
             "spec.nodeName": "Node_1"},
     [("spec.activeDeadlineSeconds", "FieldValueInvalid"),
      ("spec.nodeName", "FieldValueInvalid"), ("spec.nodeSelector", "FieldValueInvalid")]),
    ("Pod", {"spec.containers[0].env": [{"value": "x"}]},
     [("spec.containers[0].env[0].name", "FieldValueRequired")]),
    ("Deployment", {"spec.selector": DELETE},
     [("spec.selector", "FieldValueRequired"),
      ("spec.template.metadata.labels", "FieldValueInvalid")]),
    ("Deployment", {"spec.selector": {}}, [("spec.selector", "FieldValueInvalid")]),
    ("Deployment", {"spec.selector.matchLabels.app": "api"},
     [("spec.template.metadata.labels", "FieldValueInvalid")]),
    ("Deployment", {"spec.replicas": -1, "spec.revisionHistoryLimit": -1},
     [("spec.replicas", "FieldValueInvalid"), ("spec.revisionHistoryLimit", "FieldValueInvalid")]),
    ("Deployment", {"spec.strategy": {"type": "Blue-Green"}},
     [("spec.strategy", "FieldValueNotSupported")]),
    ("Deployment", {"spec.strategy": {"type": "BlueGreen"}},
     [("spec.strategy.blueGreen.activeService", "FieldValueRequired")]),
    ("Deployment", {"spec.strategy": {"type": "BlueGreen", "rollingUpdate": {},
                                      "blueGreen": {"activeService": "Web",
                                                    "previewService": "Web",
                                                    "scaleDownDelaySeconds": -1}}},
     [("spec.strategy.rollingUpdate", "FieldValueForbidden"),
      ("spec.strategy.blueGreen.activeService", "FieldValueInvalid"),
      ("spec.strategy.blueGreen.previewService", "FieldValueInvalid"),
      ("spec.strategy.blueGreen.previewService", "FieldValueInvalid"),
      ("spec.strategy.blueGreen.scaleDownDelaySeconds", "FieldValueInvalid")]),
    ("Deployment", {"spec.strategy": {"type": "Canary", "blueGreen": {"activeService": "w"},
                                      "canary": {"steps": [{"setWeight": 101}, {},
                                                           {"setWeight": 5, "pause": {}},
                                                           {"pause": {"duration": -1}}]}}},
     [("spec.strategy.blueGreen", "FieldValueForbidden"),
      ("spec.strategy.canary.steps[0].setWeight", "FieldValueInvalid"),
      ("spec.strategy.canary.steps[1]", "FieldValueInvalid"),
      ("spec.strategy.canary.steps[2]", "FieldValueInvalid"),
      ("spec.strategy.canary.steps[3].pause.duration", "FieldValueInvalid")]),
    ("Deployment", {"spec.strategy": {"type": "Recreate", "rollingUpdate": {}}},
     [("spec.strategy.rollingUpdate", "FieldValueForbidden")]),
    ("Deployment", {"spec.strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}},
     [("spec.strategy.rollingUpdate.maxUnavailable", "FieldValueInvalid")]),
    ("Deployment", {"spec.strategy": {"rollingUpdate": {"maxSurge": "lots",
                                                        "maxUnavailable": "120%"}}},
     [("spec.strategy.rollingUpdate.maxSurge", "FieldValueInvalid"),
      ("spec.strategy.rollingUpdate.maxUnavailable", "FieldValueInvalid")]),
    ("Deployment", {"spec.minReadySeconds": 700},
     [("spec.progressDeadlineSeconds", "FieldValueInvalid")]),
    ("Deployment", {"spec.template.spec.restartPolicy": "Never",
                    "spec.template.spec.activeDeadlineSeconds": 5},
     [("spec.template.spec.activeDeadlineSeconds", "FieldValueForbidden"),
      ("spec.template.spec.restartPolicy", "FieldValueNotSupported")]),
    ("Deployment", {"spec.template.spec.containers[0].image": ""},
     [("spec.template.spec.containers[0].image", "FieldValueRequired")]),
    ("Deployment", {"spec.template.metadata.labels.-x": "y",
                    "spec.selector.matchExpressions": [{"key": "app", "operator": "In"}]},
     [("spec.selector", "FieldValueInvalid"),
      ("spec.selector.matchExpressions[0].values", "FieldValueRequired")]),
    ("Deployment", {"spec.template.metadata.labels.-x": "y"},
     [("spec.template.labels", "FieldValueInvalid")]),
    ("ReplicaSet", {"spec.replicas": -2, "spec.selector.matchLabels": {"app": "x"}},
     [("spec.replicas", "FieldValueInvalid"),
      ("spec.template.metadata.labels", "FieldValueInvalid")]),
    ("Service", {"spec.ports": []}, [("spec.ports", "FieldValueRequired")]),
    ("Service", {"spec.ports": [{"port": 80}, {"port": 443}]},
     [("spec.ports[0].name", "FieldValueRequired"), ("spec.ports[1].name", "FieldValueRequired")]),
    ("Service", {"spec.ports": [{"name": "a", "port": 0, "targetPort": "Bad_Name"},
                                {"name": "a", "port": 0, "nodePort": 30000}]},
     [("spec.ports[0].port", "FieldValueInvalid"),
      ("spec.ports[0].targetPort", "FieldValueInvalid"),
      ("spec.ports[1]", "FieldValueDuplicate"),
      ("spec.ports[1].name", "FieldValueDuplicate"),
      ("spec.ports[1].nodePort", "FieldValueForbidden"),
      ("spec.ports[1].port", "FieldValueInvalid"),
      ("spec.ports[1].targetPort", "FieldValueInvalid")]),
    ("Service", {"spec.type": "Magic"}, [("spec.type", "FieldValueNotSupported")]),
    ("Service", {"metadata.name": "1web"}, [("metadata.name", "FieldValueInvalid")]),
    ("Service", {"spec.clusterIP": "10.96.0.300"}, [("spec.clusterIPs[0]", "FieldValueInvalid")]),
    ("Service", {"spec.type": "ExternalName", "spec.clusterIP": "10.96.0.10"},
     [("spec.clusterIP", "FieldValueForbidden"), ("spec.externalName", "FieldValueRequired")]),
    ("Service", {"spec.selector": {"app": "a b"}, "spec.sessionAffinity": "Sticky"},
     [("spec.selector", "FieldValueInvalid"), ("spec.sessionAffinity", "FieldValueNotSupported")]),
    ("Namespace", {"metadata.name": "team.a"}, [("metadata.name", "FieldValueInvalid")]),
    ("Namespace", {"spec.finalizers": ["custom"]}, [("spec.finalizers", "FieldValueInvalid")]),
    ("ConfigMap", {"data": {"a/b": "x", "logo.png": "y"}},
     [("binaryData[logo.png]", "FieldValueInvalid"), ("data[a/b]", "FieldValueInvalid"),
      ("data[logo.png]", "FieldValueInvalid")]),
    ("ConfigMap", {"binaryData": {"blob": "not base64!"}},
     [("binaryData[blob]", "FieldValueInvalid")]),
    ("ConfigMap", {"data": {"big": "x" * (1024 * 1024 + 1)}}, [("", "FieldValueTooLong")]),
    ("Secret", {"data": {"..key": "eA==", "raw": "plain text"}},
     [("data[..key]", "FieldValueInvalid"), ("data[raw]", "FieldValueInvalid")]),
    ("Node", {"spec.podCIDR": "10.244.1.0"}, [("spec.podCIDRs[0]", "FieldValueInvalid")]),
    ("Node", {"spec.podCIDRs": ["10.244.1.0/24", "10.244.2.0/24", "10.244.1.0/24"],
              "spec.podCIDR": "10.244.1.0/24"},
     [("spec.podCIDRs", "FieldValueInvalid"), ("spec.podCIDRs[2]", "FieldValueDuplicate")]),
    ("Node", {"spec.taints": [{"key": "gpu", "effect": "Sometimes"}, {"key": "gpu"},
                              {"key": "a", "effect": "NoSchedule"},
                              {"key": "a", "effect": "NoSchedule"}]},
     [("spec.taints[0].effect", "FieldValueNotSupported"),
      ("spec.taints[1].effect", "FieldValueRequired"), ("spec.taints[3]", "FieldValueDuplicate")]),
    ("Node", {"metadata.namespace": "default"}, [("metadata.namespace", "FieldValueForbidden")]),
    ("PersistentVolume", {"spec.capacity": DELETE, "spec.accessModes": DELETE},
     [("spec.accessModes", "FieldValueRequired"), ("spec.capacity", "FieldValueRequired")]),
    ("PersistentVolume", {"spec.capacity": {"storage": "0", "cpu": "1"},
                          "spec.accessModes": ["ReadWriteSometimes"]},
     [("spec.accessModes", "FieldValueNotSupported"),
      ("spec.capacity", "FieldValueNotSupported"),
      ("spec.capacity[storage]", "FieldValueInvalid")]),
    ("PersistentVolume", {"spec.hostPath": DELETE}, [("spec", "FieldValueRequired")]),
    ("PersistentVolume", {"spec.nfs": {"server": "s", "path": "/"},
                          "spec.persistentVolumeReclaimPolicy": "Shred"},
     [("spec.nfs", "FieldValueForbidden"),
      ("spec.persistentVolumeReclaimPolicy", "FieldValueNotSupported")]),
    ("PersistentVolumeClaim", {"spec.resources": {}, "spec.accessModes": []},
     [("spec.accessModes", "FieldValueRequired"),
      ("spec.resources[storage]", "FieldValueRequired")]),
    ("PersistentVolumeClaim", {"spec.resources.requests.storage": "-1Gi",
                               "spec.volumeMode": "Tape", "spec.storageClassName": "Fast"},
     [("spec.resources.requests[storage]", "FieldValueInvalid"),
      ("spec.storageClassName", "FieldValueInvalid"),
      ("spec.volumeMode", "FieldValueNotSupported")]),
    ("Event", {"involvedObject": DELETE}, [("involvedObject", "FieldValueRequired")]),
    ("Event", {"involvedObject.namespace": "other"},
     [("involvedObject.namespace", "FieldValueInvalid")]),
    ("Endpoints", {"subsets": [{"addresses": [{"ip": "10.244.1.300"}],
                                "ports": [{"port": 0}, {"port": 80, "protocol": "ICMP"}]},
                               {"ports": [{"port": 80}]}]},
     [("subsets[0].addresses[0].ip", "FieldValueInvalid"),
      ("subsets[0].ports[0].name", "FieldValueRequired"),
      ("subsets[0].ports[0].port", "FieldValueInvalid"),
      ("subsets[0].ports[1].name", "FieldValueRequired"),
      ("subsets[0].ports[1].protocol", "FieldValueNotSupported"),
      ("subsets[1]", "FieldValueRequired")]),
    ("Lease", {"spec.leaseDurationSeconds": 0, "spec.leaseTransitions": -1},
     [("spec.leaseDurationSeconds", "FieldValueInvalid"),
      ("spec.leaseTransitions", "FieldValueInvalid")]),
    ("ServiceAccount", {"metadata.name": "Builder"}, [("metadata.name", "FieldValueInvalid")]),
    ("EndpointSlice", {"addressType": "IPX"}, [("addressType", "FieldValueNotSupported")]),
    ("EndpointSlice", {"endpoints": [{"addresses": ["fd00::1"]}, {"addresses": []}],
                       "ports": [{"name": "http", "port": 0}, {"name": "http", "port": 80,
                                                              "protocol": "ICMP"}]},
     [("endpoints[0].addresses[0]", "FieldValueInvalid"),
      ("endpoints[1].addresses", "FieldValueRequired"),
      ("ports[0].port", "FieldValueInvalid"),
      ("ports[1].name", "FieldValueDuplicate"),
      ("ports[1].protocol", "FieldValueNotSupported")]),
]


@pytest.mark.parametrize("kind, edits, expected", INVALID,
                         ids=[f"{k}-{i}" for i, (k, _e, _x) in enumerate(INVALID)])
def test_invalid_objects(kind: str, edits: dict[str, Any], expected: list) -> None:
    _obj, causes = create(kind, edited(kind, edits))
    assert fields(causes) == sorted(expected)


def test_messages_are_kubernetes_texts() -> None:
    _obj, causes = create("Deployment", edited("Deployment",
                                               {"spec.selector.matchLabels.app": "api"}))
    assert causes[0]["message"].endswith("`selector` does not match template `labels`")
    _obj, causes = create("Pod", edited("Pod", {"spec.containers[0].resources": {
        "requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}))
    assert causes[0]["message"].endswith("must be less than or equal to cpu limit of 1")
    _obj, causes = create("Service", edited("Service", {"spec.ports[0].port": 0}))
    assert causes[0]["message"].endswith("must be between 1 and 65535, inclusive")


# ------------------------------------------------------------------ defaults

def test_pod_defaults() -> None:
    pod = created("Pod", {"spec.containers[0].ports": [{"containerPort": 80}],
                          "spec.containers[0].livenessProbe": {"httpGet": {"port": 80}},
                          "spec.containers[0].env": [{"name": "NODE", "valueFrom": {
                              "fieldRef": {"fieldPath": "spec.nodeName"}}}],
                          "spec.containers[0].resources": {"limits": {"cpu": "1"}},
                          "spec.volumes": [{"name": "scratch"},
                                           {"name": "conf", "configMap": {"name": "c"}}]})
    spec = pod["spec"]
    assert {k: spec[k] for k in ("restartPolicy", "dnsPolicy", "terminationGracePeriodSeconds",
                                 "schedulerName", "securityContext", "enableServiceLinks",
                                 "priority")} == {
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
        "terminationGracePeriodSeconds": 30, "schedulerName": "default-scheduler",
        "securityContext": {}, "enableServiceLinks": True, "priority": 0}
    c = spec["containers"][0]
    assert (c["imagePullPolicy"], c["terminationMessagePath"], c["terminationMessagePolicy"]) == (
        "IfNotPresent", "/dev/termination-log", "File")
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert c["livenessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                                  "timeoutSeconds": 1, "periodSeconds": 10,
                                  "successThreshold": 1, "failureThreshold": 3}
    assert c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    assert c["resources"] == {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}
    assert spec["volumes"] == [{"name": "scratch", "emptyDir": {}},
                               {"name": "conf", "configMap": {"name": "c", "defaultMode": 420}}]
    assert pod["status"] == {"phase": "Pending", "qosClass": "Burstable"}


@pytest.mark.parametrize("image, policy", [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.25", "IfNotPresent"),
    ("localhost:5000/nginx", "Always"), ("localhost:5000/nginx:1", "IfNotPresent"),
    ("nginx@sha256:0123", "IfNotPresent"), ("nginx:latest@sha256:0123", "Always"),
])
def test_image_pull_policy(image: str, policy: str) -> None:
    pod = created("Pod", {"spec.containers[0].image": image})
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == policy


@pytest.mark.parametrize("resources, qos", [
    ([{}], "BestEffort"),
    ([{"requests": {"cpu": "0"}}], "BestEffort"),
    ([{"requests": {"cpu": "100m"}}], "Burstable"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}}], "Guaranteed"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1Gi"}}],
     "Guaranteed"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}], "Burstable"),
    ([{"limits": {"cpu": "1"}}], "Burstable"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}}, {}], "Burstable"),
    ([{"limits": {"ephemeral-storage": "1Gi"}}], "BestEffort"),
])
def test_qos_class(resources: list[dict[str, Any]], qos: str) -> None:
    containers = [container(f"c{i}", resources=r) for i, r in enumerate(resources)]
    assert created("Pod", {"spec.containers": containers})["status"]["qosClass"] == qos


def test_workload_defaults() -> None:
    deploy = created("Deployment")
    spec = deploy["spec"]
    assert (spec["replicas"], spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (
        1, 10, 600)
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    template_spec = spec["template"]["spec"]
    assert template_spec["restartPolicy"] == "Always"
    assert "enableServiceLinks" not in template_spec  # a pod-only default
    assert deploy["status"] == {}
    recreate = created("Deployment", {"spec.strategy": {"type": "Recreate"}})
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}
    blue_green = created("Deployment", {"spec.strategy": {"type": "BlueGreen",
                                                          "blueGreen": {"activeService": "web"}}})
    assert blue_green["spec"]["strategy"]["blueGreen"] == {
        "activeService": "web", "autoPromotionEnabled": True, "scaleDownDelaySeconds": 30}
    canary = created("Deployment", {"spec.strategy": {"type": "Canary"}})
    assert canary["spec"]["strategy"] == {"type": "Canary"}
    assert created("ReplicaSet", {"spec.replicas": DELETE})["spec"]["replicas"] == 1


def test_service_defaults() -> None:
    spec = created("Service", {"spec.clusterIP": "10.96.0.10"})["spec"]
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert (spec["type"], spec["sessionAffinity"], spec["internalTrafficPolicy"]) == (
        "ClusterIP", "None", "Cluster")
    assert spec["clusterIPs"] == ["10.96.0.10"] and "externalTrafficPolicy" not in spec
    node_port = created("Service", {"spec.type": "NodePort", "spec.ports[0].targetPort": "http",
                                    "spec.sessionAffinity": "ClientIP"})["spec"]
    assert node_port["externalTrafficPolicy"] == "Cluster"
    assert node_port["ports"][0]["targetPort"] == "http"
    assert node_port["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    external = created("Service", {"spec.type": "ExternalName", "spec.ports": [],
                                   "spec.externalName": "db.example.com."})["spec"]
    assert "internalTrafficPolicy" not in external
    headless = created("Service", {"spec.clusterIP": "None", "spec.ports": []})
    assert headless["status"] == {"loadBalancer": {}}


def test_namespace_lifecycle() -> None:
    ns = created("Namespace")
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["status"] == {"phase": "Active"}
    changed = copy.deepcopy(ns)
    changed["spec"]["finalizers"] = []
    changed["status"]["phase"] = "Terminating"
    new, causes = update("Namespace", ns, changed)
    assert causes == [] and new["spec"]["finalizers"] == ["kubernetes"]
    assert new["status"] == {"phase": "Active"}


def test_secret_string_data() -> None:
    secret = created("Secret", {"stringData": {"user": "admin", "password": "s3cret"}})
    assert secret["type"] == "Opaque" and "stringData" not in secret
    assert secret["data"] == {"password": "czNjcmV0", "user": "YWRtaW4="}


def test_storage_and_node_defaults() -> None:
    pv = created("PersistentVolume")
    assert (pv["spec"]["persistentVolumeReclaimPolicy"], pv["spec"]["volumeMode"]) == (
        "Retain", "Filesystem")
    assert pv["status"] == {"phase": "Pending"}
    pvc = created("PersistentVolumeClaim")
    assert pvc["spec"]["volumeMode"] == "Filesystem" and pvc["status"] == {"phase": "Pending"}
    node = created("Node", {"status": {"capacity": {"cpu": "4"}}})
    assert node["spec"]["podCIDRs"] == ["10.244.1.0/24"]
    assert node["status"] == {"capacity": {"cpu": "4"}, "allocatable": {"cpu": "4"}}


def test_status_and_generation_as_kubernetes() -> None:
    with_status = {r.kind for r in RESOURCES if r.strategy.has_status}
    assert with_status == {r.kind for r in RESOURCES if "status" in r.subresources}
    assert {r.kind for r in RESOURCES if r.strategy.track_generation} == {
        "Deployment", "ReplicaSet"}


# ------------------------------------------------------------------ updates

def pod_update(edits: dict[str, Any], base: dict[str, Any] | None = None
               ) -> list[tuple[str, str]]:
    old = created("Pod", base or {})
    new = copy.deepcopy(old)
    for path, value in edits.items():
        put(new, path, value)
    return fields(update("Pod", old, new)[1])


@pytest.mark.parametrize("base, edits, expected", [
    ({}, {"spec.containers[0].image": "nginx:1.26"}, []),
    ({}, {"metadata.labels": {"app": "web"}}, []),
    ({}, {"spec.nodeName": "n1"}, [("spec", "FieldValueForbidden")]),
    ({}, {"spec.containers[0].ports": [{"containerPort": 80, "protocol": "TCP"}]},
     [("spec", "FieldValueForbidden")]),
    ({}, {"spec.terminationGracePeriodSeconds": 10}, [("spec", "FieldValueForbidden")]),
    ({"spec.terminationGracePeriodSeconds": -1}, {"spec.terminationGracePeriodSeconds": 1}, []),
    ({}, {"spec.activeDeadlineSeconds": 60}, []),
    ({"spec.activeDeadlineSeconds": 60}, {"spec.activeDeadlineSeconds": 30}, []),
    ({"spec.activeDeadlineSeconds": 60}, {"spec.activeDeadlineSeconds": 90},
     [("spec.activeDeadlineSeconds", "FieldValueInvalid")]),
    ({"spec.activeDeadlineSeconds": 60}, {"spec.activeDeadlineSeconds": DELETE},
     [("spec.activeDeadlineSeconds", "FieldValueInvalid")]),
    ({"spec.tolerations": [{"key": "a", "operator": "Exists"}]},
     {"spec.tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]},
     []),
    ({"spec.tolerations": [{"key": "a", "operator": "Exists"}]}, {"spec.tolerations": []},
     [("spec.tolerations", "FieldValueForbidden")]),
])
def test_pod_updates(base: dict[str, Any], edits: dict[str, Any], expected: list) -> None:
    assert pod_update(edits, base) == expected


def test_pod_update_message_names_changed_fields() -> None:
    old = created("Pod")
    new = copy.deepcopy(old)
    new["spec"]["nodeName"] = "n1"
    [cause] = update("Pod", old, new)[1]
    assert cause["message"].startswith("Forbidden: pod updates may not change fields other than "
                                       "`spec.containers[*].image`,")
    assert cause["message"].endswith("changed: spec.nodeName")


def test_pod_status_survives_spec_update() -> None:
    old = created("Pod")
    old["status"] = {"phase": "Running"}
    new = copy.deepcopy(old)
    new["status"] = {"phase": "Failed"}
    assert update("Pod", old, new)[0]["status"] == {"phase": "Running"}


def test_selector_is_immutable() -> None:
    for kind in ("Deployment", "ReplicaSet"):
        old = created(kind)
        new = copy.deepcopy(old)
        new["spec"]["selector"]["matchLabels"]["tier"] = "front"
        new["spec"]["template"]["metadata"]["labels"]["tier"] = "front"
        assert fields(update(kind, old, new)[1]) == [("spec.selector", "FieldValueInvalid")]


def test_service_keeps_allocated_values() -> None:
    old = created("Service", {"spec.type": "NodePort", "spec.clusterIP": "10.96.0.10",
                              "spec.ports": [{"name": "http", "port": 80, "nodePort": 30080}]})
    applied = edited("Service", {"spec.type": "NodePort",
                                 "spec.ports": [{"name": "http", "port": 8080}]})
    new, causes = update("Service", old, applied)
    assert causes == []
    assert (new["spec"]["clusterIP"], new["spec"]["clusterIPs"]) == ("10.96.0.10", ["10.96.0.10"])
    assert new["spec"]["ports"][0]["nodePort"] == 30080
    by_list = edited("Service", {"spec.type": "NodePort", "spec.clusterIPs": ["10.96.0.10"]})
    assert update("Service", old, by_list)[1] == []
    moved = edited("Service", {"spec.clusterIPs": ["10.96.0.11"]})
    assert fields(update("Service", old, moved)[1]) == [("spec.clusterIPs[0]", "FieldValueInvalid")]
    to_external = edited("Service", {"spec.type": "ExternalName", "spec.ports": [],
                                     "spec.externalName": "db.example.com"})
    new, causes = update("Service", old, to_external)
    assert causes == [] and "clusterIP" not in new["spec"]


@pytest.mark.parametrize("old_edits, new_edits, expected", [
    ({}, {"data": {"a.conf": "x=2"}}, []),
    ({"immutable": True}, {"immutable": True}, []),
    ({"immutable": True}, {"immutable": True, "data": {"a.conf": "x=2"}},
     [("data", "FieldValueForbidden")]),
    ({"immutable": True}, {"immutable": False},
     [("immutable", "FieldValueForbidden")]),
    ({"immutable": True}, {"immutable": True, "binaryData": {}},
     [("binaryData", "FieldValueForbidden")]),
])
def test_immutable_config_maps(old_edits: dict, new_edits: dict, expected: list) -> None:
    old = created("ConfigMap", old_edits)
    assert fields(update("ConfigMap", old, edited("ConfigMap", new_edits))[1]) == expected


def test_secret_type_and_immutability() -> None:
    old = created("Secret", {"immutable": True})
    new = edited("Secret", {"immutable": True, "type": "kubernetes.io/tls",
                            "data": {"password": "eA=="}})
    assert fields(update("Secret", old, new)[1]) == [("data", "FieldValueForbidden"),
                                                     ("type", "FieldValueInvalid")]


def test_node_set_once_fields() -> None:
    old = created("Node", {"spec.podCIDR": DELETE})
    assigned = edited("Node", {"spec.providerID": "lab://n1"})
    new, causes = update("Node", old, assigned)
    assert causes == [] and new["spec"]["podCIDRs"] == ["10.244.1.0/24"]
    moved = edited("Node", {"spec.podCIDR": "10.244.9.0/24", "spec.providerID": "lab://n2"})
    assert fields(update("Node", new, moved)[1]) == [("spec.podCIDRs", "FieldValueForbidden"),
                                                     ("spec.providerID", "FieldValueForbidden")]


@pytest.mark.parametrize("phase, edits, expected", [
    ("Pending", {"spec.volumeName": "pv-1"}, []),
    ("Bound", {"spec.resources.requests.storage": "2Gi"}, []),
    ("Pending", {"spec.resources.requests.storage": "2Gi"}, [("spec", "FieldValueForbidden")]),
    ("Bound", {"spec.resources.requests.storage": "512Mi"},
     [("spec.resources.requests.storage", "FieldValueForbidden")]),
    ("Bound", {"spec.accessModes": ["ReadWriteMany"]}, [("spec", "FieldValueForbidden")]),
])
def test_claim_updates(phase: str, edits: dict[str, Any], expected: list) -> None:
    old = created("PersistentVolumeClaim")
    old["status"]["phase"] = phase
    new = copy.deepcopy(old)
    for path, value in edits.items():
        put(new, path, value)
    assert fields(update("PersistentVolumeClaim", old, new)[1]) == expected


def test_volume_source_is_immutable() -> None:
    old = created("PersistentVolume")
    new = edited("PersistentVolume", {"spec.hostPath.path": "/other"})
    assert fields(update("PersistentVolume", old, new)[1]) == [
        ("spec.persistentvolumesource", "FieldValueForbidden")]


# ------------------------------------------------------------------ printing

def cells(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    result = table.to_table(rt_of(kind).strategy.columns(), [obj], now=NOW)
    names = [c["name"] for c in result["columnDefinitions"]]
    return dict(zip(names, result["rows"][0]["cells"], strict=True))


def status(*containers: dict[str, Any], phase: str = "Running", **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "containerStatuses": list(containers), **extra}


def running(ready: bool = True, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": "web", "ready": ready, "restartCount": restarts,
            "state": {"running": {}}, **extra}


def waiting(reason: str, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": "web", "ready": False, "restartCount": restarts,
            "state": {"waiting": {"reason": reason}}, **extra}


def terminated(**state: Any) -> dict[str, Any]:
    return {"name": "web", "ready": False, "restartCount": 0, "state": {"terminated": state}}


CRASHED = {"lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-06-01T11:58:00Z"}}}
INIT = {"spec.initContainers": [container("setup")]}
POD_ROWS = [
    ({}, {"phase": "Pending"}, ("0/1", "Pending", "0")),
    ({}, status(waiting("ContainerCreating"), phase="Pending"),
     ("0/1", "ContainerCreating", "0")),
    ({}, status(running()), ("1/1", "Running", "0")),
    ({}, status(running(ready=False)), ("0/1", "Running", "0")),
    ({}, status(waiting("CrashLoopBackOff", restarts=5, **CRASHED)),
     ("0/1", "CrashLoopBackOff", "5 (2m ago)")),
    ({}, status(terminated(exitCode=0, reason="Completed"), phase="Succeeded"),
     ("0/1", "Completed", "0")),
    ({}, status(terminated(exitCode=2), phase="Failed"), ("0/1", "ExitCode:2", "0")),
    ({}, status(terminated(exitCode=137, signal=9), phase="Failed"), ("0/1", "Signal:9", "0")),
    ({}, {"phase": "Failed", "reason": "Evicted"}, ("0/1", "Evicted", "0")),
    ({}, {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                              "reason": "SchedulingGated"}]},
     ("0/1", "SchedulingGated", "0")),
    (INIT, status(phase="Pending", initContainerStatuses=[
        {"name": "setup", "restartCount": 0, "state": {"running": {}}}]),
     ("0/1", "Init:0/1", "0")),
    (INIT, status(phase="Pending", initContainerStatuses=[
        {"name": "setup", "restartCount": 2, "state": {"waiting": {"reason": "ErrImagePull"}}}]),
     ("0/1", "Init:ErrImagePull", "2")),
    (INIT, status(phase="Pending", initContainerStatuses=[
        {"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 1,
                                                                      "reason": "Error"}}}]),
     ("0/1", "Init:Error", "0")),
    (INIT, status(phase="Pending", initContainerStatuses=[
        {"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]),
     ("0/1", "Init:ExitCode:3", "0")),
    (INIT, status(running(), initContainerStatuses=[
        {"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}]),
     ("1/1", "Running", "0")),
    ({"spec.initContainers": [container("proxy", restartPolicy="Always")]},
     status(running(), initContainerStatuses=[
         {"name": "proxy", "restartCount": 1, "started": True, "ready": True,
          "state": {"running": {}}}]),
     ("2/2", "Running", "1")),
    ({"spec.containers": [container("a"), container("b")]},
     status(terminated(exitCode=0, reason="Completed"), {**running(), "name": "b"},
            conditions=[{"type": "Ready", "status": "True"}]),
     ("1/2", "Running", "0")),
    ({"spec.containers": [container("a"), container("b")]},
     status(terminated(exitCode=0, reason="Completed"), {**running(), "name": "b"}),
     ("1/2", "NotReady", "0")),
    ({"metadata.deletionTimestamp": CREATED}, status(running()), ("1/1", "Terminating", "0")),
    ({"metadata.deletionTimestamp": CREATED}, status(running(), reason="NodeLost"),
     ("1/1", "Unknown", "0")),
    ({"metadata.deletionTimestamp": CREATED},
     status(terminated(exitCode=0, reason="Completed"), phase="Succeeded"),
     ("0/1", "Completed", "0")),
]


@pytest.mark.parametrize("edits, pod_status, expected", POD_ROWS)
def test_pod_status_cells(edits: dict[str, Any], pod_status: dict[str, Any],
                          expected: tuple[str, str, str]) -> None:
    pod = edited("Pod", edits)
    pod["status"] = pod_status
    row = cells("Pod", pod)
    assert (row["Ready"], row["Status"], row["Restarts"]) == expected


def test_pod_wide_cells() -> None:
    pod = edited("Pod", {"spec.nodeName": "n1", "spec.readinessGates": [
        {"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]})
    pod["status"] = {"phase": "Running", "podIPs": [{"ip": "10.244.1.5"}],
                     "conditions": [{"type": "example.com/lb", "status": "True"}]}
    row = cells("Pod", pod)
    assert (row["IP"], row["Node"], row["Nominated Node"], row["Readiness Gates"], row["Age"]) == (
        "10.244.1.5", "n1", "<none>", "1/2", "60m")
    bare = cells("Pod", VALID["Pod"])
    assert (bare["IP"], bare["Node"], bare["Readiness Gates"]) == ("<none>",) * 3


KUBECTL_HEADERS = {
    "Pod": "NAME READY STATUS RESTARTS AGE | IP NODE NOMINATED NODE READINESS GATES",
    "Deployment": "NAME READY UP-TO-DATE AVAILABLE AGE | CONTAINERS IMAGES SELECTOR",
    "ReplicaSet": "NAME DESIRED CURRENT READY AGE | CONTAINERS IMAGES SELECTOR",
    "Service": "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE | SELECTOR",
    "Node": "NAME STATUS ROLES AGE VERSION | INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION "
            "CONTAINER-RUNTIME",
    "Namespace": "NAME STATUS AGE |",
    "ConfigMap": "NAME DATA AGE |",
    "Secret": "NAME TYPE DATA AGE |",
    "Event": "LAST SEEN TYPE REASON OBJECT MESSAGE | SUBOBJECT SOURCE FIRST SEEN COUNT NAME",
    "Endpoints": "NAME ENDPOINTS AGE |",
    "PersistentVolume": "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS "
                        "VOLUMEATTRIBUTESCLASS REASON AGE | VOLUMEMODE",
    "PersistentVolumeClaim": "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS "
                             "VOLUMEATTRIBUTESCLASS AGE | VOLUMEMODE",
    "ServiceAccount": "NAME SECRETS AGE |",
    "Lease": "NAME HOLDER AGE |",
    "EndpointSlice": "NAME ADDRESSTYPE PORTS ENDPOINTS AGE |",
}


@pytest.mark.parametrize("kind", sorted(KUBECTL_HEADERS))
def test_kubectl_headers(kind: str) -> None:
    """What ``kubectl get`` prints above the rows (after the bar: the ``-o wide`` extras)."""
    obj, _causes = create(kind, VALID[kind])
    result = table.to_table(rt_of(kind).strategy.columns(), [obj], now=NOW)
    defs = result["columnDefinitions"]
    normal = " ".join(c["name"].upper() for c in defs if c["priority"] == 0)
    wide = " ".join(c["name"].upper() for c in defs if c["priority"] == 1)
    assert f"{normal} | {wide}".strip() == KUBECTL_HEADERS[kind]
    assert len(result["rows"][0]["cells"]) == len(defs)
    assert [c["name"] for c in defs].count("Name") == 1


@pytest.mark.parametrize("kind, edits, expected", [
    ("Deployment", {"spec.replicas": 3, "status": {"readyReplicas": 2, "updatedReplicas": 3,
                                                   "availableReplicas": 2}},
     {"Ready": "2/3", "Up-to-date": 3, "Available": 2, "Age": "60m", "Containers": "web",
      "Images": "nginx:1.25", "Selector": "app=web"}),
    ("ReplicaSet", {"status": {"replicas": 2, "readyReplicas": 1}},
     {"Desired": 2, "Current": 2, "Ready": 1}),
    ("Service", {"spec.clusterIPs": ["10.96.0.10"],
                 "spec.ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080},
                                {"port": 53, "protocol": "UDP"}], "spec.type": "NodePort"},
     {"Type": "NodePort", "Cluster-IP": "10.96.0.10", "External-IP": "<none>",
      "Port(s)": "80:30080/TCP,53/UDP", "Selector": "app=web"}),
    ("Service", {"spec.type": "LoadBalancer", "spec.ports[0].protocol": "TCP"},
     {"Cluster-IP": "<none>", "External-IP": "<pending>", "Port(s)": "80/TCP"}),
    ("Service", {"spec.type": "LoadBalancer", "spec.externalIPs": ["1.2.3.4"],
                 "status": {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}},
     {"External-IP": "5.6.7.8,1.2.3.4"}),
    ("Service", {"spec.type": "ExternalName", "spec.externalName": "db.example.com"},
     {"External-IP": "db.example.com"}),
    ("Node", {"metadata.labels": {"node-role.kubernetes.io/control-plane": "",
                                  "kubernetes.io/role": "worker"},
              "spec.unschedulable": True,
              "status": {"conditions": [{"type": "Ready", "status": "True"}],
                         "addresses": [{"type": "InternalIP", "address": "198.18.0.2"}],
                         "nodeInfo": {"kubeletVersion": "v1.31.0"}}},
     {"Status": "Ready,SchedulingDisabled", "Roles": "control-plane,worker",
      "Version": "v1.31.0", "Internal-IP": "198.18.0.2", "External-IP": "<none>",
      "OS-Image": "<unknown>"}),
    ("Node", {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
     {"Status": "NotReady", "Roles": "<none>", "Version": ""}),
    ("Node", {}, {"Status": "Unknown"}),
    ("Namespace", {"status": {"phase": "Terminating"}}, {"Status": "Terminating"}),
    ("ConfigMap", {}, {"Data": 2}),
    ("Secret", {"type": "Opaque"}, {"Type": "Opaque", "Data": 1}),
    ("ServiceAccount", {"secrets": [{"name": "t"}]}, {"Secrets": 1}),
    ("Lease", {}, {"Holder": "node-1"}),
    ("EndpointSlice", {}, {"AddressType": "IPv4", "Ports": "8080", "Endpoints": "10.244.1.5"}),
    ("Endpoints", {"subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 5)],
                                "ports": [{"port": 80}]}]},
     {"Endpoints": "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."}),
    ("Endpoints", {"subsets": [{"addresses": [{"ip": "fd00::1"}]}]}, {"Endpoints": "fd00::1"}),
    ("Endpoints", {"subsets": []}, {"Endpoints": "<none>"}),
    ("Event", {"lastTimestamp": "2024-06-01T11:59:00Z", "firstTimestamp": CREATED, "count": 3,
               "source": {"component": "kubelet", "host": "n1"},
               "involvedObject.fieldPath": "spec.containers{web}"},
     {"Last Seen": "60s", "Type": "Normal", "Reason": "Started", "Object": "pod/web",
      "Subobject": "spec.containers{web}", "Source": "kubelet, n1",
      "Message": "Started container web", "First Seen": "60m", "Count": 3, "Name": "web.1"}),
    ("Event", {"involvedObject": {"kind": "Node"}}, {"Object": "node", "Last Seen": "<unknown>",
                                                     "Count": 1}),
    ("PersistentVolume", {"spec.claimRef": {"namespace": "default", "name": "data"},
                          "spec.storageClassName": "local", "status": {"phase": "Bound"}},
     {"Capacity": "1Gi", "Access Modes": "RWO", "Reclaim Policy": "", "Status": "Bound",
      "Claim": "default/data", "StorageClass": "local", "VolumeAttributesClass": "<unset>",
      "VolumeMode": "<unset>"}),
    ("PersistentVolume", {"metadata.deletionTimestamp": CREATED,
                          "spec.accessModes": ["ReadWriteMany", "ReadWriteOnce"]},
     {"Status": "Terminating", "Access Modes": "RWO,RWX"}),
    ("PersistentVolumeClaim", {},
     {"Status": "", "Volume": "", "Capacity": "", "Access Modes": ""}),
    ("PersistentVolumeClaim", {"spec.volumeName": "pv-1", "status": {
        "phase": "Bound", "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"]}},
     {"Status": "Bound", "Volume": "pv-1", "Capacity": "2Gi", "Access Modes": "RWO"}),
])
def test_cells(kind: str, edits: dict[str, Any], expected: dict[str, Any]) -> None:
    row = cells(kind, edited(kind, edits))
    assert {k: row[k] for k in expected} == expected


# ------------------------------------------------------------------ deletion and fields

@pytest.mark.parametrize("edits, requested, seconds", [
    ({}, None, 0),
    ({}, 10, 0),
    ({"spec.nodeName": "n1"}, None, 30),
    ({"spec.nodeName": "n1"}, 5, 5),
    ({"spec.nodeName": "n1"}, 0, 0),
    ({"spec.nodeName": "n1", "spec.terminationGracePeriodSeconds": 60}, None, 60),
    ({"spec.nodeName": "n1", "spec.terminationGracePeriodSeconds": -5}, None, 1),
    ({"spec.nodeName": "n1", "status": {"phase": "Succeeded"}}, 20, 0),
])
def test_pod_graceful_delete(edits: dict[str, Any], requested: int | None, seconds: int) -> None:
    pod, _causes = create("Pod", edited("Pod", {k: v for k, v in edits.items()
                                                if k != "status"}))
    pod["status"] = edits.get("status", pod["status"])
    assert rt_of("Pod").strategy.graceful_delete(pod, requested) == seconds


def test_other_kinds_delete_at_once() -> None:
    for kind in VALID:
        if kind != "Pod":
            assert rt_of(kind).strategy.graceful_delete(VALID[kind], 30) == 0


@pytest.mark.parametrize("kind, edits, expected", [
    ("Pod", {"spec.nodeName": "n1", "spec.serviceAccountName": "builder",
             "status": {"phase": "Running", "podIP": "10.244.1.5"}},
     {"spec.nodeName": "n1", "spec.restartPolicy": "", "spec.schedulerName": "",
      "spec.serviceAccountName": "builder", "spec.hostNetwork": "false",
      "status.phase": "Running", "status.podIP": "10.244.1.5", "status.nominatedNodeName": ""}),
    ("Node", {"spec.unschedulable": True}, {"spec.unschedulable": "true"}),
    ("Secret", {"type": "Opaque"}, {"type": "Opaque"}),
    ("Namespace", {"status": {"phase": "Active"}}, {"status.phase": "Active", "name": "team-a"}),
    ("ReplicaSet", {"status": {"replicas": 2}}, {"status.replicas": "2"}),
    ("Event", {"source": {"component": "kubelet"}},
     {"involvedObject.kind": "Pod", "involvedObject.namespace": "default",
      "involvedObject.name": "web", "involvedObject.uid": "", "involvedObject.apiVersion": "",
      "involvedObject.resourceVersion": "", "involvedObject.fieldPath": "",
      "reason": "Started", "type": "Normal", "source": "kubelet", "reportingComponent": ""}),
    ("ConfigMap", {}, {}),
])
def test_field_labels(kind: str, edits: dict[str, Any], expected: dict[str, str]) -> None:
    strategy = rt_of(kind).strategy
    assert strategy.field_labels(edited(kind, edits)) == expected
    assert strategy.field_label_names() == set(expected)


@pytest.mark.parametrize("kind, name, valid", [
    ("Service", "web-1", True), ("Service", "1web", False), ("Service", "a.b", False),
    ("Namespace", "a.b", False), ("Pod", "a.b", True), ("Node", "node-1.lab", True),
])
def test_name_validators(kind: str, name: str, valid: bool) -> None:
    assert (rt_of(kind).strategy.name_validator(name) == []) is valid
