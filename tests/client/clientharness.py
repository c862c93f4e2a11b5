"""What the client tests share: objects to write, and waiting for a condition (the in-process
servers are ``controlplane.localcluster.InProcessCluster``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from controlplane.client import FuncHandler, Informer, key_of

Obj = dict[str, Any]


def dead_url() -> str:
    """The URL of a port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"https://127.0.0.1:{port}"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def configmap(name: str, data: dict[str, str] | None = None, *,
              labels: dict[str, str] | None = None, namespace: str = "default") -> Obj:
    meta: Obj = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {}}


def pod(name: str, namespace: str = "default") -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        await asyncio.sleep(0.01)


def recorder() -> tuple[list[tuple[str, str]], FuncHandler]:
    """A handler that records ("add"|"update"|"delete", key) in order."""
    seen: list[tuple[str, str]] = []
    return seen, FuncHandler(on_add=lambda o: seen.append(("add", key_of(o))),
                             on_update=lambda _, o: seen.append(("update", key_of(o))),
                             on_delete=lambda o: seen.append(("delete", key_of(o))))


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[Informer]:
    """Run ``informer`` for the block, synced on entry, cancelled on exit."""
    task = asyncio.get_running_loop().create_task(informer.run(), name="test informer")
    try:
        await asyncio.wait_for(informer.synced.wait(), 5)
        yield informer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
