"""Authorization: may this user do this to that.

Flow: the API server turns each resource request into ``RequestAttributes`` (for a create,
``name`` is the name in the body) and calls ``authorize``, which returns or raises a 403 Status
worded as Kubernetes words it. ``system:masters`` may do everything. A node credential
(``system:node:<name>`` in ``system:nodes``) is held to ``NODE_RULES``: the first rule matching
the verb and resource decides, and its check, if any, decides from the request and, for Pods,
from the stored object, which the server loads first when ``needs_existing`` says so. Every
other user is refused until RBAC lands.

Non-resource requests (discovery, health, version) go through ``authorize_path``.

This is Kubernetes' Node authorizer plus NodeRestriction admission, simplified: no object graph,
so the Pod checks read ``spec.nodeName`` of the stored Pod instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.api.errors import ApiError, forbidden

from .authn import User

Obj = dict[str, Any]

VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list", "watch"})
NODE_LEASE_NAMESPACE = "kube-node-lease"
COORDINATION_GROUP = "coordination.k8s.io"
EVENTS_GROUP = "events.k8s.io"

#: What every authenticated user may GET outside the resource tree: Kubernetes' default
#: ``system:discovery`` and ``system:public-info-viewer`` roles. ``/x/*`` covers ``/x/...``.
DISCOVERY_PATHS = (
    "/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version", "/version/",
    "/healthz", "/livez", "/readyz",
)


@dataclass(frozen=True)
class RequestAttributes:
    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        if self.verb not in VERBS:
            raise ValueError(f"unknown verb {self.verb!r}")

    @property
    def qualified(self) -> str:
        """``resource/subresource`` as Kubernetes names it in messages and rules."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


#: A check says why a matching request is refused, or None to allow it.
Check = Callable[[str, RequestAttributes, Obj | None], str | None]


def _own_node(node: str, attrs: RequestAttributes, existing: Obj | None) -> str | None:
    if attrs.name == node:
        return None
    return f'node "{node}" is not allowed to modify node "{attrs.name}"'


def _own_lease(node: str, attrs: RequestAttributes, existing: Obj | None) -> str | None:
    if attrs.namespace == NODE_LEASE_NAMESPACE and attrs.name == node:
        return None
    return "can only access node lease with the same name as the requesting node"


def _bound_pod(node: str, attrs: RequestAttributes, existing: Obj | None) -> str | None:
    bound = ((existing or {}).get("spec") or {}).get("nodeName")
    if bound == node:
        return None
    return f"no relationship found between node '{node}' and this object"


@dataclass(frozen=True)
class NodeRule:
    verbs: frozenset[str]
    #: API groups, or None for any.
    groups: frozenset[str] | None
    #: ``resource`` or ``resource/subresource`` names, or None for any.
    resources: frozenset[str] | None
    check: Check | None = None
    #: The check reads the stored object, so the server must load it first.
    needs_existing: bool = False

    def matches(self, attrs: RequestAttributes) -> bool:
        return (
            attrs.verb in self.verbs
            and (self.groups is None or attrs.group in self.groups)
            and (self.resources is None or attrs.qualified in self.resources)
        )


NODE_RULES: tuple[NodeRule, ...] = (
    # Kubernetes' node authorizer narrows reads of secrets, configmaps, PVCs and service account
    # tokens to those that the node's own Pods use; we do not yet: a node may read everything.
    NodeRule(READ_VERBS, None, None),
    NodeRule(frozenset({"create", "get", "update", "patch"}), frozenset({""}),
             frozenset({"nodes", "nodes/status"}), _own_node),
    NodeRule(VERBS, frozenset({COORDINATION_GROUP}), frozenset({"leases"}), _own_lease),
    NodeRule(frozenset({"update", "patch"}), frozenset({""}), frozenset({"pods/status"}),
             _bound_pod, needs_existing=True),
    NodeRule(frozenset({"delete"}), frozenset({""}), frozenset({"pods"}),
             _bound_pod, needs_existing=True),
    NodeRule(frozenset({"create", "update", "patch"}), frozenset({"", EVENTS_GROUP}),
             frozenset({"events"})),
)


def _node_rule(user: User, attrs: RequestAttributes) -> NodeRule | None:
    if user.is_admin or user.node_name is None:
        return None
    return next((r for r in NODE_RULES if r.matches(attrs)), None)


def needs_existing(user: User, attrs: RequestAttributes) -> bool:
    """Whether ``authorize`` needs the stored object (a node touching a Pod) for this request."""
    rule = _node_rule(user, attrs)
    return rule is not None and rule.needs_existing


def authorize(user: User, attrs: RequestAttributes, existing: Obj | None = None) -> None:
    """Return if ``user`` may make this request, else raise a 403 ``ApiError``.

    ``existing`` is the stored object when ``needs_existing`` is true; None when it does not
    exist, which is refused like a Pod of another node (as Kubernetes does: no existence leak).
    """
    if user.is_admin:
        return
    node = user.node_name
    detail = ""
    if node is not None:
        rule = _node_rule(user, attrs)
        if rule is not None:
            reason = rule.check(node, attrs, existing) if rule.check else None
            if reason is None:
                return
            detail = reason
    # A node outside its rules, or any other user: refused until RBAC roles and bindings land
    # (DESIGN.md, "Coming later").
    raise forbidden(user.name, attrs.verb, attrs.qualified, attrs.group, attrs.namespace, detail)


def _path_matches(pattern: str, path: str) -> bool:
    if pattern.endswith("/*"):
        return path.startswith(pattern[:-1])
    return path == pattern


def authorize_path(user: User, verb: str, path: str) -> None:
    """Authorize a non-resource request: admins anything, everyone GETs of discovery paths."""
    if user.is_admin:
        return
    if verb == "get" and any(_path_matches(p, path) for p in DISCOVERY_PATHS):
        return
    raise ApiError(403, "Forbidden", f'forbidden: User "{user.name}" cannot {verb} path "{path}"')
