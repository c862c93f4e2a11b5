"""Every namespace gets a ``default`` ServiceAccount, and gets it back if it is deleted."""

from __future__ import annotations

from ctlharness import eventually, running

from controlplane.client import NAMESPACES, SERVICEACCOUNTS, ApiClient, NotFound
from controlplane.controllers.serviceaccount import ServiceAccountController


async def test_default_service_account_everywhere(client: ApiClient) -> None:
    async with running(ServiceAccountController(client).run()):
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
