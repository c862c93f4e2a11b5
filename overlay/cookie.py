"""WireGuard's mac1/mac2 and cookie mechanism (whitepaper section 5.4.4 and 5.4.7).

Every handshake message (initiation, response) ends in two 16-byte MACs::

    ... message body ... | mac1 (16) | mac2 (16)

- ``mac1 = MAC(HASH("mac1----" || Spub_responder), msg[:len-32])``. Anyone who knows the
  responder's *public* key can compute it, so it proves nothing about identity; it exists so that
  a responder can drop packets from scanners *before* spending a Diffie-Hellman on them. The
  responder checks it on every handshake message, first.
- ``mac2 = MAC(cookie, msg[:len-16])`` (it covers mac1) or sixteen zero bytes when the sender
  holds no fresh cookie. The responder checks it only when it is under load.
- ``cookie = MAC(Rm, source)``: ``Rm`` is a random secret the responder replaces every
  ``COOKIE_REFRESH_TIME`` (two minutes) and ``source`` is the sender's IP address and UDP port.
  A sender that can receive packets at its source address can learn its cookie; a spoofer
  cannot, so under load only handshakes from real return addresses cost the responder a DH.
- A responder under load answers a message whose mac2 is missing or wrong with a *cookie reply*
  (64 bytes: type 3, three zero bytes, receiver index u32 LE, a random 24-byte nonce and the
  cookie sealed with XChaCha20-Poly1305 under ``HASH("cookie--" || Spub_responder)`` with the
  mac1 of the message being answered as additional data). Binding the reply to that mac1 means
  only the party that sent the message can use the reply, and an attacker cannot make a peer
  accept a cookie for a message it never sent.

The code follows that flow: ``CookieChecker`` is the responder side (one per device, keyed by
the local static public key), ``CookieGenerator`` is the initiator side (one per peer, keyed by
that peer's public key). Neither holds a private key nor performs any Diffie-Hellman: the
cheap, DH-free mac1 check is the whole point of the mechanism, and the constructors' signatures
make that structural. Deciding *when* the device is under load, and dropping messages, belongs
to the device loop; this module only computes and verifies.

Time and randomness are injected (``clock`` returns seconds on a monotonic scale,
``random_bytes(n)`` returns ``n`` random bytes) so that expiry and rotation are tested without
sleeping. The XChaCha20-Poly1305 seal and open are injected as well (see ``XAEADEncrypt`` and
``XAEADDecrypt``); the device passes overlay.crypto's ``XAEAD_encrypt``/``XAEAD_decrypt`` and,
as ``xaead_error``, the exception its decrypt raises on a bad tag (``CryptoError``). All MAC comparisons go
through ``hmac.compare_digest``. Keys and cookies are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import struct
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

log = logging.getLogger(__name__)

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

COOKIE_REFRESH_TIME = 120.0  # seconds: lifetime of Rm at the responder and of a cookie held by the initiator

MAC_SIZE = 16  # bytes: keyed BLAKE2s-128
KEY_SIZE = 32  # bytes: BLAKE2s-256 output, XChaCha20-Poly1305 key
COOKIE_NONCE_SIZE = 24  # bytes: XChaCha20-Poly1305 nonce
AEAD_TAG_SIZE = 16  # bytes

MESSAGE_COOKIE_REPLY_TYPE = 3
MESSAGE_COOKIE_REPLY_SIZE = 64  # bytes: 4 header + 4 receiver + 24 nonce + 16 cookie + 16 tag
_COOKIE_REPLY_HEADER = struct.Struct("<BxxxI")  # type u8, three zero bytes, receiver index u32 LE

XAEADEncrypt = Callable[[bytes, bytes, bytes, bytes], bytes]
"""``xaead_encrypt(key32, nonce24, plaintext, aad) -> ciphertext || tag16`` (XChaCha20-Poly1305)."""

XAEADDecrypt = Callable[[bytes, bytes, bytes, bytes], bytes]
"""``xaead_decrypt(key32, nonce24, ciphertext || tag16, aad) -> plaintext`` (XChaCha20-Poly1305);
raises the generator's ``xaead_error`` when authentication fails (``CryptoError`` for
overlay.crypto's ``XAEAD_decrypt``, ``cryptography.exceptions.InvalidTag`` for cryptography's AEAD
classes, the default)."""

Clock = Callable[[], float]
RandomBytes = Callable[[int], bytes]


def _hash(*parts: bytes) -> bytes:
    """HASH: unkeyed BLAKE2s-256 over the concatenation of ``parts``."""
    h = hashlib.blake2s(digest_size=KEY_SIZE)
    for part in parts:
        h.update(part)
    return h.digest()


def _mac(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """MAC: keyed BLAKE2s-128."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_SIZE).digest()


