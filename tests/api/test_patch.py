"""Patch semantics: the cases in testdata/patch/*.yaml, plus properties over generated patches.

Each YAML file names the patch type and lists cases (``name``, ``doc``, ``patch``, then
``expected`` or ``error`` + ``code``); every case also checks that neither input was changed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.api import patchmeta
from controlplane.api.patch import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

TESTDATA = Path(__file__).parent / "testdata" / "patch"


def _run(kind: str, case: dict[str, Any]) -> Any:
    if kind == "json":
        return json_patch(case["doc"], case["patch"])
    if kind == "merge":
        return merge_patch(case["doc"], case["patch"])
    return strategic_merge_patch(case["doc"], case["patch"], case.get("group", ""),
                                 case["kind"])


def _cases() -> list[Any]:
    out = []
    for path in sorted(TESTDATA.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        for case in data["cases"]:
            out.append(pytest.param(data["type"], case, id=f"{path.stem}: {case['name']}"))
    return out


@pytest.mark.parametrize(("kind", "case"), _cases())
def test_patch_case(kind: str, case: dict[str, Any]) -> None:
    before = copy.deepcopy(case)
    if "error" in case:
        with pytest.raises(PatchError) as raised:
            _run(kind, case)
        assert case["error"] in str(raised.value)
        assert raised.value.code == case["code"]
    else:
        assert _run(kind, case) == case["expected"]
    assert case == before, "a patch function changed its input"


def test_every_patch_type_has_cases() -> None:
    types = {yaml.safe_load(p.read_text())["type"] for p in TESTDATA.glob("*.yaml")}
    assert types == {"json", "merge", "strategic"}


def test_patch_error_maps_to_a_status() -> None:
    with pytest.raises(PatchError) as raised:
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    status = raised.value.api_error().status()
    assert (status["code"], status["reason"]) == (422, "Invalid")
    with pytest.raises(PatchError) as raised:
        merge_patch({}, [])
    status = raised.value.api_error().status()
    assert (status["code"], status["reason"]) == (400, "BadRequest")


def test_results_share_nothing_with_the_inputs() -> None:
    doc = {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}]}}
    patch = {"spec": {"containers": [{"name": "b", "env": [{"name": "Y", "value": "2"}]}]}}
    for result in (strategic_merge_patch(doc, patch, "", "Pod"), merge_patch(doc, patch),
                   json_patch(doc, [{"op": "add", "path": "/spec/x", "value": patch}])):
        for container in result["spec"]["containers"]:
            container["env"].append({"name": "Z"})
    assert doc["spec"]["containers"][0]["env"] == [{"name": "X", "value": "1"}]
    assert patch["spec"]["containers"][0]["env"] == [{"name": "Y", "value": "2"}]


@pytest.mark.parametrize(("group", "kind", "path", "strategy"), [
    ("", "Pod", ("spec", "containers"), "name"),
    ("", "Pod", ("spec", "containers", "ports"), "containerPort"),
    ("", "Pod", ("spec", "initContainers", "volumeMounts"), "mountPath"),
    ("", "Pod", ("spec", "tolerations"), None),
    ("", "Pod", ("status", "containerStatuses"), None),
    ("", "Pod", ("status", "hostIPs"), "ip"),
    ("", "Pod", ("metadata", "finalizers"), "merge"),
    ("", "Pod", ("metadata", "ownerReferences"), "uid"),
    ("apps", "Deployment", ("spec", "template", "spec", "containers", "env"), "name"),
    ("apps", "ReplicaSet", ("spec", "template", "spec", "volumes"), "name"),
    ("apps", "Deployment", ("status", "conditions"), "type"),
    ("", "Service", ("spec", "ports"), "port"),
    ("", "Node", ("spec", "taints"), None),
    ("", "Node", ("spec", "podCIDRs"), "merge"),
    ("", "Node", ("status", "addresses"), "type"),
    ("", "ServiceAccount", ("secrets",), "name"),
    ("", "Endpoints", ("subsets",), None),
    ("example.com", "Widget", ("spec", "things"), None),
])
def test_patch_strategies(group: str, kind: str, path: tuple[str, ...],
                          strategy: str | None) -> None:
    assert patchmeta.patch_strategy(group, kind, path) == strategy


def test_apply_list_types() -> None:
    ports = patchmeta.list_type("", "Service", ("spec", "ports"))
    assert (ports.list_type, ports.map_keys) == ("map", ("port", "protocol"))
    container_ports = patchmeta.list_type("", "Pod", ("spec", "containers", "ports"))
    assert container_ports.map_keys == ("containerPort", "protocol")
    assert patchmeta.list_type("", "Pod", ("metadata", "finalizers")).list_type == "set"
    assert patchmeta.list_type("", "Pod", ("status", "hostIPs")).list_type == "atomic"
    assert patchmeta.node("apps", "Deployment", ("spec", "selector")).atomic


# ------------------------------------------------------------------ properties

_keys = st.sampled_from(["a", "b", "c", "spec", "data"])
_scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.text("xyz", max_size=3)
_json = st.recursive(_scalars, lambda children: st.lists(children, max_size=3)
                     | st.dictionaries(_keys, children, max_size=3), max_leaves=12)
_objects = st.dictionaries(_keys, _json, max_size=4)


@settings(max_examples=200, deadline=None)
@given(doc=_objects, patch=_objects)
def test_merge_patch_never_mutates_and_is_idempotent(doc: dict[str, Any],
                                                     patch: dict[str, Any]) -> None:
    doc_before, patch_before = copy.deepcopy(doc), copy.deepcopy(patch)
    once = merge_patch(doc, patch)
    assert (doc, patch) == (doc_before, patch_before)
    assert merge_patch(once, patch) == once


@settings(max_examples=200, deadline=None)
@given(doc=_objects, patch=_objects)
def test_strategic_patch_without_lists_or_directives_is_a_merge_patch(
        doc: dict[str, Any], patch: dict[str, Any]) -> None:
    """On a kind whose fields all merge as plain maps, a strategic merge patch is RFC 7386."""
    assert strategic_merge_patch(doc, patch, "", "ConfigMap") == merge_patch(doc, patch)


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.text("abc~/", min_size=1, max_size=4), _json, min_size=1),
       data=st.data())
def test_json_patch_replace_sequence(doc: dict[str, Any], data: st.DataObject) -> None:
    """Replacing existing members, keys escaped per RFC 6901, sets exactly those members."""
    keys = data.draw(st.lists(st.sampled_from(sorted(doc)), max_size=5))
    values = data.draw(st.lists(_json, min_size=len(keys), max_size=len(keys)))
    ops = [{"op": "replace", "value": v,
            "path": "/" + k.replace("~", "~0").replace("/", "~1")} for k, v in zip(keys, values)]
    expected = dict(doc)
    expected.update(zip(keys, values))
    assert json_patch(doc, ops) == expected
