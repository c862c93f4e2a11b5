"""The informer against an in-process API server: sync, handlers, indexes, relist, resync."""

from __future__ import annotations

import asyncio
import logging

import pytest

from clientharness import configmap, eventually, pod, port_of, recorder, running

from controlplane.localcluster import InProcessCluster as Cluster

from controlplane.client import CONFIGMAPS, NAMESPACES, PODS, ApiClient, FuncHandler, Informer
from controlplane.client import informer as informer_module
from controlplane.client.informer import key_of


def test_key_of() -> None:
    assert key_of({"metadata": {"name": "a", "namespace": "ns"}}) == "ns/a"
    assert key_of({"metadata": {"name": "node-1"}}) == "node-1"


async def test_sync_fills_the_cache_and_tells_the_handlers(client: ApiClient) -> None:
    await client.create(CONFIGMAPS, "default", configmap("a"))
    await client.create(CONFIGMAPS, "kube-system", configmap("b", namespace="kube-system"))
    informer = Informer(client, CONFIGMAPS)
    seen, handler = recorder()
    informer.add_handler(handler)
    assert not informer.synced.is_set()
    async with running(informer):
        assert sorted(informer.keys()) == ["default/a", "kube-system/b"]
        assert sorted(seen) == [("add", "default/a"), ("add", "kube-system/b")]
        assert informer.get("default/a")["metadata"]["name"] == "a"
        assert informer.get("default/zzz") is None
        assert len(informer.list()) == 2

        late, late_handler = recorder()
        informer.add_handler(late_handler)  # a late handler is told of what is cached
        assert sorted(late) == sorted(seen)


async def test_cluster_scoped_keys(client: ApiClient) -> None:
    async with running(Informer(client, NAMESPACES)) as informer:
        assert {"default", "kube-system"} <= set(informer.keys())


async def test_watch_changes_reach_the_handlers_in_order(client: ApiClient) -> None:
    informer = Informer(client, CONFIGMAPS, namespace="default")
    seen, handler = recorder()
    informer.add_handler(handler)
    async with running(informer):
        await client.create(CONFIGMAPS, "default", configmap("w", {"v": "1"}))
        await client.patch(CONFIGMAPS, "default", "w", {"data": {"v": "2"}})
        await client.create(CONFIGMAPS, "kube-system", configmap("x", namespace="kube-system"))
        await client.delete(CONFIGMAPS, "default", "w")
        await eventually(lambda: len(seen) == 3)
        await asyncio.sleep(0.05)
    assert seen == [("add", "default/w"), ("update", "default/w"), ("delete", "default/w")]
    assert informer.keys() == []


async def test_selectors_narrow_the_cache(client: ApiClient) -> None:
    informer = Informer(client, CONFIGMAPS, label_selector="app=web")
    async with running(informer):
        await client.create(CONFIGMAPS, "default", configmap("web", labels={"app": "web"}))
        await client.create(CONFIGMAPS, "default", configmap("db", labels={"app": "db"}))
        await eventually(lambda: informer.keys() == ["default/web"])
        await client.patch(CONFIGMAPS, "default", "web", {"metadata": {"labels": {"app": "x"}}})
        await eventually(lambda: informer.keys() == [])


async def test_indexes_follow_changes(client: ApiClient) -> None:
    informer = Informer(client, PODS, indexers={
        "node": lambda p: [p["spec"]["nodeName"]] if p["spec"].get("nodeName") else [],
        "broken": lambda p: [p["no such field"]],
    })
    for name in ("a", "b", "c"):
        await client.create(PODS, "default", pod(name))
    await client.bind("default", "a", "n1")
    async with running(informer):
        assert [key_of(p) for p in informer.by_index("node", "n1")] == ["default/a"]
        await client.bind("default", "b", "n1")
        await client.bind("default", "c", "n2")
        await eventually(lambda: len(informer.by_index("node", "n1")) == 2)
        await eventually(lambda: len(informer.by_index("node", "n2")) == 1)
        await client.delete(PODS, "default", "a", grace_period=0)
        await eventually(lambda: [key_of(p) for p in informer.by_index("node", "n1")]
                         == ["default/b"])
        assert informer.by_index("node", "n3") == []
        assert informer.by_index("broken", "anything") == []


