"""The scheduler's decision core against the tables in testdata/: filters.yaml and scores.yaml
(cluster + pod -> node, reasons, message, scores), requests.yaml (pod spec -> requests),
nodes.yaml (NodeInfo built and changed -> its fields), percentage.yaml (percentageOfNodesToScore).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controlplane.controllers.scheduling import NodeInfo, PodInfo, num_feasible_nodes_to_find
from sched_tables import check_case, load, make_node, make_pod

FILTER_CASES = load("filters.yaml")
SCORE_CASES = load("scores.yaml")
REQUEST_CASES = load("requests.yaml")
NODE_CASES = load("nodes.yaml")
PERCENTAGE = load("percentage.yaml")


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


@pytest.mark.parametrize("case", FILTER_CASES, ids=_ids(FILTER_CASES))
def test_filters(case: dict[str, Any]) -> None:
    check_case(case)


@pytest.mark.parametrize("case", SCORE_CASES, ids=_ids(SCORE_CASES))
def test_scores(case: dict[str, Any]) -> None:
    check_case(case)


@pytest.mark.parametrize("case", PERCENTAGE["schedules"], ids=_ids(PERCENTAGE["schedules"]))
def test_percentage_of_nodes_to_score(case: dict[str, Any]) -> None:
    check_case(case)


@pytest.mark.parametrize("percentage, nodes, enough", PERCENTAGE["feasible_nodes_to_find"])
def test_num_feasible_nodes_to_find(percentage: int, nodes: int, enough: int) -> None:
    assert num_feasible_nodes_to_find(percentage, nodes) == enough


@pytest.mark.parametrize("percentage", [-1, 101])
def test_percentage_out_of_range_is_refused(percentage: int) -> None:
    with pytest.raises(ValueError, match="percentageOfNodesToScore"):
        num_feasible_nodes_to_find(percentage, 1000)


@pytest.mark.parametrize("case", REQUEST_CASES, ids=_ids(REQUEST_CASES))
def test_pod_requests(case: dict[str, Any]) -> None:
    info = PodInfo({"metadata": {"name": "p"}, "spec": case["spec"]})
    got = [info.milli_cpu, info.memory, info.ephemeral_storage, info.non_zero_milli_cpu,
           info.non_zero_memory]
    assert got == case["expect"]


def _comparable(name: str, value: Any) -> Any:
    """NodeInfo fields as the YAML writes them: pod maps as sorted keys, port counts as sorted
    [*key, count] rows, tuples as lists."""
    if name in ("pods", "pods_with_required_anti_affinity"):
        return sorted(value)
    if name in ("used_ports", "used_port_numbers"):
        return sorted([*key, count] for key, count in value.items())
    if isinstance(value, tuple):
        return [list(item) for item in value]
    return value


@pytest.mark.parametrize("case", NODE_CASES, ids=_ids(NODE_CASES))
def test_node_info(case: dict[str, Any]) -> None:
    node = make_node(case["node"]["name"], case["node"])
    if case.get("drop_allocatable"):
        del node["status"]["allocatable"]
    info = NodeInfo(node, [make_pod(p) for p in case.get("pods") or ()])
    returns = []
    for op in case.get("ops") or ():
        if "add" in op:
            returns.append(info.add_pod(make_pod(op["add"])))
        else:
            returns.append(info.remove_pod(make_pod(op["remove"])))
    if "returns" in case:
        assert returns == case["returns"]
    for name, wanted in case["expect"].items():
        assert _comparable(name, getattr(info, name)) == wanted, name


def test_a_wrong_expectation_fails() -> None:
    """The table runner compares for real: a case with a changed expectation must fail."""
    case = copy.deepcopy(SCORE_CASES[0])
    case["expect"]["scores"] = {"n1": 344, "n2": 381}
    with pytest.raises(AssertionError, match="scores"):
        check_case(case)
