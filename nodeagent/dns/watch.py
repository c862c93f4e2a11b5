"""Feeding a ``DnsCache`` from informers: Services and Endpoints of every namespace, and Pods
when the resolver verifies pod names (``pods=verified``; a cluster-wide pod watch per node is
costly, so it is off by default)."""

from __future__ import annotations

import asyncio

from controlplane.client import (
    ENDPOINTS,
    PODS,
    SERVICES,
    FuncHandler,
    Informer,
    InformerFactory,
)

from .cache import DnsCache


def attach(cache: DnsCache, services: Informer, endpoints: Informer,
           pods: Informer | None = None) -> None:
    """Keep ``cache`` current from these informers (objects already cached arrive as adds)."""
    services.add_handler(FuncHandler(cache.update_service, lambda _old, new:
                                     cache.update_service(new), cache.delete_service))
    endpoints.add_handler(FuncHandler(cache.update_endpoints, lambda _old, new:
                                      cache.update_endpoints(new), cache.delete_endpoints))
    if pods is not None:
        pods.add_handler(FuncHandler(cache.update_pod, lambda _old, new: cache.update_pod(new),
                                     cache.delete_pod))


def informers(factory: InformerFactory, *, pods: bool = False
              ) -> tuple[Informer, Informer, Informer | None]:
    """The cluster-wide Service, Endpoints (and Pod) informers of ``factory``."""
    return (factory.informer(SERVICES), factory.informer(ENDPOINTS),
            factory.informer(PODS) if pods else None)


async def run(factory: InformerFactory, cache: DnsCache, *, pods: bool = False,
              synced: asyncio.Event | None = None) -> None:
    """Watch into ``cache`` until cancelled; ``synced`` is set once every informer listed."""
    found = informers(factory, pods=pods)
    attach(cache, *found)
    running = [i for i in found if i is not None]
    tasks = [asyncio.create_task(i.run(), name=f"dns {i.res.plural} informer") for i in running]
    try:
        if synced is not None:
            await asyncio.gather(*(i.synced.wait() for i in running))
            synced.set()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
