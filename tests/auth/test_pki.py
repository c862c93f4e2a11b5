"""ClusterPKI: the files create writes, load and its errors, what the CA signs, and OpenSSL's view.

Flow: files and modes; create refusing to replace a CA; load round trip; a table of damaged
directories, each with the file the error must name; atomic writes; certificate contents
(validity with an injected clock, SANs, key usages, subjects); the discovery hash against the
``openssl`` pipeline kubeadm documents; OpenSSL verifying our leaves; the TLS contexts.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import shutil
import ssl
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.auth import pki as pkimod
from controlplane.auth.pki import (
    ADMIN_CERT_FILE,
    ADMIN_KEY_FILE,
    CA_CERT_FILE,
    CA_KEY_FILE,
    JOIN_TOKEN_FILE,
    JOIN_TOKEN_RE,
    PKI_FILES,
    ClusterPKI,
    PKIError,
    discovery_hash,
    write_atomic,
)

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


def cert_of(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_create_writes_every_file_private_keys_0600(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    ClusterPKI.create(directory)
    assert sorted(p.name for p in directory.iterdir()) == sorted(PKI_FILES)
    modes = {name: stat.S_IMODE((directory / name).stat().st_mode) for name in PKI_FILES}
    assert modes == {CA_CERT_FILE: 0o644, CA_KEY_FILE: 0o600, ADMIN_CERT_FILE: 0o644,
                     ADMIN_KEY_FILE: 0o600, JOIN_TOKEN_FILE: 0o600}
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_create_refuses_to_replace_a_ca(pki: ClusterPKI) -> None:
    with pytest.raises(PKIError, match="ca.crt already exists"):
        ClusterPKI.create(pki.directory)


def test_create_overwrites_leftovers_of_a_crashed_create(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    directory.mkdir()
    (directory / CA_KEY_FILE).write_bytes(b"half a key")
    ClusterPKI.create(directory)
    ClusterPKI.load(directory)


def test_load_round_trip(pki: ClusterPKI) -> None:
    loaded = ClusterPKI.load(pki.directory)
    assert loaded.ca_pem == pki.ca_pem
    assert loaded.ca_fingerprint() == pki.ca_fingerprint()
    assert loaded.join_token == pki.join_token
    assert JOIN_TOKEN_RE.fullmatch(loaded.join_token)
    assert (loaded.admin_cert_pem, loaded.admin_key_pem) == (pki.admin_cert_pem, pki.admin_key_pem)
    # The loaded CA key signs certificates that chain to the same CA.
    cert_of(loaded.issue_client_cert("x", [])[0]).verify_directly_issued_by(pki.ca_cert)


def other_ec_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


Damage = Callable[[Path], None]


def remove(name: str) -> Damage:
    def damage(d: Path) -> None:
        (d / name).unlink()
    return damage


def overwrite(name: str, data: bytes | Callable[[Path], bytes]) -> Damage:
    def damage(d: Path) -> None:
        (d / name).write_bytes(data(d) if callable(data) else data)
    return damage


def truncate(name: str) -> Damage:
    return overwrite(name, lambda d: (d / name).read_bytes()[:100])


DAMAGED = [
    # (id, damage, the file the message names, what it says)
    ("no-ca-cert", remove(CA_CERT_FILE), CA_CERT_FILE, "is missing"),
    ("no-ca-key", remove(CA_KEY_FILE), CA_KEY_FILE, "is missing"),
    ("no-admin-cert", remove(ADMIN_CERT_FILE), ADMIN_CERT_FILE, "is missing"),
    ("no-admin-key", remove(ADMIN_KEY_FILE), ADMIN_KEY_FILE, "is missing"),
    ("no-token", remove(JOIN_TOKEN_FILE), JOIN_TOKEN_FILE, "is missing"),
    ("ca-cert-garbage", overwrite(CA_CERT_FILE, b"\x00garbage"), CA_CERT_FILE, "not a PEM certificate"),
    ("ca-cert-truncated", truncate(CA_CERT_FILE), CA_CERT_FILE, "not a PEM certificate"),
    ("ca-key-truncated", truncate(CA_KEY_FILE), CA_KEY_FILE, "not an unencrypted PEM private key"),
    ("ca-key-empty", overwrite(CA_KEY_FILE, b""), CA_KEY_FILE, "not an unencrypted PEM private key"),
    ("ca-key-of-another-ca", overwrite(CA_KEY_FILE, lambda d: other_ec_key_pem()), CA_KEY_FILE,
     "does not belong to the certificate"),
    ("admin-key-of-another", overwrite(ADMIN_KEY_FILE, lambda d: other_ec_key_pem()),
     ADMIN_KEY_FILE, "does not belong to the certificate"),
    ("ca-cert-is-a-leaf", overwrite(CA_CERT_FILE, lambda d: (d / ADMIN_CERT_FILE).read_bytes()),
     CA_CERT_FILE, "not a CA certificate"),
    ("token-garbage", overwrite(JOIN_TOKEN_FILE, b"not-a-token\n"), JOIN_TOKEN_FILE,
     "does not hold a join token"),
]


@pytest.mark.parametrize("damage,file,says", [d[1:] for d in DAMAGED], ids=[d[0] for d in DAMAGED])
def test_load_names_the_damaged_file(pki: ClusterPKI, damage: Damage, file: str, says: str) -> None:
    damage(pki.directory)
    with pytest.raises(PKIError) as raised:
        ClusterPKI.load(pki.directory)
    assert str(pki.directory / file) in str(raised.value)
    assert says in str(raised.value)


def test_load_of_a_directory_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(PKIError, match="ca.crt is missing"):
        ClusterPKI.load(tmp_path / "nothing")


def test_write_atomic_replaces_whole_and_leaves_nothing_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file"
    write_atomic(target, b"old", 0o640)
    assert target.read_bytes() == b"old"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640

    def crash(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_validity_from_the_injected_clock(tmp_path: Path) -> None:
    pki = ClusterPKI.create(tmp_path / "pki", now=lambda: T0)
    start = T0 - pkimod.CLOCK_SKEW
    assert pki.ca_cert.not_valid_before_utc == start
    assert pki.ca_cert.not_valid_after_utc == start + datetime.timedelta(days=3650)
    admin = cert_of(pki.admin_cert_pem)
    assert admin.not_valid_before_utc == start
    assert admin.not_valid_after_utc == start + datetime.timedelta(days=365)


def test_a_leaf_never_outlives_the_ca(tmp_path: Path) -> None:
    now = [T0]
    pki = ClusterPKI.create(tmp_path / "pki", now=lambda: now[0])
    now[0] = T0 + datetime.timedelta(days=3600)
    leaf = cert_of(pki.issue_client_cert("late", [])[0])
    assert leaf.not_valid_after_utc == pki.ca_cert.not_valid_after_utc


def test_ca_is_ec_p256_and_a_ca(pki: ClusterPKI) -> None:
    key = pki.ca_cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    constraints = pki.ca_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = pki.ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert pki.ca_cert.subject.rfc4514_string() == "O=corral,CN=corral-ca"


def test_server_cert_sans_always_include_loopback(pki: ClusterPKI) -> None:
    cert_pem, key_pem = pki.issue_server_cert(
        "apiserver", ["10.0.0.5", "Node1.Example.com", "::1", "localhost", "10.0.0.5"])
    cert = cert_of(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("::1"),
        ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["node1.example.com", "localhost"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "apiserver"
    cert.verify_directly_issued_by(pki.ca_cert)
    assert serialization.load_pem_private_key(key_pem, None).public_key() == cert.public_key()


def test_server_cert_without_extra_hosts(pki: ClusterPKI) -> None:
    san = cert_of(pki.issue_server_cert("s", [])[0]).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert [str(v) for v in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


@pytest.mark.parametrize("host", ["bad host", "", "-leading.dash", "a..b", "x" * 254])
def test_server_cert_rejects_bad_hosts(pki: ClusterPKI, host: str) -> None:
    with pytest.raises(ValueError, match="neither an IP address nor a DNS name"):
        pki.issue_server_cert("s", [host])


def test_client_cert_subject_and_usage(pki: ClusterPKI) -> None:
    cert = cert_of(pki.issue_client_cert("system:node:n1", ["system:nodes", "extra"])[0])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:nodes", "extra"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    admin = cert_of(pki.admin_cert_pem)
    assert admin.subject.rfc4514_string() == "CN=corral-admin,O=system:masters"


def test_discovery_hash_is_the_spki_sha256(pki: ClusterPKI) -> None:
    spki = pki.ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pki.ca_fingerprint() == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert discovery_hash(pki.ca_pem) == pki.ca_fingerprint()


def openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        pytest.skip("openssl is not installed")
    return found


def test_discovery_hash_matches_kubeadms_openssl_recipe(pki: ClusterPKI) -> None:
    pub = subprocess.run([openssl(), "x509", "-pubkey", "-noout", "-in",
                          str(pki.directory / CA_CERT_FILE)],
                         check=True, capture_output=True).stdout
    der = subprocess.run([openssl(), "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True).stdout
    assert pki.ca_fingerprint() == "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("purpose", ["sslserver", "sslclient"])
def test_openssl_verifies_our_leaves(pki: ClusterPKI, tmp_path: Path, purpose: str) -> None:
    if purpose == "sslserver":
        leaf = pki.issue_server_cert("apiserver", ["10.1.2.3"])[0]
    else:
        leaf = pki.issue_client_cert("system:node:n1", ["system:nodes"])[0]
    (tmp_path / "leaf.crt").write_bytes(leaf)
    result = subprocess.run(
        [openssl(), "verify", "-x509_strict", "-purpose", purpose,
         "-CAfile", str(pki.directory / CA_CERT_FILE), str(tmp_path / "leaf.crt")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_context_requests_but_does_not_demand_client_certs(pki: ClusterPKI) -> None:
    ctx = pki.server_ssl_context(*pki.issue_server_cert("s", []))
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    client = pki.client_ssl_context()
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2


def test_mismatched_cert_and_key_are_a_clear_error(pki: ClusterPKI) -> None:
    cert, _ = pki.issue_server_cert("s", [])
    _, other_key = pki.issue_server_cert("s", [])
    with pytest.raises(PKIError, match="do not load as a pair"):
        pki.server_ssl_context(cert, other_key)
    with pytest.raises(PKIError, match="cannot read the TLS private key"):
        pki.client_ssl_context(cert, b"not a key")
