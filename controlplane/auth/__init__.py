"""Secure by default: the cluster's PKI, who a request comes from, what it may do, node join.

Flow: ``pki`` makes the cluster CA at creation (with the admin credential and the join token)
and gives the API server its TLS context; ``kubeconfig`` hands the admin credential to kubectl
and the kubernetes client; ``join`` trades a join token and a CA pin for a node's own
certificate; on every request, ``authn`` names the user from the client certificate (or a
static bearer token) and ``authz`` decides: admins everything, a node only its own Node, Lease
and Pods, anyone else nothing yet (403) until RBAC arrives.
"""
