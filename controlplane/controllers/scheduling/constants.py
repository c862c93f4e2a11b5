"""kube-scheduler's constants, named as in Kubernetes, with units; and its filter reasons, worded
exactly as kube-scheduler words them (they reach users in FailedScheduling events).

Flow: defaults for missing requests, score bounds and plugin weights, percentageOfNodesToScore,
well-known labels and taints, then the reasons in the order of the filters that give them.
"""

from __future__ import annotations

MIB_B = 1024 * 1024

# pkg/scheduler/util: what a container that omits a request counts as when scoring (not for fit).
DEFAULT_MILLI_CPU_REQUEST = 100  # millicores
DEFAULT_MEMORY_REQUEST_B = 200 * MIB_B

# framework.MaxNodeScore: every score plugin gives 0..100 after normalisation.
MAX_NODE_SCORE = 100

# Default plugin weights (apis/config/v1 getDefaultPlugins); the plugins Corral leaves out are
# listed in schedule.py's docstring.
TAINT_TOLERATION_WEIGHT = 3
NODE_AFFINITY_WEIGHT = 2
NODE_RESOURCES_FIT_WEIGHT = 1
POD_TOPOLOGY_SPREAD_WEIGHT = 2

# schedule_one.go numFeasibleNodesToFind: 0 means adaptive (50% - nodes/125, at least 5%).
DEFAULT_PERCENTAGE_OF_NODES_TO_SCORE = 0
MIN_FEASIBLE_NODES_TO_FIND = 100  # nodes
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5  # percent
ADAPTIVE_BASE_PERCENTAGE = 50  # percent
ADAPTIVE_NODES_PER_PERCENT = 125  # nodes that take one percent off the adaptive percentage

# PodTopologySpread's system default constraints (ScheduleAnyway: they only score).
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_TOPOLOGY_ZONE = "topology.kubernetes.io/zone"
SYSTEM_DEFAULT_CONSTRAINTS = ((LABEL_HOSTNAME, 3), (LABEL_TOPOLOGY_ZONE, 5))  # (key, maxSkew)

# Taints the node lifecycle controller puts on nodes (TaintNodesByCondition).
TAINT_NODE_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_NODE_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_NODE_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE = "NoSchedule", "PreferNoSchedule", "NoExecute"

# Host port defaults (framework.HostPortInfo).
DEFAULT_BIND_ALL_HOST_IP = "0.0.0.0"
PROTOCOL_TCP = "TCP"

# Filter reasons, in filter order.
ERR_REASON_UNSCHEDULABLE = "node(s) were unschedulable"
ERR_REASON_NODE_NAME = "node(s) didn't match the requested node name"
# kube-scheduler up to its 2025-11 patch releases; since kubernetes#134740 it hides the taint and
# prints "node(s) had untolerated taint(s)". Corral keeps the key and value: they say what to fix.
ERR_REASON_UNTOLERATED_TAINT = "node(s) had untolerated taint {{{key}: {value}}}"
ERR_REASON_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
ERR_REASON_NODE_PORTS = "node(s) didn't have free ports for the requested pod ports"
ERR_REASON_TOO_MANY_PODS = "Too many pods"
ERR_REASON_INSUFFICIENT = "Insufficient {resource}"
ERR_REASON_AFFINITY_RULES = "node(s) didn't match pod affinity rules"
ERR_REASON_ANTI_AFFINITY_RULES = "node(s) didn't match pod anti-affinity rules"
ERR_REASON_EXISTING_ANTI_AFFINITY_RULES = "node(s) didn't satisfy existing pods anti-affinity rules"

# FitError and DefaultPreemption's PostFilter message.
NO_NODE_AVAILABLE_MSG = "0/{nodes} nodes are available"
ERR_NO_NODES_AVAILABLE = "no nodes available to schedule pods"
PREEMPTION_PREFIX = "preemption: "
PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"
PREEMPTION_NO_VICTIMS = "No preemption victims found for incoming pod"
PREEMPT_NEVER = "Never"  # spec.preemptionPolicy
PREEMPTION_POLICY_NEVER = "not eligible due to preemptionPolicy=Never."
SCHEDULED_MSG = "Successfully assigned {namespace}/{name} to {node}"
