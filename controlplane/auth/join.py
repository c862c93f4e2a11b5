"""Node join: a join token and a CA pin buy a node agent its own client certificate.

Flow, kubeadm-style: the operator gives the agent the API server URL, the cluster's join token
(``ClusterPKI.join_token``, ``<id>.<secret>``) and the CA pin (``ClusterPKI.ca_fingerprint()``,
``sha256:<hex>``). The agent (``join``) first fetches the CA from ``GET /corral/v1/ca`` without
trusting anything, since the CA is public, and accepts it only if its hash equals the pin; it
then opens a TLS connection that trusts exactly that CA and sends ``POST /corral/v1/join`` with
``Authorization: Bearer <join token>`` and ``{"nodeName": ...}``. The server (``join_handler``)
checks the token in constant time and the name, and ``issue_node_credential`` answers a
certificate for user ``system:node:<name>`` in group ``system:nodes``, its key and the CA.

The join token opens only this endpoint; it is no API credential. Both endpoints are served
without client authentication, so the API server lets them through before its 401 check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NotRequired, TypedDict
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controlplane.api.errors import (
    ApiError,
    Cause,
    bad_request,
    invalid,
    invalid_value,
    required,
    unauthorized,
)

from .authn import NODE_USER_PREFIX, NODES_GROUP, bearer_token
from .kubeconfig import write_kubeconfig
from .pki import MODE_PUBLIC, ClusterPKI, client_ssl_context, discovery_hash, write_atomic

log = logging.getLogger(__name__)

JOIN_PATH = "/corral/v1/join"
CA_PATH = "/corral/v1/ca"
PEM_CONTENT_TYPE = "application/x-pem-file"
CA_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
JOIN_TIMEOUT_S = 30.0

#: Kubernetes' DNS-1123 subdomain, the rule for Node names.
DNS1123_SUBDOMAIN_MAX = 253
DNS1123_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    f"for validation is '{DNS1123_SUBDOMAIN_RE.pattern}')"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NodeCredential(TypedDict):
    """The join answer: PEM text of the node's certificate, its key, and the cluster CA; and
    when the node named its addresses, a serving certificate for them (the agent's server,
    which the API server verifies against the CA when it proxies logs and exec)."""

    certificate: str
    key: str
    ca: str
    servingCertificate: NotRequired[str]
    servingKey: NotRequired[str]


class JoinError(Exception):
    """The agent could not join: the server's CA failed the pin, or the server refused."""


# -- server side -------------------------------------------------------------------------------


