"""Node join: tokens, the credential, the endpoints, and the agent's ``join`` end to end.

Flow: token format and constant-time check; ``issue_node_credential`` (what the certificate
says, 401 for a wrong token, 422 for bad names); the raw endpoints' Status answers; then
``join`` against the test API server: a good token buys a credential that authenticates as the
node, a bad one is refused, a CA that fails the pin never sees the token, and a CA body that
smuggles a second certificate does not get it trusted.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from controlplane.api.errors import ApiError
from controlplane.auth.authn import User
from controlplane.auth.join import (
    CA_PATH,
    JOIN_PATH,
    JoinError,
    issue_node_credential,
    join,
)
from controlplane.auth.pki import JOIN_TOKEN_RE, ClusterPKI, client_ssl_context, new_join_token

if TYPE_CHECKING:
    from conftest import Api


def test_new_join_tokens_have_kubeadms_format_and_differ() -> None:
    tokens = {new_join_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(JOIN_TOKEN_RE.fullmatch(t) for t in tokens)


def test_verify_join_token(pki: ClusterPKI) -> None:
    token = pki.join_token
    assert pki.verify_join_token(token)
    for wrong in ["", token[:-1], token + "x", token.upper(), new_join_token(), "é" * 23]:
        assert not pki.verify_join_token(wrong), wrong


def test_issue_node_credential(pki: ClusterPKI) -> None:
    cred = issue_node_credential(pki, pki.join_token, "worker-1.example")
    assert cred["ca"] == pki.ca_pem.decode()
    cert = x509.load_pem_x509_certificate(cred["certificate"].encode())
    assert cert.subject.rfc4514_string() == "CN=system:node:worker-1.example,O=system:nodes"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(pki.ca_cert)
    assert "PRIVATE KEY" in cred["key"]
    assert "servingCertificate" not in cred


def test_node_credential_with_addresses_has_a_serving_certificate(pki: ClusterPKI) -> None:
    cred = issue_node_credential(pki, pki.join_token, "n1", ["198.18.0.5"])
    cert = x509.load_pem_x509_certificate(cred["servingCertificate"].encode())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "198.18.0.5" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert "n1" in sans.get_values_for_type(x509.DNSName)
    cert.verify_directly_issued_by(pki.ca_cert)
    with pytest.raises(ApiError) as raised:
        issue_node_credential(pki, pki.join_token, "n1", ["not an address!"])
    assert raised.value.code == 422


def test_wrong_token_is_401(pki: ClusterPKI) -> None:
    with pytest.raises(ApiError) as raised:
        issue_node_credential(pki, new_join_token(), "n1")
    assert raised.value.code == 401


@pytest.mark.parametrize("name,says", [
    ("", "nodeName: Required value"),
    ("Node1", "a lowercase RFC 1123 subdomain"),
    ("n_1", "a lowercase RFC 1123 subdomain"),
    ("-n1", "a lowercase RFC 1123 subdomain"),
    ("n1.", "a lowercase RFC 1123 subdomain"),
    ("a" * 254, "must be no more than 253 characters"),
])
def test_bad_node_name_is_422(pki: ClusterPKI, name: str, says: str) -> None:
    with pytest.raises(ApiError) as raised:
        issue_node_credential(pki, pki.join_token, name)
    assert (raised.value.code, raised.value.reason) == (422, "Invalid")
    assert says in raised.value.message
    assert raised.value.causes[0]["field"] == "nodeName"


# -- the endpoints, raw ------------------------------------------------------------------------


async def post_join(api: Api, headers: dict[str, str], data: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(api.url + JOIN_PATH, data=data, headers=headers,
                                ssl=api.pki.client_ssl_context()) as resp:
            return resp.status, await resp.json()


@pytest.mark.parametrize("auth,body,code,says", [
    (None, b'{"nodeName": "n1"}', 401, "Unauthorized"),
    ("Bearer abcdef.0123456789abcdef", b'{"nodeName": "n1"}', 401, "Unauthorized"),
    ("Basic {token}", b'{"nodeName": "n1"}', 401, "Unauthorized"),
    ("Bearer {token}", b"{not json", 400, "not JSON"),
    ("Bearer {token}", b'["n1"]', 400, "must be a JSON object"),
    ("Bearer {token}", b"{}", 422, "nodeName: Required value"),
    ("Bearer {token}", b'{"nodeName": 7}', 422, "must be a string"),
    ("Bearer {token}", b'{"nodeName": "N1"}', 422, "RFC 1123 subdomain"),
])
async def test_join_endpoint_answers_status(
    api: Api, auth: str | None, body: bytes, code: int, says: str
) -> None:
    headers = {"Authorization": auth.format(token=api.pki.join_token)} if auth else {}
    status, answer = await post_join(api, headers, body)
    assert (status, answer["kind"], answer["code"]) == (code, "Status", code)
    assert says in answer["message"]


async def test_ca_endpoint_is_public(api: Api) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(api.url + CA_PATH, ssl=api.pki.client_ssl_context()) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/x-pem-file"
            assert await resp.read() == api.pki.ca_pem


# -- the agent side, end to end ----------------------------------------------------------------


async def test_join_buys_a_working_node_credential(api: Api) -> None:
    cred = await join(api.url, api.pki.join_token, api.pki.ca_fingerprint(), "n1")
    assert cred["ca"].encode() == api.pki.ca_pem
    ctx = client_ssl_context(cred["ca"].encode(), cred["certificate"].encode(),
                             cred["key"].encode())
    async with aiohttp.ClientSession() as session:
        async with session.get(api.url + "/whoami", ssl=ctx) as resp:
            body = await resp.json()
    assert resp.status == 200
    assert User(body["name"], tuple(body["groups"])).node_name == "n1"
    assert api.paths == [CA_PATH, JOIN_PATH, "/whoami"]
    served = await join(api.url, api.pki.join_token, api.pki.ca_fingerprint(), "n1",
                        ["127.0.0.1"])
    assert "BEGIN CERTIFICATE" in served["servingCertificate"]
    assert "PRIVATE KEY" in served["servingKey"]


async def test_join_with_a_bad_token_is_refused(api: Api) -> None:
    with pytest.raises(JoinError, match="HTTP 401: Unauthorized"):
        await join(api.url, new_join_token(), api.pki.ca_fingerprint(), "n1")


async def test_join_refuses_a_ca_that_fails_the_pin_before_sending_the_token(
    api: Api, tmp_path: Path
) -> None:
    expected = ClusterPKI.create(tmp_path / "expected").ca_fingerprint()
    with pytest.raises(JoinError, match="refusing to send the join token"):
        await join(api.url, api.pki.join_token, expected, "n1")
    assert api.paths == [CA_PATH]


async def test_join_trusts_only_the_pinned_certificate(pki: ClusterPKI, tmp_path: Path) -> None:
    """A server of another CA that serves the pinned CA first and its own after it."""
    rogue = ClusterPKI.create(tmp_path / "rogue")
    cert, key = rogue.issue_server_cert("apiserver", [])

    async def bundle(request: web.Request) -> web.Response:
        return web.Response(body=pki.ca_pem + rogue.ca_pem)

    app = web.Application()
    app.router.add_get(CA_PATH, bundle)
    app.router.add_post(JOIN_PATH, bundle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=rogue.server_ssl_context(cert, key))
        await site.start()
        url = f"https://127.0.0.1:{runner.addresses[0][1]}"
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await join(url, pki.join_token, pki.ca_fingerprint(), "n1")
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("url,ca_hash,says", [
    ("http://127.0.0.1:1", "sha256:" + "0" * 64, "must be https"),
    ("https://127.0.0.1:1", "0" * 64, "sha256:<64 hex digits>"),
    ("https://127.0.0.1:1", "sha256:" + "0" * 63, "sha256:<64 hex digits>"),
    ("https://127.0.0.1:1", "md5:" + "0" * 32, "sha256:<64 hex digits>"),
])
async def test_join_rejects_malformed_arguments(url: str, ca_hash: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        await join(url, new_join_token(), ca_hash, "n1")


async def test_join_accepts_an_upper_case_pin(api: Api) -> None:
    pin = "sha256:" + api.pki.ca_fingerprint().removeprefix("sha256:").upper()
    cred = await join(api.url + "/", api.pki.join_token, pin, "n2")
    assert ssl.PEM_cert_to_DER_cert(cred["ca"]) == ssl.PEM_cert_to_DER_cert(api.pki.ca_pem.decode())
