"""The Service variables a container gets (the kubelet's ``pkg/kubelet/envvars``), and how
they meet the container's own ``env`` in ``resolve_env``."""

from __future__ import annotations

from typing import Any

from nodeagent.envvars import DictLookup, resolve_env
from nodeagent.serviceenv import service_env

Obj = dict[str, Any]


def svc(name: str, namespace: str, ip: str, ports: list[Obj]) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": ip, "ports": ports}}


KUBERNETES = svc("kubernetes", "default", "10.96.0.1",
                 [{"name": "https", "port": 443, "protocol": "TCP"}])
WEB = svc("web-front", "shop", "10.96.3.4", [{"name": "http", "port": 80},
                                             {"name": "dns", "port": 53, "protocol": "UDP"}])


def pod(namespace: str = "shop", links: bool | None = None) -> Obj:
    spec: Obj = {"containers": [{"name": "c"}]}
    if links is not None:
        spec["enableServiceLinks"] = links
    return {"metadata": {"name": "p", "namespace": namespace}, "spec": spec}


def test_variables_of_a_service_as_the_kubelet_names_them() -> None:
    env = service_env([WEB, KUBERNETES], pod())
    assert list(env.items()) == [
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"), ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
        ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"), ("KUBERNETES_PORT_443_TCP_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ("WEB_FRONT_SERVICE_HOST", "10.96.3.4"), ("WEB_FRONT_SERVICE_PORT", "80"),
        ("WEB_FRONT_SERVICE_PORT_HTTP", "80"), ("WEB_FRONT_SERVICE_PORT_DNS", "53"),
        ("WEB_FRONT_PORT", "tcp://10.96.3.4:80"),
        ("WEB_FRONT_PORT_80_TCP", "tcp://10.96.3.4:80"), ("WEB_FRONT_PORT_80_TCP_PROTO", "tcp"),
        ("WEB_FRONT_PORT_80_TCP_PORT", "80"), ("WEB_FRONT_PORT_80_TCP_ADDR", "10.96.3.4"),
        ("WEB_FRONT_PORT_53_UDP", "udp://10.96.3.4:53"), ("WEB_FRONT_PORT_53_UDP_PROTO", "udp"),
        ("WEB_FRONT_PORT_53_UDP_PORT", "53"), ("WEB_FRONT_PORT_53_UDP_ADDR", "10.96.3.4"),
    ]


def test_which_services_a_pod_sees() -> None:
    other = svc("db", "other", "10.96.9.9", [{"port": 5432}])
    headless = svc("peers", "shop", "None", [{"port": 7000}])
    external = {"metadata": {"name": "ext", "namespace": "shop"},
                "spec": {"type": "ExternalName", "externalName": "example.org"}}
    services = [WEB, KUBERNETES, other, headless, external]
    names = {k.split("_SERVICE_HOST")[0] for k in service_env(services, pod())
             if k.endswith("_SERVICE_HOST")}
    assert names == {"KUBERNETES", "WEB_FRONT"}
    # enableServiceLinks false: only the master Service
    assert {k for k in service_env(services, pod(links=False)) if k.endswith("_HOST")} == \
        {"KUBERNETES_SERVICE_HOST"}
    # A Service named kubernetes in the pod's own namespace wins over default's.
    own = svc("kubernetes", "shop", "10.96.7.7", [{"port": 8443}])
    assert service_env([KUBERNETES, own], pod())["KUBERNETES_SERVICE_HOST"] == "10.96.7.7"
    assert service_env([own, KUBERNETES], pod())["KUBERNETES_SERVICE_HOST"] == "10.96.7.7"
    # A pod in default sees default's Services.
    assert "WEB_FRONT_SERVICE_HOST" not in service_env(services, pod("default"))


async def test_own_env_overrides_and_can_refer_to_service_variables() -> None:
    container = {"name": "c", "env": [
        {"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
        {"name": "WEB_FRONT_SERVICE_PORT", "value": "8080"},
    ]}
    services = service_env([WEB, KUBERNETES], pod())
    env = await resolve_env(pod(), container, DictLookup(), pod_ip="10.244.1.5",
                            host_ip="198.18.1.11", node_name="n1", services=services)
    names = [k for k, _ in env]
    assert names[:2] == ["API", "WEB_FRONT_SERVICE_PORT"]
    assert len(names) == len(set(names)) == len(services) + 1
    values = dict(env)
    assert values["API"] == "https://10.96.0.1:443"
    assert values["WEB_FRONT_SERVICE_PORT"] == "8080"
    assert values["WEB_FRONT_SERVICE_HOST"] == "10.96.3.4"
