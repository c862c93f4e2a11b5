"""Prometheus metrics of one API server, named as kube-apiserver names them.

Each server has its own ``CollectorRegistry`` so several servers can live in one process
(tests, ``corral up``); ``/metrics`` renders it in the text exposition format.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from raftstore.store import (
    Compare,
    Event,
    KeyValue,
    Op,
    RangeResult,
    Status,
    Store,
    TxnResult,
)

T = TypeVar("T")

#: Request latency buckets (seconds), those of kube-apiserver's request duration histogram.
REQUEST_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5,
                   6, 8, 10, 15, 20, 30, 45, 60)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ApiMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "apiserver_request", "Requests by verb, resource and HTTP code.",
            ("verb", "group", "resource", "subresource", "code"), registry=self.registry)
        self.latency = Histogram(
            "apiserver_request_duration_seconds", "Request latency by verb and resource.",
            ("verb", "group", "resource", "subresource"), buckets=REQUEST_BUCKETS,
            registry=self.registry)
        self.store_latency = Histogram(
            "corral_store_request_duration_seconds", "Latency of calls into the state store.",
            ("operation",), buckets=STORE_BUCKETS, registry=self.registry)
        self.watches = Gauge(
            "apiserver_registered_watchers", "Open watches by resource.",
            ("group", "resource"), registry=self.registry)
        self.watch_events = Counter(
            "apiserver_watch_events", "Watch events sent by resource.",
            ("group", "resource"), registry=self.registry)
        self.leader = Gauge(
            "leader_election_master_status", "1 while this process runs the control loops "
            "(leads), else 0; as kube-controller-manager reports it.", ("name",),
            registry=self.registry)
        self.inflight = Gauge(
            "apiserver_current_inflight_requests", "Requests being served by kind.",
            ("request_kind",), registry=self.registry)
        self.rejected = Counter(
            "apiserver_dropped_requests", "Requests answered 429 by the in-flight limit.",
            ("request_kind",), registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def timed_store(self, operation: str, awaitable: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.store_latency.labels(operation).observe(time.perf_counter() - start)

    @asynccontextmanager
    async def watching(self, group: str, resource: str) -> AsyncIterator[None]:
        gauge = self.watches.labels(group, resource)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()


class InstrumentedStore(Store):
    """A Store that times every call into ``corral_store_request_duration_seconds``."""

    def __init__(self, inner: Store, metrics: ApiMetrics) -> None:
        self.inner = inner
        self._timed = metrics.timed_store

    async def get(self, key: str, *, serializable: bool = False) -> tuple[KeyValue | None, int]:
        return await self._timed("get", self.inner.get(key, serializable=serializable))

    async def range(self, prefix: str, *, limit: int = 0, continue_key: str | None = None,
                    revision: int = 0, serializable: bool = False) -> RangeResult:
        return await self._timed("range", self.inner.range(
            prefix, limit=limit, continue_key=continue_key, revision=revision,
            serializable=serializable))

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op],
                  failure: Sequence[Op] = ()) -> TxnResult:
        return await self._timed("txn", self.inner.txn(compares, success, failure))

    def watch(self, prefix: str, *, start_revision: int = 0,
              progress_interval: float = 5.0) -> AsyncGenerator[Event, None]:
        return self.inner.watch(prefix, start_revision=start_revision,
                                progress_interval=progress_interval)

    async def compact(self, revision: int) -> None:
        await self.inner.compact(revision)

    async def status(self) -> Status:
        return await self.inner.status()

    async def close(self) -> None:
        await self.inner.close()
