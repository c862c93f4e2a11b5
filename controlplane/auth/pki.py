"""The cluster's certificate authority and the TLS contexts built on it.

Flow: ``ClusterPKI.create`` runs once, at cluster creation: it makes an EC P-256 CA (ECDSA:
Go's crypto/tls, used by kubectl, and OpenSSL both take it), the join token that node agents
present, and the admin client certificate that goes into the kubeconfig; every file is written
atomically (``write_atomic``), ``ca.crt`` last, so a crash mid-create leaves no CA that looks
complete. ``ClusterPKI.load`` reads the same directory on every later start and names the file
at fault when one is missing or corrupt. The loaded CA then signs leaves: ``issue_server_cert``
for the API server, ``issue_client_cert`` for admins and nodes (identity = subject CN, groups =
subject O, as Kubernetes' x509 authenticator reads them). Last come the ``ssl`` contexts: the
server asks for a client certificate but does not demand one, so that a client without one still
completes the handshake and gets a 401 Status instead of a TLS alert.

Files of the directory (``PKI_FILES``): ``ca.crt``, ``ca.key``, ``admin.crt``, ``admin.key``,
``join-token``; keys and the token are mode 0600, certificates 0644, the directory 0700.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
ADMIN_CERT_FILE = "admin.crt"
ADMIN_KEY_FILE = "admin.key"
JOIN_TOKEN_FILE = "join-token"
PKI_FILES = (CA_CERT_FILE, CA_KEY_FILE, ADMIN_CERT_FILE, ADMIN_KEY_FILE, JOIN_TOKEN_FILE)

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
#: notBefore is set this far in the past so that a host whose clock lags still accepts a
#: certificate issued a moment ago.
CLOCK_SKEW = datetime.timedelta(minutes=5)

ADMIN_USER = "corral-admin"
MASTERS_GROUP = "system:masters"
#: Always in a server certificate: local clients (``corral up``, tests) connect to these.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

#: kubeadm's bootstrap token format: ``<token id>.<token secret>``.
JOIN_TOKEN_RE = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_HOSTNAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

MODE_SECRET = 0o600
MODE_PUBLIC = 0o644
MODE_DIR = 0o700


class PKIError(Exception):
    """Key material cannot be used as it is; the message names the file or input at fault."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def write_atomic(path: Path | str, data: bytes, mode: int = MODE_SECRET) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new, never a part.

    The temporary file is created 0600 (mkstemp) in the same directory, so secrets are never
    readable by others, even for a moment; it is fsynced before the rename and the directory
    after, so the new content survives a crash once this returns.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def new_join_token() -> str:
    """A fresh join token (about 83 bits of secret after the public id)."""
    return f"{_random_string(6)}.{_random_string(16)}"


def _random_string(length: int) -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))


def discovery_hash(cert_pem: bytes) -> str:
    """kubeadm's CA pin: ``sha256:<hex>`` of the certificate's DER SubjectPublicKeyInfo.

    kubeadm hashes the public key rather than the whole certificate, so that re-signing the CA
    with the same key keeps every agent's pin valid.
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    return "sha256:" + hashlib.sha256(_spki(cert.public_key())).hexdigest()


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """ECDSA keys sign (TLS handshakes); only the CA's also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=signs_certificates,
        crl_sign=signs_certificates, encipher_only=False, decipher_only=False,
    )


def _san(host: str) -> x509.GeneralName:
    """An IP address SAN for an address, else a DNS name SAN (checked, lower-cased)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if len(name) > 253 or not _HOSTNAME_RE.fullmatch(name):
        raise ValueError(f"server certificate host {host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name)


def _load_cert_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate and key from memory into ``ctx``.

    ``ssl`` reads them only from files. They go to a fresh 0700 directory that is removed
    right after, and the key is written encrypted under a one-time random password, so the
    plain key never touches the disk.
    """
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PKIError(f"cannot read the TLS private key: {exc}") from exc
    password = secrets.token_bytes(32)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="corral-tls-") as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        write_atomic(cert_path, cert_pem)
        write_atomic(key_path, encrypted)
        try:
            ctx.load_cert_chain(cert_path, key_path, password=password)
        except ssl.SSLError as exc:
            raise PKIError(f"the TLS certificate and key do not load as a pair: {exc}") from exc


