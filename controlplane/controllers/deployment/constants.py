"""Kubernetes' names and texts for Deployments, in one place and spelled as Kubernetes spells
them (``apps/v1`` types, ``pkg/controller/deployment/util``): what kubectl and users read."""

from __future__ import annotations

COMPONENT = "deployment-controller"

# -- strategies (spec.strategy.type) ----------------------------------------------------------
ROLLING_UPDATE = "RollingUpdate"
RECREATE = "Recreate"

# -- labels and annotations -------------------------------------------------------------------
#: Label a Deployment adds to its ReplicaSets' selector, labels and pod template.
POD_TEMPLATE_HASH = "pod-template-hash"
#: The revision of a ReplicaSet (and, copied, of its Deployment).
REVISION = "deployment.kubernetes.io/revision"
#: The earlier revisions a ReplicaSet had before a rollback made it the newest again.
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
#: spec.replicas of the Deployment when the ReplicaSet was last scaled for it.
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
#: spec.replicas + maxSurge of the Deployment then: the base of proportional scaling.
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE = "kubernetes.io/change-cause"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: extensions/v1beta1's rollback request, never copied (rollback by annotation is not served).
DEPRECATED_ROLLBACK_TO = "deprecated.deployment.rollback.to"
#: Deployment annotations a ReplicaSet never inherits (Kubernetes' annotationsToSkip).
ANNOTATIONS_NOT_COPIED = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS,
                                    MAX_REPLICAS, DEPRECATED_ROLLBACK_TO})
#: Longest revision-history annotation kept (characters), as Kubernetes' controller flag.
MAX_REVISION_HISTORY_CHARS = 2000

#: Go's math.MaxInt32: a progressDeadlineSeconds or revisionHistoryLimit meaning "none".
MAX_INT32 = 2**31 - 1

# -- conditions ------------------------------------------------------------------------------
AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# Progressing reasons
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
FAILED_RS_CREATE = "ReplicaSetCreateError"
#: Ours: spec.strategy.type names no strategy this controller knows.
UNKNOWN_STRATEGY = "UnknownStrategyType"

# Available reasons
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

MSG_CREATED = 'Created new replica set "{rs}"'
MSG_FOUND = 'Found new replica set "{rs}"'
MSG_PROGRESSING = 'ReplicaSet "{rs}" is progressing.'
MSG_PROGRESSING_NO_RS = 'Deployment "{d}" is progressing.'
MSG_COMPLETE = 'ReplicaSet "{rs}" has successfully progressed.'
MSG_COMPLETE_NO_RS = 'Deployment "{d}" has successfully progressed.'
MSG_TIMED_OUT = 'ReplicaSet "{rs}" has timed out progressing.'
MSG_TIMED_OUT_NO_RS = 'Deployment "{d}" has timed out progressing.'
MSG_PAUSED = "Deployment is paused"
MSG_RESUMED = "Deployment is resumed"
MSG_FAILED_CREATE = 'Failed to create new replica set "{rs}": {error}'
MSG_UNKNOWN_STRATEGY = 'strategy type "{type}" is not supported by this controller'
MSG_MIN_AVAILABLE = "Deployment has minimum availability."
MSG_MIN_UNAVAILABLE = "Deployment does not have minimum availability."

# -- events ----------------------------------------------------------------------------------
SCALING_REPLICA_SET = "ScalingReplicaSet"
SELECTING_ALL = "SelectingAll"
#: Kubernetes 1.31 wording: a new ReplicaSet is told without "from" (getNewReplicaSet), a
#: resize with both sizes (scaleReplicaSet, reordered "from ... to" in 1.31).
MSG_SCALED_UP_NEW = "Scaled up replica set {rs} to {to}"
MSG_SCALED = "Scaled {direction} replica set {rs} from {frm} to {to}"
MSG_SELECTING_ALL = "This deployment is selecting all pods. A non-empty selector is required."
