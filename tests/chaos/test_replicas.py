"""Comparing replicas' digests: the judgement of one round, and the poll against two in-process
API servers on one store (their digests agree by construction) and a dead address."""

from __future__ import annotations

import pytest

from chaos.replicas import compare_replicas, judge
from controlplane.localcluster import InProcessCluster
from raftstore.localprocess import free_ports


@pytest.mark.parametrize(("samples", "verdict"), [
    ({"a": (5, "x"), "b": (5, "x"), "c": (5, "x")}, True),
    ({"a": (5, "x"), "b": (5, "y"), "c": (5, "x")}, False),
    ({"a": (5, "x"), "b": (6, "y"), "c": (5, "x")}, None),  # not at one revision yet
    ({"a": (5, "x"), "b": None}, None),  # one did not answer
    ({}, None),
])
def test_judge(samples: dict, verdict: bool | None) -> None:
    assert judge(samples) is verdict


async def test_servers_of_one_store_agree_and_a_dead_one_is_unknown(cluster: InProcessCluster
                                                                     ) -> None:
    second = await cluster.start_server()
    pki = cluster.pki
    context = pki.client_ssl_context(pki.admin_cert_pem, pki.admin_key_pem)
    check = await compare_replicas([cluster.url, second], context, timeout=5.0)
    assert check.equal is True
    assert len({s for s in check.samples.values()}) == 1

    dead = f"https://127.0.0.1:{free_ports(1)[0]}"
    check = await compare_replicas([cluster.url, dead], context, timeout=0.5)
    assert check.equal is None and check.samples[dead] is None
