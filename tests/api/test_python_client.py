"""The official kubernetes Python client against the control plane: CRUD, patch and watch."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config, watch  # the "test" extra installs it
from kubernetes.client.rest import ApiException

from controlplane.localcluster import ControlPlane

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_client(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=control_plane.kubeconfig(1)) as api:
        yield api


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api_client)
    name = f"py-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def test_configmap_crud(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg", labels={"a": "b"}),
                              data={"k": "v"})
    created = core.create_namespaced_config_map(namespace, body)
    assert created.metadata.uid and created.data == {"k": "v"}
    got = core.read_namespaced_config_map("cfg", namespace)
    assert got.metadata.resource_version == created.metadata.resource_version
    got.data["k"] = "w"
    replaced = core.replace_namespaced_config_map("cfg", namespace, got)
    assert replaced.data == {"k": "w"}
    patched = core.patch_namespaced_config_map("cfg", namespace, {"data": {"x": "y"}})
    assert patched.data == {"k": "w", "x": "y"}
    listed = core.list_namespaced_config_map(namespace, label_selector="a=b")
    assert [c.metadata.name for c in listed.items] == ["cfg"]
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_config_map("cfg", namespace, got)
    assert stale.value.status == 409
    core.delete_namespaced_config_map("cfg", namespace)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("cfg", namespace)
    assert missing.value.status == 404


def test_deployment_crud_and_scale(api_client: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    labels = {"app": "d"}
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="d"),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[
                    client.V1Container(name="c", image="busybox:1.36")]))))
    created = apps.create_namespaced_deployment(namespace, body)
    assert created.spec.strategy.type == "RollingUpdate"
    assert created.spec.revision_history_limit == 10
    scale = apps.patch_namespaced_deployment_scale("d", namespace, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    assert apps.read_namespaced_deployment("d", namespace).spec.replicas == 3


def test_watch_streams_events(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    start = core.list_namespaced_config_map(namespace).metadata.resource_version

    def writer() -> None:
        for i in range(3):
            core.create_namespaced_config_map(namespace, client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"w{i}")))
        core.delete_namespaced_config_map("w0", namespace)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    stream = watch.Watch()
    for event in stream.stream(core.list_namespaced_config_map, namespace,
                               resource_version=start, timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 4:
            stream.stop()
    thread.join()
    assert seen == [("ADDED", "w0"), ("ADDED", "w1"), ("ADDED", "w2"), ("DELETED", "w0")]
