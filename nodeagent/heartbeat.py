"""The node heartbeat, shared by the real agent and the hollow fleet: the node's Lease in
``kube-node-lease``, renewed as the kubelet does (every 10 s, valid 40 s), and the Ready
condition posted again after an outage.

The node lifecycle controller reads only the Lease's ``renewTime``: a node whose Lease is older
than its grace period goes Ready=Unknown and gets tainted. Posting conditions is what brings it
back: the controller never sets Ready=True itself.
"""

from __future__ import annotations

import time
from typing import Any

from controlplane.client import LEASES, NODES, ApiClient, NotFound
from controlplane.client.timestamps import format_micro_time, format_time

LEASE_NAMESPACE = "kube-node-lease"
#: The kubelet renews its Lease every 10 s with a 40 s duration.
LEASE_SECONDS = 40
RENEW_SECONDS = 10.0

Obj = dict[str, Any]


def now_rfc3339() -> str:
    return format_time(time.time())


def now_micro() -> str:
    """MicroTime, as Lease's renewTime is typed."""
    return format_micro_time(time.time())


async def renew_lease(client: ApiClient, node_name: str, *,
                      duration: int = LEASE_SECONDS) -> None:
    """Renew (or first take) the node's Lease."""
    spec = {"holderIdentity": node_name, "leaseDurationSeconds": duration,
            "renewTime": now_micro()}
    try:
        await client.patch(LEASES, LEASE_NAMESPACE, node_name, {"spec": spec})
    except NotFound:
        await client.create(LEASES, LEASE_NAMESPACE, {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node_name, "namespace": LEASE_NAMESPACE}, "spec": spec})


async def post_node_status(client: ApiClient, node_name: str, status: Obj) -> None:
    """Patch the node's status (conditions merged by type, as the kubelet's patch does)."""
    await client.patch(NODES, "", node_name, {"status": status}, patch_type="strategic",
                       subresource="status")