def _node_name_causes(node_name: str) -> list[Cause]:
    if not node_name:
        return [required("nodeName")]
    if len(node_name) > DNS1123_SUBDOMAIN_MAX:
        return [invalid_value("nodeName", node_name,
                              f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")]
    if not DNS1123_SUBDOMAIN_RE.fullmatch(node_name):
        return [invalid_value("nodeName", node_name, DNS1123_SUBDOMAIN_MSG)]
    return []


def issue_node_credential(pki: ClusterPKI, token: str, node_name: str,
                          addresses: list[str] | None = None) -> NodeCredential:
    """The credential of node ``node_name``; ApiError 401 for a wrong token, 422 for a bad name.

    A node that joins again gets a new certificate; the old one stays valid until it expires
    (there is no revocation yet).
    """
    if not pki.verify_join_token(token):
        raise unauthorized()
    causes = _node_name_causes(node_name)
    if causes:
        raise invalid("", "JoinRequest", node_name, causes)
    cert_pem, key_pem = pki.issue_client_cert(f"{NODE_USER_PREFIX}{node_name}", [NODES_GROUP])
    credential: NodeCredential = {"certificate": cert_pem.decode(), "key": key_pem.decode(),
                                  "ca": pki.ca_pem.decode()}
    if addresses:
        try:
            serving, serving_key = pki.issue_server_cert(node_name, [node_name, *addresses])
        except ValueError as exc:
            raise invalid("", "JoinRequest", node_name, [
                invalid_value("addresses", addresses, str(exc))]) from None
        credential["servingCertificate"] = serving.decode()
        credential["servingKey"] = serving_key.decode()
    return credential


def _error(err: ApiError) -> web.Response:
    return web.json_response(err.status(), status=err.code)


def join_handler(pki: ClusterPKI) -> Handler:
    """The handler of ``POST /corral/v1/join``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        # The token is checked before the body is read: a caller without it learns nothing.
        token = bearer_token(request.headers.get("Authorization"))
        if token is None or not pki.verify_join_token(token):
            log.warning("join refused: bad or missing join token from %s", request.remote)
            return _error(unauthorized())
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return _error(bad_request(f"the join request body is not JSON: {exc}"))
        if not isinstance(body, dict):
            return _error(bad_request("the join request body must be a JSON object"))
        node_name = body.get("nodeName", "")
        if not isinstance(node_name, str):
            return _error(invalid("", "JoinRequest", "", [
                invalid_value("nodeName", node_name, "must be a string")]))
        addresses = body.get("addresses") or []
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            return _error(invalid("", "JoinRequest", node_name, [
                invalid_value("addresses", addresses, "must be a list of strings")]))
        try:
            credential = issue_node_credential(pki, token, node_name, addresses)
        except ApiError as err:
            return _error(err)
        log.info("node %s joined from %s", node_name, request.remote)
        return web.json_response(credential)

    return handle


def ca_handler(pki: ClusterPKI) -> Handler:
    """The handler of ``GET /corral/v1/ca``: the CA certificate, public by nature."""
    ca_pem = pki.ca_pem

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=ca_pem, content_type=PEM_CONTENT_TYPE)

    return handle


# -- agent side --------------------------------------------------------------------------------


async def join(server_url: str, token: str, ca_hash: str, node_name: str,
               addresses: list[str] | None = None) -> NodeCredential:
    """Fetch this node's credential from the API server at ``server_url`` (``https://...``).

    Raises ValueError for malformed arguments, JoinError when the CA does not match
    ``ca_hash`` (the token is then never sent) or the server refuses, and aiohttp.ClientError
    when the network fails, or when the server's certificate is not signed by the pinned CA.
    """
    if urlsplit(server_url).scheme != "https":
        raise ValueError(f"the server URL must be https://..., not {server_url!r}")
    ca_hash = ca_hash.strip().lower()
    if not CA_HASH_RE.fullmatch(ca_hash):
        raise ValueError(f"the CA hash must look like sha256:<64 hex digits>, not {ca_hash!r}")
    base = server_url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=JOIN_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # Unverified on purpose: nothing is trusted yet; the pin below is what makes it safe.
        async with session.get(base + CA_PATH, ssl=False) as resp:
            if resp.status != 200:
                raise JoinError(f"GET {CA_PATH}: HTTP {resp.status}")
            fetched = await resp.read()
        try:
            # Re-encoded: only this one certificate is trusted, not whatever else the body held.
            ca_pem = x509.load_pem_x509_certificate(fetched).public_bytes(serialization.Encoding.PEM)
        except ValueError as exc:
            raise JoinError(f"GET {CA_PATH} did not answer a PEM certificate: {exc}") from exc
        actual = discovery_hash(ca_pem)
        if actual != ca_hash:
            raise JoinError(f"the server's CA has hash {actual}, not the expected {ca_hash}: "
                            "refusing to send the join token")
        async with session.post(
            base + JOIN_PATH,
            json={"nodeName": node_name, **({"addresses": addresses} if addresses else {})},
            headers={"Authorization": f"Bearer {token}"},
            ssl=client_ssl_context(ca_pem),
        ) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError as exc:
                raise JoinError(f"POST {JOIN_PATH}: HTTP {resp.status}, not JSON") from exc
    if resp.status != 200:
        message = body.get("message") if isinstance(body, dict) else None
        raise JoinError(f"POST {JOIN_PATH}: HTTP {resp.status}: {message or repr(body)}")
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k), str) for k in ("certificate", "key", "ca")
    ):
        raise JoinError(f"POST {JOIN_PATH} answered no credential")
    log.info("joined %s as node %s", server_url, node_name)
    credential: NodeCredential = {"certificate": body["certificate"], "key": body["key"],
                                  "ca": ca_pem.decode()}
    if isinstance(body.get("servingCertificate"), str) and isinstance(body.get("servingKey"), str):
        credential["servingCertificate"] = body["servingCertificate"]
        credential["servingKey"] = body["servingKey"]
    return credential


# -- corral join -------------------------------------------------------------------------------

#: What ``corral join`` writes into its directory, for ``corral agent``'s flags.
NODE_KUBECONFIG, SERVING_CERT, SERVING_KEY, CA_FILE = (
    "node.kubeconfig", "server.crt", "server.key", "ca.crt")


def build_join_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral join",
        description="Get this node's credentials from a controller (kubeadm join's bootstrap): "
        f"writes {NODE_KUBECONFIG}, {SERVING_CERT}, {SERVING_KEY} and {CA_FILE} into --dir "
        "for `corral agent`.")
    p.add_argument("--server", required=True, help="a controller's API URL (https://...)")
    p.add_argument("--token", required=True, help="the cluster's join token")
    p.add_argument("--ca-hash", required=True, help="sha256:<hex> of the cluster CA")
    p.add_argument("--node-name", required=True)
    p.add_argument("--node-ip", action="append", default=[], metavar="ADDRESS",
                   help="an address the agent's server is reached at (repeatable)")
    p.add_argument("--dir", type=Path, default=Path("/var/lib/corral/agent"))
    return p


async def join_to_dir(args: argparse.Namespace) -> None:
    credential = await join(args.server, args.token, args.ca_hash, args.node_name,
                            args.node_ip or None)
    if "servingCertificate" not in credential:
        raise JoinError("the server answered no serving certificate")
    directory: Path = args.dir
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / CA_FILE, credential["ca"].encode(), MODE_PUBLIC)
    write_atomic(directory / SERVING_CERT, credential["servingCertificate"].encode(),
                 MODE_PUBLIC)
    write_atomic(directory / SERVING_KEY, credential["servingKey"].encode())
    write_kubeconfig(directory / NODE_KUBECONFIG, server=args.server,
                     ca_pem=credential["ca"].encode(),
                     cert_pem=credential["certificate"].encode(),
                     key_pem=credential["key"].encode(), user=f"system:node:{args.node_name}")


def join_main(argv: list[str] | None = None) -> int:
    args = build_join_parser().parse_args(argv)
    try:
        asyncio.run(join_to_dir(args))
    except (ValueError, JoinError, aiohttp.ClientError, OSError) as exc:
        sys.stderr.write(f"corral join: {exc}\n")
        return 1
    sys.stdout.write(f"joined as node {args.node_name}; credentials in {args.dir}\n")
    return 0
