"""Workers over a work queue: retries with back-off, Requeue, shutdown, and a whole small
controller (informer -> keys -> reconcile -> writes) against an API server."""

from __future__ import annotations

import asyncio
import logging

import pytest

from clientharness import configmap, eventually, running

from controlplane.client import (
    CONFIGMAPS,
    ApiClient,
    FuncHandler,
    Informer,
    NotFound,
    Requeue,
    WorkQueue,
    key_of,
    run_workers,
)


def _start(queue: WorkQueue, reconcile, workers: int = 1) -> asyncio.Task[None]:  # type: ignore[no-untyped-def]
    return asyncio.create_task(run_workers("test", queue, reconcile, workers=workers),
                               name="test workers")


async def test_a_failing_reconcile_is_retried_with_growing_backoff(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    queue = WorkQueue(base_delay=0.02)
    calls: list[float] = []

    async def reconcile(key: str) -> None:
        calls.append(loop.time())
        if len(calls) <= 3:
            raise RuntimeError(f"attempt {len(calls)} fails")

    workers = _start(queue, reconcile)
    queue.add("a")
    await eventually(lambda: len(calls) == 4)
    gaps = [later - earlier for earlier, later in zip(calls, calls[1:])]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.08
    await eventually(lambda: queue.num_requeues("a") == 0)  # forgotten once it succeeded
    assert caplog.text.count("reconciling a failed") == 3
    assert "attempt 1 fails" in caplog.text and "Traceback" in caplog.text
    queue.shut_down()
    await asyncio.wait_for(workers, 1)


async def test_requeue_calls_again_later_without_a_failure() -> None:
    loop = asyncio.get_running_loop()
    queue = WorkQueue(base_delay=10.0)  # a counted failure would wait 10 s
    calls: list[float] = []

    async def reconcile(key: str) -> None:
        calls.append(loop.time())
        if len(calls) == 1:
            raise Requeue(0.05)

    workers = _start(queue, reconcile)
    queue.add("a")
    await eventually(lambda: len(calls) == 2)
    assert calls[1] - calls[0] >= 0.05 and queue.num_requeues("a") == 0
    queue.shut_down()
    await asyncio.wait_for(workers, 1)


async def test_workers_share_keys_but_never_one_key(caplog: pytest.LogCaptureFixture) -> None:
    queue = WorkQueue()
    busy: set[str] = set()
    done: list[str] = []

    async def reconcile(key: str) -> None:
        assert key not in busy
        busy.add(key)
        await asyncio.sleep(0.01)
        busy.discard(key)
        done.append(key)

    workers = _start(queue, reconcile, workers=3)
    for key in "abcabcabc":
        queue.add(key)
        await asyncio.sleep(0.002)
    await eventually(lambda: len(queue) == 0 and not busy)
    assert set(done) == {"a", "b", "c"}
    assert "failed" not in caplog.text
    queue.shut_down()
    await asyncio.wait_for(workers, 1)


async def test_cancelling_the_workers_releases_the_key() -> None:
    queue = WorkQueue()
    started = asyncio.Event()

    async def reconcile(key: str) -> None:
        started.set()
        await asyncio.sleep(10)

    workers = _start(queue, reconcile)
    queue.add("a")
    await started.wait()
    workers.cancel()
    await asyncio.gather(workers, return_exceptions=True)
    queue.add("a")
    assert queue.try_get() == "a"  # not stuck as "being processed"


async def test_a_small_controller(client: ApiClient, caplog: pytest.LogCaptureFixture) -> None:
    """ConfigMaps labelled mirror=yes get a "<name>-mirror" copy of their data; a copy whose
    source is gone is deleted. Handlers only enqueue keys; reconcile reads the cache and writes
    the difference, level-triggered."""
    caplog.set_level(logging.ERROR)
    sources = Informer(client, CONFIGMAPS, label_selector="mirror=yes")
    copies = Informer(client, CONFIGMAPS, label_selector="mirror=copy")
    queue = WorkQueue(base_delay=0.01)
    enqueue = FuncHandler(on_add=lambda o: queue.add(key_of(o)),
                          on_update=lambda _, o: queue.add(key_of(o)),
                          on_delete=lambda o: queue.add(key_of(o)))
    sources.add_handler(enqueue)
    # A copy's changes enqueue its source's key.
    copies.add_handler(FuncHandler(on_delete=lambda o: queue.add(key_of(o)[:-len("-mirror")])))

    async def reconcile(key: str) -> None:
        namespace, name = key.split("/")
        source, copy = sources.get(key), copies.get(f"{key}-mirror")
        if source is None:
            if copy is not None:
                try:
                    await client.delete(CONFIGMAPS, namespace, f"{name}-mirror")
                except NotFound:
                    pass
            return
        want = configmap(f"{name}-mirror", source.get("data") or {},
                         labels={"mirror": "copy"}, namespace=namespace)
        if copy is None:
            # AlreadyExists when the cache is behind: retried once the copy's event arrives.
            await client.create(CONFIGMAPS, namespace, want)
        elif copy.get("data") != want["data"]:
            await client.update(CONFIGMAPS, {**want, "metadata": {
                **want["metadata"], "resourceVersion": copy["metadata"]["resourceVersion"]}})

    async with running(sources), running(copies):
        workers = _start(queue, reconcile, workers=2)
        await client.create(CONFIGMAPS, "default",
                            configmap("cfg", {"a": "1"}, labels={"mirror": "yes"}))
        await eventually(lambda: (copies.get("default/cfg-mirror") or {}).get("data")
                         == {"a": "1"})
        await client.patch(CONFIGMAPS, "default", "cfg", {"data": {"a": "2"}})
        await eventually(lambda: (copies.get("default/cfg-mirror") or {}).get("data")
                         == {"a": "2"})
        first_uid = copies.get("default/cfg-mirror")["metadata"]["uid"]
        await client.delete(CONFIGMAPS, "default", "cfg-mirror")  # someone deletes the copy
        await eventually(lambda: (copies.get("default/cfg-mirror") or {"metadata": {}})
                         ["metadata"].get("uid") not in (None, first_uid))
        await client.delete(CONFIGMAPS, "default", "cfg")
        await eventually(lambda: copies.keys() == [])
        queue.shut_down()
        await asyncio.wait_for(workers, 1)
    with pytest.raises(NotFound):
        await client.get(CONFIGMAPS, "default", "cfg-mirror")
