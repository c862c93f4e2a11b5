"""Server-side apply and managedFields: the scenarios in testdata/apply/*.yaml, plus properties.

The YAML header of each file explains its step language; ``_Scenario`` runs one scenario.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.api.apply import ApplyConflict, apply, track_update
from controlplane.api.patch import PatchError, merge_patch

TESTDATA = Path(__file__).parent / "testdata" / "apply"


def _stamp(step: int) -> str:
    return f"2024-01-01T00:00:{step:02d}Z"


def _api_version(group: str) -> str:
    return f"{group}/v1" if group else "v1"


def _without_managed(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def _managed(obj: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for entry in obj["metadata"].get("managedFields", []):
        row = {"manager": entry["manager"], "operation": entry["operation"],
               "fields": entry["fieldsV1"]}
        if entry.get("subresource"):
            row["subresource"] = entry["subresource"]
        out.append(row)
    return out


class _Scenario:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.group = spec.get("group", "")
        self.kind = spec["kind"]
        self.api_version = _api_version(self.group)
        self.obj: dict[str, Any] | None = None

    def run(self, i: int, step: dict[str, Any]) -> None:
        before = copy.deepcopy(step)
        try:
            result = self._write(i, step)
        except ApplyConflict as exc:
            assert "conflicts" in step or "message" in step, f"unexpected conflict: {exc}"
            if "conflicts" in step:
                assert exc.conflicts == [tuple(c) for c in step["conflicts"]]
            if "message" in step:
                assert str(exc) == step["message"]
            result = None
        except PatchError as exc:
            assert "error" in step, f"unexpected error: {exc}"
            assert step["error"] in str(exc)
            assert exc.code == step["code"]
            result = None
        else:
            assert not {"conflicts", "message", "error"} & step.keys(), "the write succeeded"
        assert step == before, "a write changed its input"
        if result is not None:
            self.obj = result
        if "object" in step:
            assert self.obj is not None and _without_managed(self.obj) == step["object"]
        if "managed" in step:
            assert self.obj is not None and _managed(self.obj) == step["managed"]

    def _write(self, i: int, step: dict[str, Any]) -> dict[str, Any]:
        now = _stamp(i)
        if "apply" in step:
            spec = step["apply"]
            return apply(self.obj, spec["config"], manager=spec["manager"],
                         force=spec.get("force", False), group=self.group, kind=self.kind,
                         api_version=self.api_version, now=now)
        if "update" in step:
            spec = step["update"]
            assert self.obj is not None
            new = (merge_patch(self.obj, spec["patch"]) if "patch" in spec
                   else copy.deepcopy(spec["object"]))
            return track_update(self.obj, new, manager=spec["manager"],
                                api_version=self.api_version, now=now,
                                subresource=spec.get("subresource", ""))
        if "create" in step:
            spec = step["create"]
            return track_update(None, copy.deepcopy(spec["object"]), manager=spec["manager"],
                                api_version=self.api_version, now=now)
        return copy.deepcopy(step["store"]["object"])


def _scenarios() -> list[Any]:
    out = []
    for path in sorted(TESTDATA.glob("*.yaml")):
        for spec in yaml.safe_load(path.read_text())["scenarios"]:
            out.append(pytest.param(spec, id=f"{path.stem}: {spec['name']}"))
    return out


@pytest.mark.parametrize("spec", _scenarios())
def test_apply_scenario(spec: dict[str, Any]) -> None:
    scenario = _Scenario(spec)
    for i, step in enumerate(spec["steps"]):
        scenario.run(i, step)


# ------------------------------------------------------------------ track_update details

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}}


def _created() -> dict[str, Any]:
    return track_update(None, copy.deepcopy(CM), manager="creator", api_version="v1",
                        now=_stamp(0))


def test_track_update_leaves_inputs_alone_and_shares_the_rest() -> None:
    old = _created()
    new = merge_patch(old, {"data": {"b": "2"}})
    old_copy, new_copy = copy.deepcopy(old), copy.deepcopy(new)
    result = track_update(old, new, manager="editor", api_version="v1", now=_stamp(1))
    assert (old, new) == (old_copy, new_copy)
    assert result["data"] is new["data"]
    assert [e["manager"] for e in result["metadata"]["managedFields"]] == ["creator", "editor"]


def test_managed_fields_edited_by_the_client_are_kept() -> None:
    old = _created()
    new = copy.deepcopy(old)
    new["metadata"]["managedFields"][0]["manager"] = "renamed"
    result = track_update(old, new, manager="editor", api_version="v1", now=_stamp(1))
    assert [e["manager"] for e in result["metadata"]["managedFields"]] == ["renamed"]


def test_malformed_or_empty_managed_fields_keep_the_old_ones() -> None:
    old = _created()
    for bad in ([], [{"manager": "x", "operation": "Steal"}],
                [{"manager": "x", "operation": "Update", "fieldsV1": {"bad": {}}}]):
        new = copy.deepcopy(old)
        new["metadata"]["managedFields"] = bad
        result = track_update(old, new, manager="editor", api_version="v1", now=_stamp(1))
        assert result["metadata"]["managedFields"] == old["metadata"]["managedFields"]


def test_a_single_empty_entry_resets_managed_fields() -> None:
    old = _created()
    new = merge_patch(old, {"data": {"a": "2"}})
    new["metadata"]["managedFields"] = [{}]
    result = track_update(old, new, manager="editor", api_version="v1", now=_stamp(1))
    assert "managedFields" not in result["metadata"]


def test_subresource_writes_ignore_managed_fields_in_the_body() -> None:
    old = _created()
    new = merge_patch(old, {"data": {"a": "2"}})
    new["metadata"]["managedFields"] = []
    result = track_update(old, new, manager="kubelet", api_version="v1", now=_stamp(1),
                          subresource="status")
    assert _managed(result) == [
        {"manager": "creator", "operation": "Update", "fields": {"f:data": {}}},
        {"manager": "kubelet", "operation": "Update", "subresource": "status",
         "fields": {"f:data": {"f:a": {}}}},
    ]


def test_ignored_fields_are_not_tracked() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}}
    result = track_update(None, pod, manager="kubectl", api_version="v1", now=_stamp(0),
                          ignore=("status",))
    assert _managed(result)[0]["fields"] == {"f:spec": {"f:nodeName": {}}}


def test_an_unchanged_object_keeps_its_entries_and_times() -> None:
    old = _created()
    result = track_update(old, copy.deepcopy(old), manager="editor", api_version="v1",
                          now=_stamp(5))
    assert result["metadata"]["managedFields"] == old["metadata"]["managedFields"]


def test_an_update_moves_the_time_of_its_manager_only() -> None:
    old = _created()
    other = track_update(old, merge_patch(old, {"data": {"b": "1"}}), manager="editor",
                         api_version="v1", now=_stamp(1))
    again = track_update(other, merge_patch(other, {"data": {"c": "1"}}), manager="editor",
                         api_version="v1", now=_stamp(2))
    times = {e["manager"]: e["time"] for e in again["metadata"]["managedFields"]}
    assert times == {"creator": _stamp(0), "editor": _stamp(2)}


def test_track_update_is_cheap() -> None:
    """Every write goes through track_update; 2,000 small ConfigMap writes take well under a
    second (a few tens of milliseconds on a laptop)."""
    old = _created()
    started = time.perf_counter()
    for i in range(2000):
        new = {**old, "data": {"a": str(i)}}
        track_update(old, new, manager="bench", api_version="v1", now=_stamp(1))
    assert time.perf_counter() - started < 1.0


# ------------------------------------------------------------------ apply details


def _deployment(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": spec}


def _apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str, step: int,
           force: bool = False) -> dict[str, Any]:
    return apply(live, config, manager=manager, force=force, group="apps", kind="Deployment",
                 api_version="apps/v1", now=_stamp(step))


def test_conflicts_with_several_managers_name_them_all() -> None:
    obj = _apply(None, _deployment(replicas=1, paused=False), "a", 0)
    obj = _apply(obj, _deployment(minReadySeconds=5), "b", 1)
    with pytest.raises(ApplyConflict) as raised:
        _apply(obj, _deployment(replicas=2, paused=True, minReadySeconds=6), "c", 2)
    conflict = raised.value
    assert conflict.conflicts == [("a", ".spec.replicas"), ("a", ".spec.paused"),
                                  ("b", ".spec.minReadySeconds")]
    assert str(conflict) == ('Apply failed with 3 conflicts: conflicts with "a":\n'
                             "- .spec.replicas\n- .spec.paused\n"
                             'conflicts with "b":\n- .spec.minReadySeconds')
    status = conflict.api_error().status()
    assert (status["code"], status["reason"]) == (409, "Conflict")
    assert status["details"]["causes"][2] == {
        "reason": "FieldManagerConflict", "message": 'conflict with "b"',
        "field": ".spec.minReadySeconds"}


def test_a_no_op_apply_keeps_the_entry_time() -> None:
    first = _apply(None, _deployment(replicas=1), "a", 0)
    again = _apply(first, _deployment(replicas=1), "a", 1)
    assert again == first


def test_apply_leaves_inputs_alone() -> None:
    live = _apply(None, _deployment(replicas=1, template={"spec": {"containers": [
        {"name": "a", "image": "a"}]}}), "a", 0)
    config = _deployment(template={"spec": {"containers": [{"name": "b", "image": "b"}]}})
    live_copy, config_copy = copy.deepcopy(live), copy.deepcopy(config)
    result = _apply(live, config, "b", 1)
    result["spec"]["template"]["spec"]["containers"][1]["image"] = "changed"
    assert (live, config) == (live_copy, config_copy)


_values = st.none() | st.integers(0, 3) | st.sampled_from(["x", "y"])
_configs = st.fixed_dictionaries({}, optional={
    "replicas": st.integers(0, 3),
    "paused": st.booleans(),
    "template": st.fixed_dictionaries({}, optional={
        "metadata": st.fixed_dictionaries({"labels": st.dictionaries(
            st.sampled_from("abc"), st.sampled_from(["1", "2"]), max_size=2)}),
        "spec": st.fixed_dictionaries({"containers": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c"])},
                                  optional={"image": _values}),
            max_size=3, unique_by=lambda c: c["name"])}),
    }),
})


@settings(max_examples=150, deadline=None)
@given(first=_configs, second=_configs, manager=st.sampled_from(["a", "b"]))
def test_forced_apply_then_reapply_is_a_fixed_point(first: dict[str, Any],
                                                    second: dict[str, Any],
                                                    manager: str) -> None:
    """After a forced apply, applying the same configuration again changes nothing and
    conflicts with nobody; and the applier owns exactly what it applied."""
    obj = _apply(None, _deployment(**first), "a", 0)
    obj = _apply(obj, _deployment(**second), manager, 1, force=True)
    assert _apply(obj, _deployment(**second), manager, 2) == obj
    mine = [e for e in obj["metadata"]["managedFields"]
            if e["manager"] == manager and e["operation"] == "Apply"]
    expected = apply(None, _deployment(**second), manager=manager, force=False, group="apps",
                     kind="Deployment", api_version="apps/v1", now=_stamp(1))
    theirs = expected["metadata"].get("managedFields", [])
    assert [e["fieldsV1"] for e in mine] == [e["fieldsV1"] for e in theirs]
