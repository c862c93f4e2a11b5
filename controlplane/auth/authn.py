"""Authentication: who sent this request.

Flow: the API server hands ``authenticate`` what it knows about a request: the client
certificate that the TLS handshake verified against the cluster CA, and the Authorization
header. As in Kubernetes, the certificate wins: its subject CN is the user name and each O a
group (``user_from_cert``). Without one, a bearer token is looked up in the static token table
(``TokenAuthenticator``, Kubernetes' ``--token-auth-file`` format), meant for scripts. Anything
else is anonymous, and the server answers 401: anonymous access is off. Every authenticated user
also gets the ``system:authenticated`` group, as in Kubernetes.

Join tokens are not API credentials: they are only accepted by the join endpoint (``join``).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MASTERS_GROUP = "system:masters"
NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
AUTHENTICATED_GROUP = "system:authenticated"

#: ``ssl.SSLSocket.getpeercert()`` attribute names for the subject fields we read.
_CN = "commonName"
_O = "organizationName"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return MASTERS_GROUP in self.groups

    @property
    def node_name(self) -> str | None:
        """The node this credential belongs to: user ``system:node:<name>`` in ``system:nodes``."""
        if NODES_GROUP in self.groups and self.name.startswith(NODE_USER_PREFIX):
            return self.name[len(NODE_USER_PREFIX):] or None
        return None


def _authenticated(name: str, groups: list[str]) -> User:
    unique = list(dict.fromkeys(g for g in groups if g))
    if AUTHENTICATED_GROUP not in unique:
        unique.append(AUTHENTICATED_GROUP)
    return User(name, tuple(unique))


def user_from_cert(peercert: Mapping[str, Any]) -> User | None:
    """The user of a verified client certificate, in ``getpeercert()`` dict form.

    A certificate without a common name authenticates nobody (Kubernetes does the same).
    """
    names: list[str] = []
    groups: list[str] = []
    for rdn in peercert.get("subject", ()):
        for attr, value in rdn:
            if attr == _CN:
                names.append(value)
            elif attr == _O:
                groups.append(value)
    if not names or not names[-1]:
        return None
    return _authenticated(names[-1], groups)


class TokenAuthenticator:
    """A static table of bearer tokens, compared in constant time."""

    def __init__(self, users: Mapping[str, User]) -> None:
        # Keyed by SHA-256 so every comparison is over equal lengths and leaks no token length.
        self._table = [(hashlib.sha256(t.encode()).digest(), u) for t, u in users.items() if t]

    @classmethod
    def from_file(cls, path: Path | str) -> TokenAuthenticator:
        """Read Kubernetes' static token file: CSV lines ``token,user,uid[,"group1,group2"]``.

        As kube-apiserver does, an empty token is skipped with a warning and a repeated token
        keeps its last line; a line with fewer than 3 columns or no user name is an error. The
        uid column is read and not used.
        """
        users: dict[str, User] = {}
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, skipinitialspace=True, strict=True)
            try:
                records = [(reader.line_num, r) for r in reader if r]
            except (csv.Error, UnicodeDecodeError) as exc:
                raise ValueError(f"token file {path}, line {reader.line_num}: {exc}") from exc
        for line, record in records:
            where = f"token file {path}, line {line}"
            if len(record) < 3:
                raise ValueError(f"{where}: needs at least 3 columns (token, user name, "
                                 f"user uid), found {len(record)}")
            token, name = record[0], record[1]
            if not token:
                log.warning("%s: empty token, line ignored", where)
                continue
            if not name:
                raise ValueError(f"{where}: empty user name")
            if token in users:
                log.warning("%s: duplicate token, the later line wins", where)
            groups = record[3].split(",") if len(record) > 3 else []
            users[token] = _authenticated(name, groups)
        return cls(users)

    def authenticate_token(self, token: str) -> User | None:
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found: User | None = None
        for known, user in self._table:  # no early exit: the time does not depend on the match
            if hmac.compare_digest(digest, known):
                found = user
        return found


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def authenticate(
    peercert: Mapping[str, Any] | None,
    authorization_header: str | None,
    tokens: TokenAuthenticator | None,
) -> User | None:
    """The user behind a request, or None for anonymous (answered 401)."""
    if peercert:
        user = user_from_cert(peercert)
        if user is not None:
            return user
    token = bearer_token(authorization_header)
    if token is not None and tokens is not None:
        return tokens.authenticate_token(token)
    return None
