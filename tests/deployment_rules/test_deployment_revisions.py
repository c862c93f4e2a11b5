"""Revisions of a Deployment, pure: the pod-template-hash, which ReplicaSet is new, the
annotations it carries (revision, rollback history, desired/max replicas, change-cause) and
the revisions revisionHistoryLimit lets go (sync_test.go TestDeploymentController_
cleanupDeployment's table)."""

from __future__ import annotations

import pytest

from controlplane.controllers.deployment.constants import (
    CHANGE_CAUSE,
    DESIRED_REPLICAS,
    LAST_APPLIED,
    MAX_REPLICAS,
    MAX_REVISION_HISTORY_CHARS,
    POD_TEMPLATE_HASH,
    REVISION,
    REVISION_HISTORY,
)
from controlplane.controllers.deployment.revisions import (
    build_new_replica_set,
    equal_ignore_hash,
    find_new,
    find_old,
    fnv32a,
    history_to_clean,
    max_revision,
    new_rs_annotations,
    replicas_annotations,
    safe_encode,
    template_hash,
)


def template(image: str = "busybox:1.36", **labels: str) -> dict:
    return {"metadata": {"labels": {"app": "web", **labels}},
            "spec": {"containers": [{"name": "main", "image": image}]}}


def deployment(image: str = "busybox:1.36", *, replicas: int = 3,
               annotations: dict | None = None, limit: int | None = 10) -> dict:
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": "default", "uid": "d-uid",
                      "annotations": annotations or {}},
         "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                  "template": template(image),
                  "strategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}
    if limit is not None:
        d["spec"]["revisionHistoryLimit"] = limit
    return d