async def test_a_failing_handler_does_not_stop_the_others(client: ApiClient,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    informer = Informer(client, CONFIGMAPS, namespace="default")

    def explode(obj: dict) -> None:
        raise RuntimeError("handler bug")

    informer.add_handler(FuncHandler(on_add=explode))
    seen, handler = recorder()
    informer.add_handler(handler)
    async with running(informer):
        await client.create(CONFIGMAPS, "default", configmap("one"))
        await eventually(lambda: seen == [("add", "default/one")])
        await client.create(CONFIGMAPS, "default", configmap("two"))
        await eventually(lambda: len(seen) == 2)
    assert "handler bug" in caplog.text


async def test_snapshot_is_a_copy(client: ApiClient) -> None:
    await client.create(CONFIGMAPS, "default", configmap("s", {"k": "v"}))
    async with running(Informer(client, CONFIGMAPS, namespace="default")) as informer:
        copy = informer.snapshot()
        copy["default/s"]["data"]["k"] = "changed"
        assert informer.get("default/s")["data"]["k"] == "v"


async def test_resync_revisits_every_object(client: ApiClient) -> None:
    for name in ("a", "b"):
        await client.create(CONFIGMAPS, "default", configmap(name))
    informer = Informer(client, CONFIGMAPS, namespace="default", resync=0.1)
    resyncs: list[str] = []
    informer.add_handler(FuncHandler(
        on_update=lambda old, new: resyncs.append(key_of(new)) if old is new else None))
    async with running(informer):
        await eventually(lambda: resyncs.count("default/a") >= 2 and resyncs.count("default/b") >= 2)


async def test_relist_after_compaction_tells_the_delta(cluster: Cluster, client: ApiClient,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    """The informer's controller goes away; meanwhile objects change and the history it would
    resume from is compacted. When a controller is back on that URL, the watch is Expired, and
    the relist tells the handlers exactly what changed."""
    monkeypatch.setattr(informer_module, "BACKOFF_MAX", 0.2)
    caplog.set_level(logging.INFO, logger="controlplane.client.informer")
    for name in ("kept", "changed", "removed"):
        await client.create(CONFIGMAPS, "default", configmap(name, {"v": "1"}))
    informer = Informer(client, CONFIGMAPS, namespace="default")
    seen, handler = recorder()
    informer.add_handler(handler)
    async with running(informer):
        seen.clear()
        rv_before = informer.resource_version
        first = cluster.url
        await cluster.stop_server(first)

        other = await cluster.start_server()
        async with cluster.admin_client([other]) as writer:
            await writer.patch(CONFIGMAPS, "default", "changed", {"data": {"v": "2"}})
            await writer.delete(CONFIGMAPS, "default", "removed")
            added = await writer.create(CONFIGMAPS, "default", configmap("added"))
        await cluster.store.compact(int(added["metadata"]["resourceVersion"]))
        await cluster.start_server(port_of(first))

        await eventually(lambda: len(seen) == 3)
        await asyncio.sleep(0.05)
        assert sorted(seen) == [("add", "default/added"), ("delete", "default/removed"),
                                ("update", "default/changed")]
        assert sorted(informer.keys()) == ["default/added", "default/changed", "default/kept"]
        assert informer.get("default/changed")["data"] == {"v": "2"}
        assert int(informer.resource_version) > int(rv_before)
        assert "relisting" in caplog.text

        # And the new watch works.
        await client.create(CONFIGMAPS, "default", configmap("later"))
        await eventually(lambda: ("add", "default/later") in seen)


async def test_a_factory_shares_one_informer_per_resource(client: ApiClient) -> None:
    """Controllers of one process share a watch: the second ``run()`` joins the first, and
    the list and watch stop only when every runner has been cancelled."""
    from controlplane.client import InformerFactory

    factory = InformerFactory(client)
    first = factory.informer(CONFIGMAPS, indexers={"ns": lambda o: [o["metadata"]["namespace"]]})
    second = factory.informer(CONFIGMAPS)
    assert first is second and factory.informer(PODS) is not first
    with pytest.raises(ValueError):
        factory.informer(CONFIGMAPS, indexers={"ns": lambda o: []})
    await client.create(CONFIGMAPS, "default", configmap("a"))
    runners = [asyncio.create_task(first.run()) for _ in range(2)]
    try:
        await asyncio.wait_for(first.synced.wait(), 10)
        assert [o["metadata"]["name"] for o in first.by_index("ns", "default")] == ["a"]
        runners[0].cancel()
        await asyncio.gather(runners[0], return_exceptions=True)
        assert first.running
        await client.create(CONFIGMAPS, "default", configmap("b"))  # still watched
        await eventually(lambda: first.get("default/b") is not None)
        first.add_indexer("name", lambda o: [o["metadata"]["name"]])  # existing objects too
        assert [o["metadata"]["name"] for o in first.by_index("name", "b")] == ["b"]
    finally:
        for task in runners:
            task.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
    assert not first.running
