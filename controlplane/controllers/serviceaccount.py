"""Every namespace gets a ServiceAccount named ``default``, as Kubernetes' service account
controller makes one: Pods that name no service account run as it.

Handlers enqueue namespace names (a namespace added, or a ``default`` ServiceAccount deleted);
``reconcile`` creates the account if it is missing and the namespace is not terminating.
Creating is create-if-absent, so two controllers racing cannot make two.
"""

from __future__ import annotations

from ..client import (
    NAMESPACES,
    SERVICEACCOUNTS,
    AlreadyExists,
    ApiClient,
    Forbidden,
    FuncHandler,
    InformerFactory,
    NotFound,
    WorkQueue,
    run_controller,
)

DEFAULT_NAME = "default"


class ServiceAccountController:
    def __init__(self, client: ApiClient, informers: InformerFactory | None = None) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._queue = WorkQueue()
        self._namespaces = informers.informer(NAMESPACES)
        self._accounts = informers.informer(SERVICEACCOUNTS)
        self._namespaces.add_handler(FuncHandler(
            lambda ns: self._queue.add(ns["metadata"]["name"])))
        self._accounts.add_handler(FuncHandler(on_delete=self._account_deleted))

    async def run(self) -> None:
        await run_controller("serviceaccount", [self._namespaces, self._accounts],
                             self._queue, self.reconcile)

    def _account_deleted(self, account: dict) -> None:
        meta = account["metadata"]
        if meta.get("name") == DEFAULT_NAME:
            self._queue.add(meta["namespace"])

    async def reconcile(self, namespace: str) -> None:
        ns = self._namespaces.get(namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp") or \
                self._accounts.get(f"{namespace}/{DEFAULT_NAME}") is not None:
            return
        try:
            await self._client.create(SERVICEACCOUNTS, namespace, {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT_NAME, "namespace": namespace}})
        except (AlreadyExists, NotFound, Forbidden):
            return  # made meanwhile, or the namespace is going away
