"""A Deployment's ReplicaSets as revisions, pure (Kubernetes' deployment_util.go in small).

In code order: the pod-template-hash (FNV-32a over the template's canonical JSON, then the
collision count, rendered as a short safe string: ``template_hash``) and template equality
that ignores it (``equal_ignore_hash``); revision numbers (``revision_of``, ``max_revision``);
which ReplicaSet is the new one and which are old (``find_new``, ``find_old``); the new
ReplicaSet to create (``build_new_replica_set``) and the annotations an existing one must carry
(``new_rs_annotations``: copied from the Deployment, the next revision, and on a rollback the
revision history; ``replicas_annotations``: desired- and max-replicas); and the old
ReplicaSets that ``revisionHistoryLimit`` lets go (``history_to_clean``).

Nothing here does I/O or reads a clock; objects are plain dicts and are never mutated.
"""

from __future__ import annotations

import copy
import json
import struct
from collections.abc import Iterable
from typing import Any

from .constants import (
    ANNOTATIONS_NOT_COPIED,
    DESIRED_REPLICAS,
    MAX_INT32,
    MAX_REPLICAS,
    MAX_REVISION_HISTORY_CHARS,
    POD_TEMPLATE_HASH,
    REVISION,
    REVISION_HISTORY,
)

Obj = dict[str, Any]

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193
#: Kubernetes' rand.SafeEncodeString alphabet: no vowels (no words), no 0/1/3 (look-alikes).
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# ---------------------------------------------------------------- the pod-template-hash


def canonical(value: Any) -> Any:
    """``value`` with every null, empty map and empty list left out, recursively: the form two
    templates are compared and hashed in (Kubernetes' semantic equality treats nil and empty
    alike)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = canonical(item)
            if item is None or item == {} or item == []:
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def fnv32a(data: bytes, h: int = _FNV32_OFFSET) -> int:
    """The 32-bit FNV-1a hash of ``data`` (continuing from ``h``, a hash of what came before)."""
    for byte in data:
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """Kubernetes' ``rand.SafeEncodeString``: each character mapped into the safe alphabet."""
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in text)


def template_hash(template: Obj | None, collision_count: int | None = None) -> str:
    """The pod-template-hash of a Deployment's template (``controller.ComputeHash``): FNV-32a
    over its canonical JSON (minus any pod-template-hash label), then, when the Deployment has
    a ``status.collisionCount``, that count as 8 little-endian bytes; the decimal sum rendered
    with ``safe_encode``. Deterministic across processes, so every controller that ever leads
    names the same template's ReplicaSet alike."""
    body = json.dumps(canonical(without_hash(template)), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()
    h = fnv32a(body)
    if collision_count is not None:
        h = fnv32a(struct.pack("<I", collision_count & 0xFFFFFFFF) + bytes(4), h)
    return safe_encode(str(h))


def without_hash(template: Obj | None) -> Obj:
    """A copy of a pod template without the pod-template-hash label."""
    template = copy.deepcopy(template or {})
    labels = (template.get("metadata") or {}).get("labels")
    if labels and POD_TEMPLATE_HASH in labels:
        del labels[POD_TEMPLATE_HASH]
    return template


def equal_ignore_hash(a: Obj | None, b: Obj | None) -> bool:
    """Kubernetes' ``EqualIgnoreHash``: the same template but for the pod-template-hash label
    (nulls and empty values alike)."""
    return canonical(without_hash(a)) == canonical(without_hash(b))


# ---------------------------------------------------------------- revisions


def revision_of(obj: Obj | None) -> int:
    """The ``deployment.kubernetes.io/revision`` of an object; 0 when absent or not a number."""
    value = (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(REVISION)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def max_revision(replica_sets: Iterable[Obj]) -> int:
    return max((revision_of(rs) for rs in replica_sets), default=0)


def creation_order(rs: Obj) -> tuple[str, str]:
    """Sort key of ``ReplicaSetsByCreationTimestamp``: oldest first, then by name."""
    meta = rs.get("metadata") or {}
    return (meta.get("creationTimestamp") or "", meta.get("name") or "")


def revision_order(rs: Obj) -> tuple[int, str, str]:
    """Sort key of ``ReplicaSetsByRevision``: lowest revision first, then the oldest."""
    return (revision_of(rs), *creation_order(rs))


# ---------------------------------------------------------------- new and old ReplicaSets


def find_new(deployment: Obj, replica_sets: Iterable[Obj]) -> Obj | None:
    """The ReplicaSet whose template is the Deployment's (minus the hash label); the oldest
    when several are (Kubernetes picks deterministically too)."""
    template = (deployment.get("spec") or {}).get("template")
    for rs in sorted(replica_sets, key=creation_order):
        if equal_ignore_hash((rs.get("spec") or {}).get("template"), template):
            return rs
    return None


def find_old(new: Obj | None, replica_sets: Iterable[Obj]) -> list[Obj]:
    """Every ReplicaSet but the new one, oldest first."""
    uid = ((new or {}).get("metadata") or {}).get("uid")
    return sorted((rs for rs in replica_sets
                   if new is None or (rs.get("metadata") or {}).get("uid") != uid),
                  key=creation_order)


def owner_reference(deployment: Obj) -> Obj:
    meta = deployment["metadata"]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def new_replica_set_name(deployment: Obj, pod_template_hash: str) -> str:
    return f"{deployment['metadata']['name']}-{pod_template_hash}"


def build_new_replica_set(deployment: Obj, *, pod_template_hash: str, replicas: int,
                          revision: int, max_surge: int) -> Obj:
    """The ReplicaSet a Deployment creates for its current template: named
    ``<deployment>-<hash>`` (a second create of it is refused: AlreadyExists), the hash added
    to its labels, selector and pod template, owned by the Deployment, annotated with the next
    revision and the Deployment's size."""
    meta, spec = deployment["metadata"], deployment.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    template_meta = template.setdefault("metadata", {})
    labels = {**(template_meta.get("labels") or {}), POD_TEMPLATE_HASH: pod_template_hash}
    template_meta["labels"] = labels
    selector = copy.deepcopy(spec.get("selector") or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}),
                               POD_TEMPLATE_HASH: pod_template_hash}
    annotations = new_rs_annotations(deployment, {}, revision, exists=False,
                                     max_surge=max_surge) or {}
    rs_spec: Obj = {"replicas": replicas, "selector": selector, "template": template}
    if spec.get("minReadySeconds"):
        rs_spec["minReadySeconds"] = spec["minReadySeconds"]
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": new_replica_set_name(deployment, pod_template_hash),
                     "namespace": meta.get("namespace"), "labels": dict(labels),
                     "annotations": annotations,
                     "ownerReferences": [owner_reference(deployment)]},
        "spec": rs_spec,
    }