def client_ssl_context(
    ca_pem: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> ssl.SSLContext:
    """A client context that trusts only ``ca_pem`` and checks the host name, TLS 1.2+;
    it presents ``cert_pem``/``key_pem`` when given (our own tools and tests)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode("ascii"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_pem is not None and key_pem is not None:
        _load_cert_chain(ctx, cert_pem, key_pem)
    return ctx


class ClusterPKI:
    """The CA of one cluster, the join token and the admin credential, over a directory."""

    def __init__(
        self,
        directory: Path,
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        join_token: str,
        admin_cert_pem: bytes,
        admin_key_pem: bytes,
        now: Clock,
    ) -> None:
        self.directory = directory
        self.ca_cert = ca_cert
        self._ca_key = ca_key
        self.join_token = join_token
        self.admin_cert_pem = admin_cert_pem
        self.admin_key_pem = admin_key_pem
        self._now = now

    # -- create and load ------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: Path | str, *, cluster_name: str = "corral", now: Clock | None = None
    ) -> ClusterPKI:
        """Make the CA, the join token and the admin credential in ``directory``.

        Refuses (PKIError) when ``ca.crt`` is already there: replacing a CA silently would lock
        out every node and kubeconfig. Leftovers of a create that crashed before writing
        ``ca.crt`` are overwritten.
        """
        if not cluster_name:
            raise ValueError("cluster_name must not be empty")
        directory = Path(directory)
        clock = now or _utcnow
        if (directory / CA_CERT_FILE).exists():
            raise PKIError(f"{directory / CA_CERT_FILE} already exists: the cluster has a CA; "
                           "load it instead of creating a new one")
        directory.mkdir(mode=MODE_DIR, parents=True, exist_ok=True)
        os.chmod(directory, MODE_DIR)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        start = clock() - CLOCK_SKEW
        name = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster_name}-ca"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name),
        ])
        ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signs_certificates=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        token = new_join_token()
        pki = cls(directory, ca_cert, ca_key, token, b"", b"", clock)
        pki.admin_cert_pem, pki.admin_key_pem = pki.issue_client_cert(ADMIN_USER, [MASTERS_GROUP])

        write_atomic(directory / CA_KEY_FILE, _key_pem(ca_key), MODE_SECRET)
        write_atomic(directory / JOIN_TOKEN_FILE, token.encode() + b"\n", MODE_SECRET)
        write_atomic(directory / ADMIN_KEY_FILE, pki.admin_key_pem, MODE_SECRET)
        write_atomic(directory / ADMIN_CERT_FILE, pki.admin_cert_pem, MODE_PUBLIC)
        write_atomic(directory / CA_CERT_FILE, _cert_pem(ca_cert), MODE_PUBLIC)
        log.info("created cluster CA in %s (%s)", directory, pki.ca_fingerprint())
        return pki

    @classmethod
    def load(cls, directory: Path | str, *, now: Clock | None = None) -> ClusterPKI:
        """Read a directory written by ``create``; PKIError names the missing or bad file."""
        directory = Path(directory)

        def read(name: str) -> bytes:
            try:
                return (directory / name).read_bytes()
            except FileNotFoundError:
                raise PKIError(f"{directory / name} is missing: is {directory} the PKI "
                               "directory written at cluster creation?") from None
            except OSError as exc:
                raise PKIError(f"cannot read {directory / name}: {exc.strerror}") from exc

        def cert(name: str) -> x509.Certificate:
            try:
                return x509.load_pem_x509_certificate(read(name))
            except ValueError as exc:
                raise PKIError(f"{directory / name} is not a PEM certificate: {exc}") from exc

        def key(name: str, for_cert: x509.Certificate) -> ec.EllipticCurvePrivateKey:
            try:
                loaded = serialization.load_pem_private_key(read(name), password=None)
            except (ValueError, TypeError) as exc:
                raise PKIError(f"{directory / name} is not an unencrypted PEM private key: "
                               f"{exc}") from exc
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise PKIError(f"{directory / name} is not an EC private key")
            if _spki(loaded.public_key()) != _spki(for_cert.public_key()):
                raise PKIError(f"{directory / name} does not belong to the certificate "
                               f"{directory / name.replace('.key', '.crt')}")
            return loaded

        ca_cert = cert(CA_CERT_FILE)
        try:
            is_ca = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise PKIError(f"{directory / CA_CERT_FILE} is not a CA certificate")
        ca_key = key(CA_KEY_FILE, ca_cert)
        admin_cert = cert(ADMIN_CERT_FILE)
        key(ADMIN_KEY_FILE, admin_cert)
        token = read(JOIN_TOKEN_FILE).decode("ascii", "replace").strip()
        if not JOIN_TOKEN_RE.fullmatch(token):
            raise PKIError(f"{directory / JOIN_TOKEN_FILE} does not hold a join token "
                           f"of the form {JOIN_TOKEN_RE.pattern}")
        return cls(directory, ca_cert, ca_key, token, read(ADMIN_CERT_FILE),
                   read(ADMIN_KEY_FILE), now or _utcnow)

    # -- what the CA is and signs -----------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        return _cert_pem(self.ca_cert)

    def ca_fingerprint(self) -> str:
        """The ``sha256:<hex>`` pin that agents are given to trust this CA (``discovery_hash``)."""
        return discovery_hash(self.ca_pem)

    def verify_join_token(self, presented: str) -> bool:
        """Whether ``presented`` is this cluster's join token, compared in constant time."""
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self.join_token.encode())

    def issue_server_cert(self, name: str, hosts: list[str]) -> tuple[bytes, bytes]:
        """A serving certificate for ``hosts`` (IPs and DNS names) plus 127.0.0.1 and localhost."""
        sans: list[x509.GeneralName] = []
        for host in [*hosts, *LOOPBACK_HOSTS]:
            san = _san(host)
            if san not in sans:
                sans.append(san)
        return self._issue(name, [], ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def issue_client_cert(self, common_name: str, organizations: list[str]) -> tuple[bytes, bytes]:
        """A client certificate: the API server reads CN as the user and each O as a group."""
        return self._issue(common_name, organizations, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def _issue(
        self,
        common_name: str,
        organizations: list[str],
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName],
    ) -> tuple[bytes, bytes]:
        if not common_name:
            raise ValueError("a certificate needs a common name")
        key = ec.generate_private_key(ec.SECP256R1())
        start = self._now() - CLOCK_SKEW
        # A leaf must not outlive the CA that vouches for it.
        end = min(start + LEAF_VALIDITY, self.ca_cert.not_valid_after_utc)
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
            + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(signs_certificates=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return _cert_pem(cert), _key_pem(key)

    # -- TLS contexts --------------------------------------------------------------------------

    def server_ssl_context(self, cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
        """The API server's context: TLS 1.2+, client certificates asked for, checked against
        the CA when sent, but optional, so that a request without one can be answered 401."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_cert_chain(ctx, cert_pem, key_pem)
        ctx.load_verify_locations(cadata=self.ca_pem.decode("ascii"))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def client_ssl_context(
        self, cert_pem: bytes | None = None, key_pem: bytes | None = None
    ) -> ssl.SSLContext:
        """A client context trusting this CA (see the module-level ``client_ssl_context``)."""
        return client_ssl_context(self.ca_pem, cert_pem, key_pem)
