"""Authentication: certificate subjects, bearer headers, the static token file, then real TLS.

Flow: tables of ``getpeercert()`` dicts and of Authorization headers with the user each yields;
the token file format (Kubernetes' CSV) and its errors; which credential wins; last, requests
over a real TLS handshake on loopback to the test API server (``conftest.api``): no certificate
is a 401 Status, the admin and node certificates are their users, a certificate of another CA
never gets through the handshake, and a client that trusts another CA refuses the server.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from controlplane.auth.authn import (
    TokenAuthenticator,
    User,
    authenticate,
    bearer_token,
    user_from_cert,
)
from controlplane.auth.pki import ClusterPKI

if TYPE_CHECKING:
    from conftest import Api

AUTH = "system:authenticated"


def subject(*rdns: tuple[str, str]) -> dict[str, Any]:
    """A ``getpeercert()`` dict with one attribute per RDN, as ssl returns it."""
    return {"subject": tuple(((k, v),) for k, v in rdns)}


CERTS = [
    ("admin", subject(("organizationName", "system:masters"), ("commonName", "corral-admin")),
     User("corral-admin", ("system:masters", AUTH))),
    ("node", subject(("organizationName", "system:nodes"), ("commonName", "system:node:n1")),
     User("system:node:n1", ("system:nodes", AUTH))),
    ("no-groups", subject(("commonName", "alice")), User("alice", (AUTH,))),
    ("multi-valued-rdn", {"subject": ((("organizationName", "a"), ("organizationName", "b")),
                                      (("commonName", "bob"),))},
     User("bob", ("a", "b", AUTH))),
    ("other-attributes-ignored", subject(("countryName", "DE"), ("commonName", "carol"),
                                         ("organizationalUnitName", "x")), User("carol", (AUTH,))),
    ("no-common-name", subject(("organizationName", "system:masters")), None),
    ("empty-common-name", subject(("commonName", "")), None),
    ("no-subject", {}, None),
]


@pytest.mark.parametrize("peercert,want", [c[1:] for c in CERTS], ids=[c[0] for c in CERTS])
def test_user_from_cert(peercert: dict[str, Any], want: User | None) -> None:
    assert user_from_cert(peercert) == want


HEADERS = [
    ("Bearer abc", "abc"),
    ("bearer abc", "abc"),
    ("BEARER  abc ", "abc"),
    ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
    ("Bearer", None),
    ("Bearer ", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize("header,want", HEADERS)
def test_bearer_token(header: str | None, want: str | None) -> None:
    assert bearer_token(header) == want


USERS = [
    # (user, is_admin, node_name)
    (User("corral-admin", ("system:masters",)), True, None),
    (User("system:node:n1", ("system:nodes",)), False, "n1"),
    (User("system:node:n1", ()), False, None),  # the name alone is not a node credential
    (User("n1", ("system:nodes",)), False, None),
    (User("system:node:", ("system:nodes",)), False, None),
    (User("alice", ("ops",)), False, None),
]


@pytest.mark.parametrize("user,is_admin,node_name", USERS)
def test_user_helpers(user: User, is_admin: bool, node_name: str | None) -> None:
    assert (user.is_admin, user.node_name) == (is_admin, node_name)


def test_token_file_kubernetes_format(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text(
        'tok-admin,admin,uid-1,"system:masters,ops"\n'
        "\n"
        "tok-plain, plain, uid-2\n"
        ",nobody,uid-3\n"
        'tok-dup,first,uid-4,"a"\n'
        "tok-dup,second,uid-5,b\n"
    )
    tokens = TokenAuthenticator.from_file(path)
    assert tokens.authenticate_token("tok-admin") == User("admin", ("system:masters", "ops", AUTH))
    assert tokens.authenticate_token("tok-plain") == User("plain", (AUTH,))
    assert tokens.authenticate_token("tok-dup") == User("second", ("b", AUTH))
    assert tokens.authenticate_token("") is None
    assert tokens.authenticate_token("tok-admi") is None
    assert "line 4: empty token" in caplog.text
    assert "line 6: duplicate token" in caplog.text


@pytest.mark.parametrize("content,says", [
    ("tok,user\n", "line 1: needs at least 3 columns"),
    ("a,b,c\ntok,,uid\n", "line 2: empty user name"),
    ('tok,user,uid,"unterminated\n', "line"),
    (b"tok,us\xff,uid\n", "line"),
])
def test_token_file_errors_name_the_line(tmp_path: Path, content: str | bytes, says: str) -> None:
    path = tmp_path / "tokens.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=f"token file {path}.*{says}"):
        TokenAuthenticator.from_file(path)


def test_certificate_wins_over_token_and_join_tokens_are_no_credentials(pki: ClusterPKI) -> None:
    tokens = TokenAuthenticator({"tok": User("script", (AUTH,))})
    admin = subject(("organizationName", "system:masters"), ("commonName", "corral-admin"))
    assert authenticate(admin, "Bearer tok", tokens).name == "corral-admin"  # type: ignore[union-attr]
    assert authenticate(None, "Bearer tok", tokens) == User("script", (AUTH,))
    assert authenticate({}, "Bearer tok", tokens) == User("script", (AUTH,))
    assert authenticate(None, "Bearer tok", None) is None
    assert authenticate(None, None, tokens) is None
    assert authenticate(None, f"Bearer {pki.join_token}", tokens) is None


# -- over real TLS -----------------------------------------------------------------------------


async def whoami(api: Api, ctx: ssl.SSLContext, headers: dict[str, str] | None = None
                 ) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(api.url + "/whoami", ssl=ctx, headers=headers) as resp:
            return resp.status, await resp.json()


async def test_no_certificate_is_401_status(api: Api) -> None:
    status, body = await whoami(api, api.pki.client_ssl_context())
    assert status == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


async def test_admin_certificate(api: Api) -> None:
    ctx = api.pki.client_ssl_context(api.pki.admin_cert_pem, api.pki.admin_key_pem)
    assert await whoami(api, ctx) == (200, {"name": "corral-admin",
                                            "groups": ["system:masters", AUTH]})


async def test_node_certificate(api: Api) -> None:
    ctx = api.pki.client_ssl_context(
        *api.pki.issue_client_cert("system:node:n1", ["system:nodes"]))
    status, body = await whoami(api, ctx)
    assert status == 200
    assert User(body["name"], tuple(body["groups"])).node_name == "n1"


async def test_bearer_token_over_tls(api: Api) -> None:
    ctx = api.pki.client_ssl_context()
    status, body = await whoami(api, ctx, {"Authorization": f"Bearer {api.script_token}"})
    assert (status, body["name"]) == (200, api.script_user.name)
    status, _ = await whoami(api, ctx, {"Authorization": f"Bearer {api.pki.join_token}"})
    assert status == 401


async def test_certificate_of_another_ca_fails_the_handshake(api: Api, tmp_path: Path) -> None:
    rogue = ClusterPKI.create(tmp_path / "rogue")
    ctx = api.pki.client_ssl_context(rogue.admin_cert_pem, rogue.admin_key_pem)
    with pytest.raises(aiohttp.ClientError):
        await whoami(api, ctx)
    assert api.paths == []


async def test_client_refuses_a_server_of_another_ca(api: Api, tmp_path: Path) -> None:
    other = ClusterPKI.create(tmp_path / "other")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await whoami(api, other.client_ssl_context(other.admin_cert_pem, other.admin_key_pem))
    assert api.paths == []
