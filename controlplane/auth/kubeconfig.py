"""The kubeconfig file: how kubectl, the kubernetes Python client and our own tools find the
cluster and prove who they are.

Flow: ``write_kubeconfig`` writes one cluster, one user and one context, with the CA, the client
certificate and its key inline (``*-data``, base64), so the file is self-contained; it is written
0600 and atomically, as it holds a private key. ``load_kubeconfig`` reads the current context
back (inline data or file paths, relative to the kubeconfig, as kubectl resolves them) into a
``KubeConfig`` from which our own clients build their TLS context.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .pki import MODE_DIR, MODE_SECRET, client_ssl_context, write_atomic


class KubeConfigError(ValueError):
    """The kubeconfig cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class KubeConfig:
    server: str
    ca: bytes
    cert: bytes
    key: bytes

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the cluster CA and presenting this user's certificate."""
        return client_ssl_context(self.ca, self.cert, self.key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(
    path: Path | str,
    *,
    server: str,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    user: str = "admin",
    cluster: str = "corral",
    context: str = "corral",
) -> None:
    """Write a self-contained kubeconfig for ``server``, replacing ``path`` whole."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    path = Path(path)
    path.parent.mkdir(mode=MODE_DIR, parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(doc, sort_keys=False).encode(), MODE_SECRET)


def load_kubeconfig(path: Path | str, context: str | None = None) -> KubeConfig:
    """Read ``context`` (default: the current context) of a kubeconfig with client certificates."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise KubeConfigError(f"kubeconfig {path} is not YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise KubeConfigError(f"kubeconfig {path} is not a mapping")

    def fail(message: str) -> KubeConfigError:
        return KubeConfigError(f"kubeconfig {path}: {message}")

    def entry(section: str, name: str) -> dict[str, Any]:
        for item in doc.get(section) or []:
            if isinstance(item, dict) and item.get("name") == name:
                body = item.get(section[:-1])
                if isinstance(body, dict):
                    return body
        raise fail(f"no {section[:-1]} named {name!r}")

    def material(body: dict[str, Any], field: str, where: str) -> bytes:
        data = body.get(f"{field}-data")
        if isinstance(data, str) and data:
            try:
                return base64.b64decode(data, validate=True)
            except binascii.Error as exc:
                raise fail(f"{where}: {field}-data is not base64: {exc}") from exc
        file = body.get(field)
        if isinstance(file, str) and file:
            try:
                return (path.parent / Path(file).expanduser()).read_bytes()
            except OSError as exc:
                raise fail(f"{where}: cannot read {field} {file}: {exc.strerror}") from exc
        raise fail(f"{where}: neither {field}-data nor {field} is set")

    name = context or doc.get("current-context")
    if not name:
        raise fail("no current-context")
    ctx = entry("contexts", name)
    cluster = entry("clusters", ctx.get("cluster", ""))
    user = entry("users", ctx.get("user", ""))
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise fail(f"cluster {ctx.get('cluster')!r} has no server")
    cluster_where, user_where = f"cluster {ctx.get('cluster')!r}", f"user {ctx.get('user')!r}"
    return KubeConfig(
        server=server,
        ca=material(cluster, "certificate-authority", cluster_where),
        cert=material(user, "client-certificate", user_where),
        key=material(user, "client-key", user_where),
    )
