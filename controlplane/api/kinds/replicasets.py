"""ReplicaSet strategy: replicas of one pod template, selected by labels.

Shared rules live in ``_workload``; a ReplicaSet adds only its columns and the
``status.replicas`` field label.
"""

from __future__ import annotations

from ..strategy import Column, Obj
from ..table import AGE, count
from ._podspec import template_columns
from ._workload import WorkloadStrategy


class ReplicaSetStrategy(WorkloadStrategy):
    def columns(self) -> list[Column]:
        return [
            Column("Desired", count("spec", "replicas"), type="integer",
                   description="Replicas is the number of desired replicas."),
            Column("Current", count("status", "replicas"), type="integer",
                   description="Replicas is the most recently observed number of replicas."),
            Column("Ready", count("status", "readyReplicas"), type="integer",
                   description="The number of ready replicas for this replica set."),
            AGE,
            *template_columns(),
        ]

    def field_labels(self, obj: Obj) -> dict[str, str]:
        return {"status.replicas": str((obj.get("status") or {}).get("replicas") or 0)}
