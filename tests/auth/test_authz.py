"""Authorization decisions as a table, then the exact 403 wording and the non-resource paths.

Each row of ``DECISIONS`` is one request: who, verb, group, resource[/subresource], namespace,
name, the stored Pod's ``spec.nodeName`` when the caller passes it (``-``: not passed, ``none``:
passed as missing, ``unbound``: a Pod without a node), and the decision: ``allow``, or ``403``
with the reason the message must end with (``node``, ``lease``, ``pod``; bare ``403``: none).
"""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.api.errors import ApiError
from controlplane.auth.authn import User
from controlplane.auth.authz import RequestAttributes, authorize, authorize_path, needs_existing

AUTH = "system:authenticated"
USERS = {
    "admin": User("corral-admin", ("system:masters", AUTH)),
    "n1": User("system:node:n1", ("system:nodes", AUTH)),
    # The node user name without the group is not a node credential.
    "n1-nogroup": User("system:node:n1", (AUTH,)),
    "alice": User("alice", ("ops", AUTH)),
    # A token user in system:masters is an admin, whatever else it is.
    "master-node": User("system:node:n1", ("system:nodes", "system:masters", AUTH)),
}
REASONS = {
    "node": 'node "n1" is not allowed to modify node "n2"',
    "lease": "can only access node lease with the same name as the requesting node",
    "pod": "no relationship found between node 'n1' and this object",
}

DECISIONS = """
# user        verb              group                resource            namespace        name  pod      decision
admin         deletecollection  -                    pods                default          -     -        allow
admin         delete            -                    nodes               -                n2    -        allow
admin         update            apps                 deployments/scale   default          web   -        allow
master-node   delete            -                    pods                default          p     -        allow
# nodes read everything (no narrowing of secrets and configmaps yet)
n1            get               -                    secrets             default          s     -        allow
n1            list              -                    pods                -                -     -        allow
n1            watch             -                    nodes               -                -     -        allow
n1            get               -                    nodes               -                n2    -        allow
n1            list              coordination.k8s.io  leases              kube-node-lease  -     -        allow
# their own Node, and no other
n1            create            -                    nodes               -                n1    -        allow
n1            update            -                    nodes               -                n1    -        allow
n1            patch             -                    nodes/status        -                n1    -        allow
n1            update            -                    nodes/status        -                n1    -        allow
n1            create            -                    nodes               -                n2    -        403:node
n1            patch             -                    nodes               -                n2    -        403:node
n1            update            -                    nodes/status        -                n2    -        403:node
n1            delete            -                    nodes               -                n1    -        403
n1            deletecollection  -                    nodes               -                -     -        403
# their own Lease in kube-node-lease, every verb
n1            create            coordination.k8s.io  leases              kube-node-lease  n1    -        allow
n1            update            coordination.k8s.io  leases              kube-node-lease  n1    -        allow
n1            delete            coordination.k8s.io  leases              kube-node-lease  n1    -        allow
n1            update            coordination.k8s.io  leases              kube-node-lease  n2    -        403:lease
n1            update            coordination.k8s.io  leases              default          n1    -        403:lease
n1            deletecollection  coordination.k8s.io  leases              kube-node-lease  -     -        403:lease
n1            update            -                    leases              kube-node-lease  n1    -        403
# Pods bound to them: status and delete
n1            update            -                    pods/status         default          p     n1       allow
n1            patch             -                    pods/status         default          p     n1       allow
n1            delete            -                    pods                default          p     n1       allow
n1            patch             -                    pods/status         default          p     n2       403:pod
n1            delete            -                    pods                default          p     n2       403:pod
n1            patch             -                    pods/status         default          p     unbound  403:pod
n1            delete            -                    pods                default          p     none     403:pod
n1            delete            -                    pods                default          p     -        403:pod
n1            update            -                    pods                default          p     n1       403
n1            create            -                    pods                default          p     -        403
n1            create            -                    pods/binding        default          p     -        403
n1            deletecollection  -                    pods                default          -     -        403
# events, both groups
n1            create            -                    events              default          e     -        allow
n1            patch             events.k8s.io        events              default          e     -        allow
n1            delete            -                    events              default          e     -        403
# everything else
n1            create            -                    secrets             default          s     -        403
n1            update            apps                 deployments         default          web   -        403
n1-nogroup    get               -                    pods                default          p     -        403
n1-nogroup    update            -                    nodes               -                n1    -        403
alice         get               -                    pods                default          p     -        403
alice         list              -                    namespaces          -                -     -        403
"""