def rs(name: str, *, revision: int | None = None, replicas: int = 0, status_replicas: int = 0,
       created: str = "2024-01-01T00:00:00Z", image: str = "busybox:1.36", uid: str = "",
       deleting: bool = False, generation: int = 1, observed: int = 1) -> dict:
    annotations = {} if revision is None else {REVISION: str(revision)}
    meta = {"name": name, "uid": uid or name, "creationTimestamp": created,
            "annotations": annotations, "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-02T00:00:00Z"
    return {"metadata": meta,
            "spec": {"replicas": replicas, "template": template(image, **{POD_TEMPLATE_HASH: "x"})},
            "status": {"replicas": status_replicas, "observedGeneration": observed}}


def test_fnv32a_vectors() -> None:
    assert fnv32a(b"") == 0x811C9DC5
    assert fnv32a(b"a") == 0xE40C292C
    assert fnv32a(b"foobar") == 0xBF9CF968


def test_safe_encode_maps_digits_into_the_safe_alphabet() -> None:
    assert safe_encode("0123456789") == "456789bcdf"  # as in "nginx-66b6c48dd5"
    assert safe_encode(str(2**32 - 1)).isalnum()


def test_template_hash_is_stable_and_ignores_its_own_label_and_empty_values() -> None:
    t = template()
    h = template_hash(t)
    assert h == template_hash(template())
    assert 1 <= len(h) <= 10 and set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert template_hash(template(**{POD_TEMPLATE_HASH: h})) == h
    assert template_hash({**t, "spec": {**t["spec"], "volumes": []}}) == h
    assert template_hash(template("busybox:1.37")) != h
    # collisionCount: absent, 0 and 1 are three different names
    assert len({h, template_hash(t, 0), template_hash(t, 1)}) == 3


def test_equal_ignore_hash() -> None:
    assert equal_ignore_hash(template(), template(**{POD_TEMPLATE_HASH: "abc"}))
    assert equal_ignore_hash(template(), {**template(), "metadata": {
        "labels": {"app": "web"}, "annotations": {}, "creationTimestamp": None}})
    assert not equal_ignore_hash(template(), template(tier="db"))
    assert not equal_ignore_hash(template(), template("other"))


def test_find_new_and_old() -> None:
    old = rs("web-a", image="busybox:1.35", created="2024-01-01T00:00:00Z")
    twin_late = rs("web-c", created="2024-01-03T00:00:00Z")
    twin_early = rs("web-b", created="2024-01-02T00:00:00Z")
    d = deployment()
    assert find_new(d, [old, twin_late, twin_early]) is twin_early  # the oldest match
    assert [r["metadata"]["name"] for r in find_old(twin_early, [twin_late, old, twin_early])] \
        == ["web-a", "web-c"]
    assert find_new(deployment("unknown"), [old]) is None
    assert max_revision([rs("a", revision=3), rs("b"), rs("c", revision=7)]) == 7
    assert max_revision([]) == 0


def test_build_new_replica_set() -> None:
    d = deployment(annotations={CHANGE_CAUSE: "kubectl set image", LAST_APPLIED: "{}",
                                REVISION: "4"})
    d["spec"]["minReadySeconds"] = 5
    new = build_new_replica_set(d, pod_template_hash="5d4f", replicas=2, revision=5,
                                max_surge=1)
    meta, spec = new["metadata"], new["spec"]
    assert meta["name"] == "web-5d4f"
    assert meta["labels"] == {"app": "web", POD_TEMPLATE_HASH: "5d4f"}
    assert spec["selector"] == {"matchLabels": {"app": "web", POD_TEMPLATE_HASH: "5d4f"}}
    assert spec["template"]["metadata"]["labels"][POD_TEMPLATE_HASH] == "5d4f"
    assert spec["replicas"] == 2 and spec["minReadySeconds"] == 5
    assert meta["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web", "uid": "d-uid", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert meta["annotations"] == {CHANGE_CAUSE: "kubectl set image", REVISION: "5",
                                   DESIRED_REPLICAS: "3", MAX_REPLICAS: "4"}
    assert "pod-template-hash" not in d["spec"]["template"]["metadata"]["labels"]  # untouched


def test_rollback_gives_the_old_replica_set_the_next_revision_and_keeps_its_history() -> None:
    d = deployment(annotations={CHANGE_CAUSE: "undo"})
    got = new_rs_annotations(d, {REVISION: "1"}, 3, exists=True)
    assert got == {REVISION: "3", REVISION_HISTORY: "1", CHANGE_CAUSE: "undo"}
    again = new_rs_annotations(d, {**got, REVISION: "3"}, 5, exists=True)
    assert again[REVISION] == "5" and again[REVISION_HISTORY] == "1,3"
    assert new_rs_annotations(d, again, 5, exists=True) is None  # nothing to change
    assert new_rs_annotations(d, again, 4, exists=True) is None  # never lowered
    # a first revision has no history
    assert REVISION_HISTORY not in new_rs_annotations(d, {}, 1, exists=True)


def test_revision_history_is_bounded() -> None:
    long = ",".join(str(n) for n in range(1, 600))
    assert len(long) > MAX_REVISION_HISTORY_CHARS - 10
    got = new_rs_annotations(deployment(), {REVISION: "1000", REVISION_HISTORY: long}, 1001,
                             exists=True)
    history = got[REVISION_HISTORY]
    assert len(history) <= MAX_REVISION_HISTORY_CHARS and history.endswith(",1000")
    assert not history.startswith("1,")


def test_replicas_annotations() -> None:
    assert replicas_annotations({DESIRED_REPLICAS: "3", MAX_REPLICAS: "4"}, 3, 4) is None
    assert replicas_annotations({"x": "y"}, 5, 7) == {"x": "y", DESIRED_REPLICAS: "5",
                                                      MAX_REPLICAS: "7"}


# old ReplicaSets as (spec replicas, status replicas), limit -> deletions
CLEANUP = [
    ("surplus of empty ones", [(0, 0), (0, 0), (0, 0)], 1, ["foo-1", "foo-2"]),
    ("only empty ones go", [(0, 0), (0, 1), (1, 0), (1, 1)], 0, ["foo-1"]),
    ("limit 0", [(0, 0), (0, 0)], 0, ["foo-1", "foo-2"]),
    ("none empty", [(1, 1), (1, 1)], 0, []),
    ("unlimited", [(0, 0), (0, 0), (0, 0)], 2**31 - 1, []),
    ("within the limit", [(0, 0), (0, 0)], 2, []),
]


@pytest.mark.parametrize("name, sizes, limit, expect", CLEANUP, ids=[c[0] for c in CLEANUP])
def test_history_to_clean(name: str, sizes: list[tuple[int, int]], limit: int,
                          expect: list[str]) -> None:
    old = [rs(f"foo-{i + 1}", revision=i + 1, replicas=spec, status_replicas=status,
              created=f"2024-01-0{i + 1}T00:00:00Z") for i, (spec, status) in enumerate(sizes)]
    doomed = history_to_clean(deployment(limit=limit), list(reversed(old)))
    assert [r["metadata"]["name"] for r in doomed] == expect


def test_history_to_clean_skips_deleting_and_unobserved_sets() -> None:
    deleting = rs("foo-1", revision=1, deleting=True)
    unobserved = rs("foo-2", revision=2, generation=3, observed=2)
    assert history_to_clean(deployment(limit=0), [deleting]) == []
    assert history_to_clean(deployment(limit=0), [unobserved, deleting]) == []
    assert history_to_clean(deployment(limit=None), [rs("foo-3", revision=3)]) == []
