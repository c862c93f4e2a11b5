"""Kubernetes' names and texts for Deployments, in one place and spelled as Kubernetes spells
them (``apps/v1`` types, ``pkg/controller/deployment/util``): what kubectl and users read.
Corral's own (the BlueGreen and Canary strategies of docs/deployment-strategies.md) are under
the ``deployment.corral.dev/`` prefix and marked as such."""

from __future__ import annotations

COMPONENT = "deployment-controller"

# -- strategies (spec.strategy.type) ----------------------------------------------------------
ROLLING_UPDATE = "RollingUpdate"
RECREATE = "Recreate"
#: Corral's extensions.
BLUE_GREEN = "BlueGreen"
CANARY = "Canary"
#: BlueGreen's scaleDownDelaySeconds when unset (as the API defaults it).
DEFAULT_SCALE_DOWN_DELAY_SECONDS = 30

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
#: Corral, on a Deployment: what the controller last set spec.paused for (a BlueGreen new side
#: awaiting promotion: "<pod-template-hash>/<revision>"; a Canary pause step:
#: "<pod-template-hash>/<revision>/<step>"), so that a resume moves on instead of pausing again.
PAUSED_FOR = "deployment.corral.dev/paused-for"
#: Corral, on an old BlueGreen ReplicaSet: when it goes to 0 (RFC 3339, whole seconds rounded
#: up), stamped as the active Service leaves it.
SCALE_DOWN_AT = "deployment.corral.dev/scale-down-at"
#: Corral, on a Deployment: the active Service its BlueGreen strategy last switched (let go,
#: its ``pod-template-hash`` removed, once the Deployment is no longer BlueGreen).
ACTIVE_SERVICE = "deployment.corral.dev/active-service"
#: Corral, on a Canary's new ReplicaSet: the index of the step it is at (0-based; the number of
#: steps once they are done).
CANARY_STEP = "deployment.corral.dev/canary-step"
#: Corral, on a Canary's new ReplicaSet: the ReplicaSet that served when its rollout began (""
#: when none did): where the old share lives, and what a rollback returns to at once.
CANARY_STABLE = "deployment.corral.dev/canary-stable"
#: Corral, on a Canary's new ReplicaSet: when the timed pause of its current step began.
CANARY_PAUSE_START = "deployment.corral.dev/canary-pause-start"
#: Corral, on a Canary's new ReplicaSet: the revision its canary annotations were written for;
#: a ReplicaSet rolled back to (a new revision) starts its bookkeeping again.
CANARY_REVISION = "deployment.corral.dev/canary-revision"
#: Deployment annotations a ReplicaSet never inherits (Kubernetes' annotationsToSkip, and
#: Corral's own Deployment annotation).
ANNOTATIONS_NOT_COPIED = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS,
                                    MAX_REPLICAS, DEPRECATED_ROLLBACK_TO, PAUSED_FOR})
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

#: Corral: a condition of a BlueGreen Deployment whose Service is missing (True while it is, as
#: ReplicaFailure), reason SERVICE_NOT_FOUND.
SERVICE_FAILURE = "ServiceFailure"

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

# -- Corral's strategies: events (reasons and messages) -----------------------------------------
#: BlueGreen: the active Service switched to the new side.
PROMOTED = "Promoted"
MSG_PROMOTED = "Switched service {svc} to replica set {rs}"
#: BlueGreen: the preview Service switched to the new side.
PREVIEW_SWITCHED = "PreviewSwitched"
MSG_PREVIEW_SWITCHED = "Switched preview service {svc} to replica set {rs}"
#: BlueGreen with autoPromotionEnabled false: paused with the new side ready.
AWAITING_PROMOTION = "AwaitingPromotion"
MSG_AWAITING_PROMOTION = ("Replica set {rs} is available; paused until the Deployment is "
                          "resumed (kubectl rollout resume) to switch service {svc}")
#: A Service a BlueGreen Deployment names is missing (Warning; also the condition's reason).
SERVICE_NOT_FOUND = "ServiceNotFound"
MSG_SERVICE_NOT_FOUND = "Service {svc} not found"
MSG_SERVICE_HOLDS = "Service {svc} not found: the rollout waits for it"
#: Canary: a step begins (or the steps are done).
CANARY_STEP_STARTED = "CanaryStep"
MSG_CANARY_WEIGHT = "Step {n}/{total}: setWeight {weight}"
MSG_CANARY_PAUSE = "Step {n}/{total}: pause {seconds}s"
MSG_CANARY_PAUSE_RESUME = "Step {n}/{total}: pause until the Deployment is resumed"
MSG_CANARY_DONE = "Steps done: replica set {rs} takes all {replicas} replicas"
MSG_CANARY_ROLLBACK = ("Replica set {rs} served before this rollout: it takes all {replicas} "
                       "replicas at once")