def rows() -> list[Any]:
    params = []
    for line in DECISIONS.strip().splitlines():
        if line.startswith("#"):
            continue
        user, verb, group, resource, ns, name, pod, decision = (
            "" if f == "-" else f for f in line.split())
        params.append(pytest.param(user, verb, group, resource, ns, name, pod, decision,
                                   id="-".join(f or "_" for f in line.split()[:7])))
    return params


def attrs_of(verb: str, group: str, resource: str, ns: str, name: str) -> RequestAttributes:
    resource, _, sub = resource.partition("/")
    return RequestAttributes(verb, group, resource, sub, ns, name)


@pytest.mark.parametrize("user,verb,group,resource,ns,name,pod,decision", rows())
def test_decision(user: str, verb: str, group: str, resource: str, ns: str, name: str,
                  pod: str, decision: str) -> None:
    attrs = attrs_of(verb, group, resource, ns, name)
    existing = None if pod in ("", "none") else {"spec": {} if pod == "unbound" else {"nodeName": pod}}
    if decision == "allow":
        authorize(USERS[user], attrs, existing)
        return
    with pytest.raises(ApiError) as raised:
        authorize(USERS[user], attrs, existing)
    assert (raised.value.code, raised.value.reason) == (403, "Forbidden")
    _, _, reason = decision.partition(":")
    message = raised.value.message
    if reason:
        assert message.endswith(f": {REASONS[reason]}")
    else:
        assert message.endswith(" scope") or message.endswith(f'namespace "{ns}"')


@pytest.mark.parametrize("user,verb,group,resource,ns,name,pod,decision", rows())
def test_needs_existing_exactly_for_a_nodes_pod_writes(
    user: str, verb: str, group: str, resource: str, ns: str, name: str, pod: str, decision: str
) -> None:
    want = (USERS[user].node_name is not None and not USERS[user].is_admin
            and group == "" and (resource, verb) in {
                ("pods/status", "update"), ("pods/status", "patch"), ("pods", "delete")})
    assert needs_existing(USERS[user], attrs_of(verb, group, resource, ns, name)) is want


@pytest.mark.parametrize("user,attrs,message", [
    ("alice", RequestAttributes("get", "", "pods", "", "default", "p"),
     'pods is forbidden: User "alice" cannot get resource "pods" in API group "" '
     'in the namespace "default"'),
    ("alice", RequestAttributes("list", "", "nodes"),
     'nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" '
     "at the cluster scope"),
    ("n1", RequestAttributes("patch", "", "pods", "status", "default", "p"),
     'pods/status is forbidden: User "system:node:n1" cannot patch resource "pods/status" in '
     "API group \"\" in the namespace \"default\": no relationship found between node 'n1' "
     "and this object"),
])
def test_message_wording(user: str, attrs: RequestAttributes, message: str) -> None:
    with pytest.raises(ApiError) as raised:
        authorize(USERS[user], attrs, {"spec": {"nodeName": "n2"}})
    assert raised.value.message == message


def test_unknown_verb_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown verb 'escalate'"):
        RequestAttributes("escalate", "", "pods")


PATHS = [
    ("admin", "get", "/metrics", True),
    ("admin", "post", "/anything", True),
    ("alice", "get", "/api", True),
    ("alice", "get", "/api/v1", True),
    ("alice", "get", "/apis/apps/v1", True),
    ("alice", "get", "/openapi/v3/api/v1", True),
    ("n1", "get", "/version", True),
    ("n1", "get", "/healthz", True),
    ("alice", "post", "/api", False),
    ("alice", "get", "/metrics", False),
    ("alice", "get", "/apiextras", False),
    ("n1", "get", "/debug/pprof", False),
]


@pytest.mark.parametrize("user,verb,path,allowed", PATHS)
def test_non_resource_paths(user: str, verb: str, path: str, allowed: bool) -> None:
    if allowed:
        authorize_path(USERS[user], verb, path)
        return
    with pytest.raises(ApiError) as raised:
        authorize_path(USERS[user], verb, path)
    assert raised.value.code == 403
    assert raised.value.message == (f'forbidden: User "{USERS[user].name}" cannot {verb} '
                                    f'path "{path}"')