def _check_public_key(public_key: bytes) -> None:
    if len(public_key) != KEY_SIZE:
        raise ValueError(f"a Curve25519 public key is {KEY_SIZE} bytes, got {len(public_key)}")


def source_bytes(address: ipaddress.IPv4Address | ipaddress.IPv6Address | str, port: int) -> bytes:
    """The ``source`` a cookie is bound to: the packed IP address followed by the UDP port in
    network byte order (as the Linux implementation hashes it). Only the responder that made a
    cookie ever recomputes it, so the encoding is local; it only has to be the same every time."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"UDP port out of range: {port}")
    return ipaddress.ip_address(address).packed + port.to_bytes(2, "big")


class CookieChecker:
    """Responder side: verifies mac1 and mac2 of incoming handshake messages and makes cookie
    replies. One per device; built from the local static *public* key only."""

    def __init__(
        self,
        local_public_key: bytes,
        *,
        xaead_encrypt: XAEADEncrypt,
        clock: Clock = time.monotonic,
        random_bytes: RandomBytes = os.urandom,
    ) -> None:
        _check_public_key(local_public_key)
        self._mac1_key = _hash(LABEL_MAC1, local_public_key)
        self._cookie_key = _hash(LABEL_COOKIE, local_public_key)
        self._xaead_encrypt = xaead_encrypt
        self._clock = clock
        self._random_bytes = random_bytes
        # (Rm, time it was drawn), replaced as one value so readers never see a torn pair.
        self._secret: tuple[bytes, float] | None = None

    def check_mac1(self, msg: bytes | bytearray | memoryview) -> bool:
        """Whether ``msg`` (a whole handshake message) carries a valid mac1. No DH, constant-time
        comparison; call it before anything else touches the message."""
        if len(msg) < 2 * MAC_SIZE:
            return False
        view = memoryview(msg)
        smac1 = len(view) - 2 * MAC_SIZE
        expected = _mac(self._mac1_key, view[:smac1])
        return hmac.compare_digest(expected, bytes(view[smac1 : smac1 + MAC_SIZE]))

    def check_mac2(self, msg: bytes | bytearray | memoryview, source: bytes) -> bool:
        """Whether ``msg`` carries a valid mac2 for a cookie this checker issued to ``source``
        (see ``source_bytes``) under the current, unexpired secret Rm."""
        secret = self._fresh_secret()
        if secret is None or len(msg) < 2 * MAC_SIZE:
            return False
        view = memoryview(msg)
        smac2 = len(view) - MAC_SIZE
        cookie = _mac(secret, source)
        expected = _mac(cookie, view[:smac2])
        return hmac.compare_digest(expected, bytes(view[smac2:]))

    def create_reply(self, msg: bytes | bytearray | memoryview, sender_index: int, source: bytes) -> bytes:
        """A MessageCookieReply (64 bytes) answering ``msg``: addressed to ``sender_index`` (the
        sender index the message carried), the cookie for ``source`` sealed with the mac1 of
        ``msg`` as additional data. Draws a new Rm first when the current one has expired."""
        if len(msg) < 2 * MAC_SIZE:
            raise ValueError(f"a message with macs is at least {2 * MAC_SIZE} bytes, got {len(msg)}")
        if not 0 <= sender_index <= 0xFFFFFFFF:
            raise ValueError(f"sender index out of range: {sender_index}")
        secret = self._fresh_secret()
        if secret is None:
            secret = self._random_bytes(KEY_SIZE)
            self._secret = (secret, self._clock())
            log.debug("cookie secret rotated")
        view = memoryview(msg)
        smac1 = len(view) - 2 * MAC_SIZE
        mac1 = bytes(view[smac1 : smac1 + MAC_SIZE])
        cookie = _mac(secret, source)
        nonce = self._random_bytes(COOKIE_NONCE_SIZE)
        sealed = self._xaead_encrypt(self._cookie_key, nonce, cookie, mac1)
        reply = _COOKIE_REPLY_HEADER.pack(MESSAGE_COOKIE_REPLY_TYPE, sender_index) + nonce + sealed
        if len(reply) != MESSAGE_COOKIE_REPLY_SIZE:
            raise ValueError(f"xaead_encrypt returned {len(sealed)} bytes, expected {MAC_SIZE + AEAD_TAG_SIZE}")
        return reply

    def _fresh_secret(self) -> bytes | None:
        current = self._secret
        if current is None:
            return None
        secret, born = current
        if self._clock() - born >= COOKIE_REFRESH_TIME:
            return None
        return secret


def parse_cookie_reply(reply: bytes | bytearray | memoryview) -> tuple[int, bytes, bytes]:
    """``(receiver_index, nonce, sealed_cookie)`` of a MessageCookieReply; ``ValueError`` when
    ``reply`` is not one (wrong size, type or reserved bytes). The device uses the receiver index
    to find the peer whose ``CookieGenerator`` consumes the reply."""
    if len(reply) != MESSAGE_COOKIE_REPLY_SIZE:
        raise ValueError(f"a cookie reply is {MESSAGE_COOKIE_REPLY_SIZE} bytes, got {len(reply)}")
    view = memoryview(reply)
    if bytes(view[:4]) != bytes((MESSAGE_COOKIE_REPLY_TYPE, 0, 0, 0)):
        raise ValueError("not a cookie reply: bad type or reserved bytes")
    (_, receiver_index) = _COOKIE_REPLY_HEADER.unpack_from(view)
    nonce_end = _COOKIE_REPLY_HEADER.size + COOKIE_NONCE_SIZE
    return receiver_index, bytes(view[_COOKIE_REPLY_HEADER.size : nonce_end]), bytes(view[nonce_end:])


class CookieGenerator:
    """Initiator side, one per peer: writes mac1 (and mac2 while it holds a fresh cookie) into
    outgoing handshake messages and accepts the cookie replies that answer them."""

    def __init__(
        self,
        remote_public_key: bytes,
        *,
        xaead_decrypt: XAEADDecrypt,
        xaead_error: type[Exception] = InvalidTag,
        clock: Clock = time.monotonic,
    ) -> None:
        _check_public_key(remote_public_key)
        self._mac1_key = _hash(LABEL_MAC1, remote_public_key)
        self._cookie_key = _hash(LABEL_COOKIE, remote_public_key)
        self._xaead_decrypt = xaead_decrypt
        self._xaead_error = xaead_error
        self._clock = clock
        self._cookie: tuple[bytes, float] | None = None  # (cookie, time received)
        self._last_mac1: bytes | None = None  # mac1 of the last message sent, until a reply uses it

    def add_macs(self, msg: bytearray) -> None:
        """Fill the last 32 bytes of ``msg`` (a whole handshake message) with mac1 and mac2;
        mac2 is zero unless a cookie younger than ``COOKIE_REFRESH_TIME`` is held."""
        if len(msg) < 2 * MAC_SIZE:
            raise ValueError(f"a message with macs is at least {2 * MAC_SIZE} bytes, got {len(msg)}")
        smac2 = len(msg) - MAC_SIZE
        smac1 = smac2 - MAC_SIZE
        with memoryview(msg) as view:
            mac1 = _mac(self._mac1_key, view[:smac1])
            msg[smac1:smac2] = mac1
            cookie = self._fresh_cookie()
            msg[smac2:] = bytes(MAC_SIZE) if cookie is None else _mac(cookie, view[:smac2])
        self._last_mac1 = mac1

    def consume_reply(self, reply: bytes | bytearray | memoryview) -> bool:
        """Accept the cookie in ``reply`` if it answers the last message this generator sent;
        ``False`` (and no change) for anything else: malformed, forged, or for a message never
        sent. A message's mac1 unlocks one reply only."""
        try:
            _, nonce, sealed = parse_cookie_reply(reply)
        except ValueError as exc:
            log.debug("cookie reply dropped: %s", exc)
            return False
        last_mac1 = self._last_mac1
        if last_mac1 is None:
            log.debug("cookie reply dropped: no handshake message sent")
            return False
        try:
            cookie = self._xaead_decrypt(self._cookie_key, nonce, sealed, last_mac1)
        except self._xaead_error:
            log.debug("cookie reply dropped: does not authenticate against the last mac1 sent")
            return False
        if len(cookie) != MAC_SIZE:
            log.debug("cookie reply dropped: cookie of %d bytes", len(cookie))
            return False
        self._cookie = (cookie, self._clock())
        self._last_mac1 = None
        return True

    def _fresh_cookie(self) -> bytes | None:
        current = self._cookie
        if current is None:
            return None
        cookie, received = current
        if self._clock() - received >= COOKIE_REFRESH_TIME:
            return None
        return cookie
