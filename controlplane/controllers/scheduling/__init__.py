"""The scheduler's decision as a pure core: kube-scheduler's default filters and scores over
plain Kubernetes Pod and Node dicts, with no I/O, no clock and an injected tie-break.

Modules in the order data flows: ``constants`` (Kubernetes' numbers and reason texts),
``podinfo`` (a pod parsed once: requests, host ports, affinity terms), ``nodeinfo`` (a node and
its pods, updated with add_pod/remove_pod), ``filters`` (PreFilter state and the Filter plugins),
``scores`` (the Score plugins), ``schedule`` (filter, score, pick; or the FitError message).
"""

from .filters import FILTERS, CycleState, Unfit, find_feasible, prefilter
from .nodeinfo import NodeInfo, build_node_infos
from .podinfo import PodInfo
from .schedule import Decision, num_feasible_nodes_to_find, schedule
from .scores import SCORE_PLUGINS

__all__ = ["FILTERS", "SCORE_PLUGINS", "CycleState", "Decision", "NodeInfo", "PodInfo", "Unfit",
           "build_node_infos", "find_feasible", "num_feasible_nodes_to_find", "prefilter",
           "schedule"]
