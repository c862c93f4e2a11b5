"""The client side of the Kubernetes API, shared by the controllers and the node agent.

``ApiClient`` (``rest``) speaks the REST verbs and watches, failing over between controllers;
``Informer`` keeps a watch-fed cache; ``WorkQueue`` and ``run_workers`` turn cache events into
keys reconciled with back-off. Nothing here imports the server (``controlplane.api``).
"""

from .informer import FuncHandler, Handler, Informer, InformerFactory, key_of
from .reconciler import Requeue, run_controller, run_workers
from .resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    ENDPOINTS,
    ENDPOINTSLICES,
    EVENTS,
    LEASES,
    NAMESPACES,
    NODES,
    PERSISTENTVOLUMECLAIMS,
    PERSISTENTVOLUMES,
    PODS,
    REPLICASETS,
    SECRETS,
    SERVICEACCOUNTS,
    SERVICES,
    SERVED,
    Resource,
    for_kind,
)
from .rest import (
    AlreadyExists,
    ApiClient,
    ApiError,
    Conflict,
    Expired,
    Forbidden,
    Invalid,
    NotFound,
    ObjectList,
    Unauthorized,
    Unavailable,
)
from .workqueue import ShutDown, WorkQueue

__all__ = [
    "AlreadyExists", "ApiClient", "ApiError", "CONFIGMAPS", "Conflict", "DEPLOYMENTS",
    "ENDPOINTS", "ENDPOINTSLICES", "EVENTS", "Expired", "Forbidden", "FuncHandler", "Handler",
    "Informer", "InformerFactory", "Invalid", "LEASES", "NAMESPACES", "NODES", "NotFound", "ObjectList",
    "PERSISTENTVOLUMECLAIMS", "PERSISTENTVOLUMES", "PODS", "REPLICASETS", "Requeue", "run_controller",
    "Resource", "SECRETS", "SERVED", "SERVICEACCOUNTS", "SERVICES", "ShutDown", "Unauthorized",
    "Unavailable", "WorkQueue", "for_kind", "key_of", "run_workers",
]
