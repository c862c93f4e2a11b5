"""The chaos workload against an in-process API server (two servers on one store): every kind
of operation is recorded, a healthy run is linearizable with nothing lost, and what each answer
means for the history (``classify``)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from chaos.history import Kind, Outcome
from chaos.linearizability import Verdict, check_history
from chaos.lostwrites import find_lost_writes
from chaos.workload import SETUP_CLIENT, Answer, Workload, WorkloadConfig, classify
from controlplane.localcluster import InProcessCluster


@pytest.mark.parametrize(("answer", "outcome"), [
    (Answer(200), Outcome.OK), (Answer(201), Outcome.OK),
    (Answer(404), Outcome.FAIL), (Answer(409), Outcome.FAIL), (Answer(422), Outcome.FAIL),
    (Answer(429), Outcome.FAIL),
    (Answer(0), Outcome.UNKNOWN), (Answer(503), Outcome.UNKNOWN), (Answer(500), Outcome.UNKNOWN),
    (Answer(504), Outcome.UNKNOWN),
])
def test_classify(answer: Answer, outcome: Outcome) -> None:
    assert classify(answer) is outcome


async def test_a_healthy_run_is_linearizable_and_loses_nothing(cluster: InProcessCluster
                                                                ) -> None:
    second = await cluster.start_server()
    pki = cluster.pki
    config = WorkloadConfig(urls=[cluster.url, second],
                            ssl=pki.client_ssl_context(pki.admin_cert_pem, pki.admin_key_pem),
                            keys=3, clients=4, think=0.0, seed=7)
    workload = Workload(config)
    await workload.setup()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(2.0, stop.set)
    history = await workload.run(stop)

    kinds = Counter((op.kind, op.outcome) for op in history if op.client != SETUP_CLIENT)
    assert kinds[(Kind.READ, Outcome.OK)] > 20
    assert kinds[(Kind.WRITE, Outcome.OK)] > 20
    assert kinds[(Kind.CAS, Outcome.OK)] > 10
    cas = Counter(op.outcome for op in history if op.kind is Kind.CAS)
    assert cas[Outcome.OK] > 0 and cas[Outcome.FAIL] > 0, cas  # 4 clients, 3 keys: races lost
    assert not [op for op in history if op.outcome is not Outcome.OK and op.kind is not Kind.CAS]
    assert {op.client for op in history} == {SETUP_CLIENT, 0, 1, 2, 3}
    writes = [op.input for op in history if op.kind is Kind.WRITE]
    assert len(writes) == len(set(writes)), "values are unique"

    assert check_history(history).verdict is Verdict.LINEARIZABLE
    final = await workload.final_values()
    assert set(final) == {"reg-0", "reg-1", "reg-2"}
    assert find_lost_writes(history, final) == []