# ---------------------------------------------------------------- annotations


def new_rs_annotations(deployment: Obj, current: dict[str, str] | None, revision: int, *,
                       exists: bool, max_surge: int = 0) -> dict[str, str] | None:
    """The annotations the new ReplicaSet must carry, or None when ``current`` has them
    already (Kubernetes' ``SetNewReplicaSetAnnotations``).

    The Deployment's own annotations are copied (``kubernetes.io/change-cause`` among them)
    but for ``ANNOTATIONS_NOT_COPIED``; the revision is raised to ``revision`` when lower. A
    ReplicaSet that had a revision and gets a higher one is being rolled back to: its old
    revision is appended to ``deployment.kubernetes.io/revision-history`` (oldest entries
    dropped beyond ``MAX_REVISION_HISTORY_CHARS``). A ReplicaSet about to be created
    (``exists`` false) also gets the desired- and max-replicas annotations.
    """
    out = dict(current or {})
    changed = False
    for key, value in ((deployment.get("metadata") or {}).get("annotations") or {}).items():
        if key in ANNOTATIONS_NOT_COPIED or out.get(key) == value:
            continue
        out[key] = value
        changed = True
    old = out.get(REVISION)
    try:
        old_revision = int(old) if old is not None else 0
    except ValueError:
        return out if changed else None  # not ours to fix (Kubernetes leaves it too)
    if old_revision < revision:
        out[REVISION] = str(revision)
        changed = True
        if old is not None:
            out_history = _append_history(out.get(REVISION_HISTORY, ""), old)
            if out_history is not None:
                out[REVISION_HISTORY] = out_history
    if not exists:
        spec = deployment.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        more = replicas_annotations(out, desired, desired + max_surge)
        if more is not None:
            out, changed = more, True
    return out if changed else None


def _append_history(history: str, revision: str) -> str | None:
    """``history`` with ``revision`` appended, its oldest entries dropped to stay within
    ``MAX_REVISION_HISTORY_CHARS``; None when even that cannot fit."""
    if not history:
        return revision
    entries = history.split(",")
    total = len(history) + len(revision) + 1
    start = 0
    while total > MAX_REVISION_HISTORY_CHARS and start < len(entries):
        total -= len(entries[start]) + 1
        start += 1
    if total > MAX_REVISION_HISTORY_CHARS:
        return None
    return ",".join([*entries[start:], revision])


def replicas_annotations(annotations: dict[str, str] | None, desired: int,
                         maximum: int) -> dict[str, str] | None:
    """``annotations`` with desired-replicas and max-replicas set, or None when they are set
    so already (Kubernetes' ``SetReplicasAnnotations``/``ReplicasAnnotationsNeedUpdate``)."""
    annotations = dict(annotations or {})
    if annotations.get(DESIRED_REPLICAS) == str(desired) and \
            annotations.get(MAX_REPLICAS) == str(maximum):
        return None
    annotations[DESIRED_REPLICAS] = str(desired)
    annotations[MAX_REPLICAS] = str(maximum)
    return annotations


def annotation_int(rs: Obj, key: str) -> int | None:
    """An integer annotation of a ReplicaSet (desired- or max-replicas), None when absent or
    not a number."""
    value = ((rs.get("metadata") or {}).get("annotations") or {}).get(key)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- history


def history_to_clean(deployment: Obj, old: Iterable[Obj]) -> list[Obj]:
    """The old ReplicaSets ``revisionHistoryLimit`` lets go (Kubernetes' cleanupDeployment):
    of those not being deleted, the surplus beyond the limit, lowest revision first, each only
    if it has no replicas (spec and status) and its controller has seen its last change."""
    limit = (deployment.get("spec") or {}).get("revisionHistoryLimit")
    if limit is None or limit == MAX_INT32:
        return []
    alive = sorted((rs for rs in old if not (rs.get("metadata") or {}).get("deletionTimestamp")),
                   key=revision_order)
    surplus = len(alive) - int(limit)
    doomed = []
    for rs in alive[:max(surplus, 0)]:
        spec, status = rs.get("spec") or {}, rs.get("status") or {}
        generation = (rs.get("metadata") or {}).get("generation") or 0
        if status.get("replicas") or spec.get("replicas") or \
                generation > (status.get("observedGeneration") or 0):
            continue
        doomed.append(rs)
    return doomed
