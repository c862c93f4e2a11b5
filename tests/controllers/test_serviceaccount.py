"""Every namespace gets a ``default`` ServiceAccount, and gets it back if it is deleted."""

from __future__ import annotations

import asyncio

from ctlharness import eventually

from controlplane.client import NAMESPACES, SERVICEACCOUNTS, ApiClient, NotFound
from controlplane.controllers.serviceaccount import ServiceAccountController


async def test_default_service_account_everywhere(client: ApiClient) -> None:
    task = asyncio.create_task(ServiceAccountController(client).run())
    try:
        await client.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": "team"}})

        async def present(namespace: str) -> bool:
            try:
                await client.get(SERVICEACCOUNTS, namespace, "default")
                return True
            except NotFound:
                return False

        for namespace in ("default", "kube-system", "team"):
            await eventually(lambda: present(namespace))
        await client.delete(SERVICEACCOUNTS, "team", "default")
        await eventually(lambda: present("team"))
        accounts = await client.list(SERVICEACCOUNTS, "team")
        assert [a["metadata"]["name"] for a in accounts.items] == ["default"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
