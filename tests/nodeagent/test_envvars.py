"""envvars, table-driven: a container's env/envFrom + ConfigMaps/Secrets -> its environment, as
the kubelet's makeEnvironmentVariables (and its expansion tests) decide it."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from nodeagent.envvars import (
    ContainerConfigError,
    DictLookup,
    container_resource_value,
    expand,
    format_map,
    mapping_for,
    resolve_env,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def configmap(name: str, data: dict[str, str], namespace: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "data": data}


def secret(name: str, data: dict[str, str], namespace: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "data": {k: b64(v) for k, v in data.items()}}


LOOKUP = DictLookup(
    configmaps=[configmap("app", {"LOG": "debug", "MODE": "prod", "bad key": "x", "1X": "y"}),
                configmap("more", {"MODE": "staging", "EXTRA": "e"})],
    secrets=[secret("db", {"PASSWORD": "s3cr3t", "USER": "root"})])

POD: dict[str, Any] = {
    "metadata": {"name": "web-1", "namespace": "default", "uid": "uid-1",
                 "labels": {"app": "web", "tier": "front"},
                 "annotations": {"note": 'say "hi"'}},
    "spec": {"nodeName": "node-a", "serviceAccountName": "builder",
             "containers": [{"name": "main", "image": "x",
                             "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"},
                                           "requests": {"cpu": "250m", "memory": "100Mi"}}},
                            {"name": "side", "image": "x",
                             "resources": {"limits": {"cpu": "2"}}}]},
}


async def resolve(container: dict[str, Any], **kw: Any) -> list[tuple[str, str]]:
    args: dict[str, Any] = {"pod_ip": "10.1.0.5", "host_ip": "192.168.0.2", "node_name": "node-a"}
    args.update(kw)
    main = POD["spec"]["containers"][0]
    return await resolve_env(POD, {**main, **container}, LOOKUP, **args)


def field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def resource(res: str, divisor: str | None = None, container: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": res}
    if divisor is not None:
        ref["divisor"] = divisor
    if container is not None:
        ref["containerName"] = container
    return {"valueFrom": {"resourceFieldRef": ref}}


# ------------------------------------------------------------------ expansion

@pytest.mark.parametrize("value, expected", [
    ("plain", "plain"),
    ("$(A)", "a"),
    ("x-$(A)-$(B)-y", "x-a-b-y"),
    ("$(UNDEFINED)", "$(UNDEFINED)"),
    ("$$(A)", "$(A)"),                 # escaped reference
    ("$$$(A)", "$a"),
    ("$$", "$"),
    ("$", "$"),                        # a trailing operator stays
    ("a$", "a$"),
    ("$A", "$A"),                      # no parenthesis: kept
    ("$(A", "$(A"),                    # unclosed
    ("$()", ""),                       # empty name is a (missing) variable named ""... see below
    ("$(A)$(A)", "aa"),
    ("$(EMPTY)x", "x"),
])
def test_expand(value: str, expected: str) -> None:
    mapping = mapping_for({"A": "a", "B": "b", "EMPTY": "", "": ""})
    assert expand(value, mapping) == expected


def test_expand_undefined_empty_name_stays() -> None:
    assert expand("$()", mapping_for({})) == "$()"


# ------------------------------------------------------------------ resolution table

CASES: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    ("plain values in order",
     {"env": [{"name": "B", "value": "1"}, {"name": "A", "value": "2"}]},
     [("B", "1"), ("A", "2")]),
    ("empty value", {"env": [{"name": "E"}]}, [("E", "")]),
    ("expansion of earlier vars only",
     {"env": [{"name": "A", "value": "x"}, {"name": "B", "value": "$(A)-$(C)"},
              {"name": "C", "value": "c"}]},
     [("A", "x"), ("B", "x-$(C)"), ("C", "c")]),
    ("escaping", {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$$(A)"}]},
     [("A", "1"), ("B", "$(A)")]),
    ("expansion sees envFrom",
     {"envFrom": [{"configMapRef": {"name": "app"}}],
      "env": [{"name": "URL", "value": "log=$(LOG)"}]},
     [("LOG", "debug"), ("MODE", "prod"), ("URL", "log=debug")]),
    ("envFrom configmap, invalid keys skipped",
     {"envFrom": [{"configMapRef": {"name": "app"}}]},
     [("LOG", "debug"), ("MODE", "prod")]),
    ("envFrom prefix makes a key valid",
     {"envFrom": [{"configMapRef": {"name": "app"}, "prefix": "P_"}]},
     [("P_LOG", "debug"), ("P_MODE", "prod"), ("P_1X", "y")]),
    ("envFrom secret decoded",
     {"envFrom": [{"secretRef": {"name": "db"}, "prefix": "DB_"}]},
     [("DB_PASSWORD", "s3cr3t"), ("DB_USER", "root")]),
    ("later envFrom overrides, keeps first position",
     {"envFrom": [{"configMapRef": {"name": "app"}}, {"configMapRef": {"name": "more"}}]},
     [("LOG", "debug"), ("MODE", "staging"), ("EXTRA", "e")]),
    ("env overrides envFrom in place",
     {"envFrom": [{"configMapRef": {"name": "app"}}],
      "env": [{"name": "X", "value": "1"}, {"name": "LOG", "value": "info"}]},
     [("LOG", "info"), ("MODE", "prod"), ("X", "1")]),
    ("duplicate env: last wins",
     {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "$(A)2"}]},
     [("A", "12")]),
    ("optional envFrom missing",
     {"envFrom": [{"configMapRef": {"name": "nope", "optional": True}},
                  {"secretRef": {"name": "nope", "optional": True}}]},
     []),
    ("configMapKeyRef", {"env": [{"name": "L", "valueFrom": {
        "configMapKeyRef": {"name": "app", "key": "LOG"}}}]}, [("L", "debug")]),
    ("secretKeyRef", {"env": [{"name": "P", "valueFrom": {
        "secretKeyRef": {"name": "db", "key": "PASSWORD"}}}]}, [("P", "s3cr3t")]),
    ("valueFrom is not expanded", {"env": [{"name": "A", "value": "a"}, {"name": "V", "valueFrom": {
        "configMapKeyRef": {"name": "app", "key": "bad key"}}}]},
     [("A", "a"), ("V", "x")]),
    ("optional missing source/key: unset, envFrom value stays",
     {"envFrom": [{"configMapRef": {"name": "app"}}],
      "env": [{"name": "LOG", "valueFrom": {"configMapKeyRef": {
                  "name": "nope", "key": "k", "optional": True}}},
              {"name": "MODE", "valueFrom": {"configMapKeyRef": {
                  "name": "app", "key": "nokey", "optional": True}}},
              {"name": "S", "valueFrom": {"secretKeyRef": {
                  "name": "db", "key": "nokey", "optional": True}}},
              {"name": "T", "valueFrom": {"secretKeyRef": {
                  "name": "nope", "key": "k", "optional": True}}}]},
     [("LOG", "debug"), ("MODE", "prod")]),
    ("fieldRefs", {"env": [
        {"name": "NAME", **field("metadata.name")},
        {"name": "NS", **field("metadata.namespace")},
        {"name": "UID", **field("metadata.uid")},
        {"name": "APP", **field("metadata.labels['app']")},
        {"name": "NONE", **field("metadata.labels['missing']")},
        {"name": "NOTE", **field("metadata.annotations['note']")},
        {"name": "NODE", **field("spec.nodeName")},
        {"name": "SA", **field("spec.serviceAccountName")},
        {"name": "HOST", **field("status.hostIP")},
        {"name": "HOSTS", **field("status.hostIPs")},
        {"name": "IP", **field("status.podIP")},
        {"name": "IPS", **field("status.podIPs")},
        {"name": "HOSTNAME_OLD", **field("spec.host")},
    ]}, [("NAME", "web-1"), ("NS", "default"), ("UID", "uid-1"), ("APP", "web"), ("NONE", ""),
         ("NOTE", 'say "hi"'), ("NODE", "node-a"), ("SA", "builder"), ("HOST", "192.168.0.2"),
         ("HOSTS", "192.168.0.2"), ("IP", "10.1.0.5"), ("IPS", "10.1.0.5"),
         ("HOSTNAME_OLD", "node-a")]),
    ("resourceFieldRefs", {"env": [
        {"name": "CPU", **resource("limits.cpu")},             # 1.5 cores, rounded up
        {"name": "CPU_M", **resource("limits.cpu", "1m")},
        {"name": "REQ_CPU", **resource("requests.cpu", "100m")},   # 250m/100m -> 3
        {"name": "MEM", **resource("limits.memory")},
        {"name": "MEM_MI", **resource("limits.memory", "1Mi")},
        {"name": "MEM_G", **resource("limits.memory", "1G")},   # 1.07 G -> 2
        {"name": "REQ_MEM_MI", **resource("requests.memory", "1Mi")},
        {"name": "EPH", **resource("requests.ephemeral-storage")},
        {"name": "SIDE", **resource("limits.cpu", "1m", container="side")},
        {"name": "ZERO_DIV", **resource("limits.cpu", "0")},
    ]}, [("CPU", "2"), ("CPU_M", "1500"), ("REQ_CPU", "3"), ("MEM", str(2**30)),
         ("MEM_MI", "1024"), ("MEM_G", "2"), ("REQ_MEM_MI", "100"), ("EPH", "0"),
         ("SIDE", "2000"), ("ZERO_DIV", "2")]),
]


@pytest.mark.parametrize("container, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_resolve_env(container: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert await resolve(container) == expected


async def test_multiple_ips() -> None:
    env = {"env": [{"name": "IPS", **field("status.podIPs")}, {"name": "IP", **field("status.podIP")},
                   {"name": "HOSTS", **field("status.hostIPs")}]}
    got = await resolve(env, pod_ips=["10.1.0.5", "fd00::5"], host_ips=["192.168.0.2", "fd01::2"])
    assert got == [("IPS", "10.1.0.5,fd00::5"), ("IP", "10.1.0.5"),
                   ("HOSTS", "192.168.0.2,fd01::2")]


async def test_whole_label_map_is_formatted() -> None:
    assert format_map({"b": "2", "a": 'x"y'}) == 'a="x\\"y"\nb="2"'


async def test_unset_limit_reads_node_allocatable() -> None:
    container = {"name": "c", "resources": {}}
    assert container_resource_value({"resource": "limits.cpu"}, POD, container) == "0"
    assert container_resource_value({"resource": "limits.cpu", "divisor": "1m"}, POD, container,
                                    allocatable={"cpu": "4"}) == "4000"
    assert container_resource_value({"resource": "limits.memory", "divisor": "1Mi"}, POD,
                                    container, allocatable={"memory": "2Gi"}) == "2048"
    # requests never default to allocatable
    assert container_resource_value({"resource": "requests.cpu"}, POD, container,
                                    allocatable={"cpu": "4"}) == "0"


async def test_invalid_envfrom_keys_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nodeagent.envvars"):
        await resolve({"envFrom": [{"configMapRef": {"name": "app"}}]})
    assert "keys [1X, bad key] from the EnvFrom configmap default/app were skipped" in caplog.text


ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("envFrom configmap missing", {"envFrom": [{"configMapRef": {"name": "nope"}}]},
     'configmap "nope" not found'),
    ("envFrom secret missing", {"envFrom": [{"secretRef": {"name": "nope"}}]},
     'secret "nope" not found'),
    ("configMapKeyRef source missing", {"env": [{"name": "A", "valueFrom": {
        "configMapKeyRef": {"name": "nope", "key": "k"}}}]}, 'configmap "nope" not found'),
    ("configMapKeyRef key missing", {"env": [{"name": "A", "valueFrom": {
        "configMapKeyRef": {"name": "app", "key": "k"}}}]},
     "couldn't find key k in ConfigMap default/app"),
    ("secretKeyRef source missing", {"env": [{"name": "A", "valueFrom": {
        "secretKeyRef": {"name": "db2", "key": "k"}}}]}, 'secret "db2" not found'),
    ("secretKeyRef key missing", {"env": [{"name": "A", "valueFrom": {
        "secretKeyRef": {"name": "db", "key": "k"}}}]},
     "couldn't find key k in Secret default/db"),
    ("unsupported field", {"env": [{"name": "A", **field("spec.containers")}]},
     "field label not supported: spec.containers"),
    ("converted but unextractable field", {"env": [{"name": "A", **field("status.phase")}]},
     "unsupported fieldPath: status.phase"),
    ("subscript on a plain field", {"env": [{"name": "A", **field("metadata.name['x']")}]},
     "field label does not support subscript: metadata.name['x']"),
    ("bad apiVersion", {"env": [{"name": "A", "valueFrom": {"fieldRef": {
        "apiVersion": "v2", "fieldPath": "metadata.name"}}}]}, "unsupported pod version: v2"),
    ("unsupported resource", {"env": [{"name": "A", **resource("limits.gpu")}]},
     "unsupported container resource : limits.gpu"),
    ("unknown container", {"env": [{"name": "A", **resource("limits.cpu", container="zz")}]},
     "container zz not found"),
]


@pytest.mark.parametrize("container, message", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
async def test_resolve_env_errors(container: dict[str, Any], message: str) -> None:
    with pytest.raises(ContainerConfigError) as info:
        await resolve(container)
    assert str(info.value) == message


async def test_lookup_is_per_namespace_and_fetched_once() -> None:
    calls: list[tuple[str, str, str]] = []

    class Counting(DictLookup):
        async def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
            calls.append((resource, namespace, name))
            return await super().get(resource, namespace, name)

    lookup = Counting(configmaps=[configmap("app", {"A": "other"}, namespace="other")])
    pod = {**POD, "metadata": {**POD["metadata"], "namespace": "other"}}
    container = {"name": "main", "envFrom": [{"configMapRef": {"name": "app"}}],
                 "env": [{"name": "B", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "A"}}}]}
    got = await resolve_env(pod, container, lookup, pod_ip="", host_ip="", node_name="n")
    assert got == [("A", "other"), ("B", "other")]
    assert calls == [("configmaps", "other", "app")]


async def test_secret_with_non_utf8_bytes() -> None:
    lookup = DictLookup(secrets=[{"metadata": {"name": "bin", "namespace": "default"},
                                  "data": {"K": base64.b64encode(b"a\xffb").decode()}}])
    container = {"name": "main", "envFrom": [{"secretRef": {"name": "bin"}}]}
    got = await resolve_env(POD, container, lookup, pod_ip="", host_ip="", node_name="n")
    assert got == [("K", "a\ufffdb")]
