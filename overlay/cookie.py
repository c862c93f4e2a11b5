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
sleeping. The primitives come from ``overlay.crypto`` (``HASH``, ``MAC``, XChaCha20-Poly1305 as
``XAEAD_encrypt``/``XAEAD_decrypt``, ``constant_time_equal`` for every MAC comparison) and the
reply's wire format from ``overlay.messages`` (``MessageCookieReply``); of ``overlay.crypto``
this module imports nothing that could do a Diffie-Hellman. Handshake messages are handled as
raw bytes (mac1 at ``len - 32``, mac2 at ``len - 16``) so that the device can check mac1 before
it parses anything. Keys and cookies are never logged.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable

from overlay.crypto import (
    HASH,
    KEY_LEN,
    MAC,
    MAC_LEN,
    XNONCE_LEN,
    CryptoError,
    XAEAD_decrypt,
    XAEAD_encrypt,
    constant_time_equal,
)
from overlay.messages import MessageCookieReply, MessageError

log = logging.getLogger(__name__)

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

COOKIE_REFRESH_TIME = 120.0  # seconds: lifetime of Rm at the responder and of a cookie held by the initiator

Clock = Callable[[], float]
RandomBytes = Callable[[int], bytes]


def _check_public_key(public_key: bytes) -> None:
    if len(public_key) != KEY_LEN:
        raise ValueError(f"a Curve25519 public key is {KEY_LEN} bytes, got {len(public_key)}")


def _unexpired(held: tuple[bytes, float] | None, now: float) -> bytes | None:
    """The value of a ``(value, time obtained)`` pair (Rm, or a received cookie) while it is
    younger than ``COOKIE_REFRESH_TIME``, else ``None``."""
    if held is None:
        return None
    value, obtained = held
    if now - obtained >= COOKIE_REFRESH_TIME:
        return None
    return value


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
        clock: Clock = time.monotonic,
        random_bytes: RandomBytes = os.urandom,
    ) -> None:
        _check_public_key(local_public_key)
        self._mac1_key = HASH(LABEL_MAC1 + local_public_key)
        self._cookie_key = HASH(LABEL_COOKIE + local_public_key)
        self._clock = clock
        self._random_bytes = random_bytes
        # (Rm, time it was drawn), replaced as one value so readers never see a torn pair.
        self._secret: tuple[bytes, float] | None = None

    def check_mac1(self, msg: bytes | bytearray | memoryview) -> bool:
        """Whether ``msg`` (a whole handshake message) carries a valid mac1. No DH, constant-time
        comparison; call it before anything else touches the message."""
        if len(msg) < 2 * MAC_LEN:
            return False
        view = memoryview(msg)
        smac1 = len(view) - 2 * MAC_LEN
        expected = MAC(self._mac1_key, view[:smac1])
        return constant_time_equal(expected, bytes(view[smac1 : smac1 + MAC_LEN]))

    def check_mac2(self, msg: bytes | bytearray | memoryview, source: bytes) -> bool:
        """Whether ``msg`` carries a valid mac2 for a cookie this checker issued to ``source``
        (see ``source_bytes``) under the current, unexpired secret Rm."""
        secret = self._fresh_secret()
        if secret is None or len(msg) < 2 * MAC_LEN:
            return False
        view = memoryview(msg)
        smac2 = len(view) - MAC_LEN
        cookie = MAC(secret, source)
        expected = MAC(cookie, view[:smac2])
        return constant_time_equal(expected, bytes(view[smac2:]))

    def create_reply(self, msg: bytes | bytearray | memoryview, sender_index: int, source: bytes) -> bytes:
        """A MessageCookieReply (64 bytes, packed) answering ``msg``: addressed to
        ``sender_index`` (the sender index the message carried), the cookie for ``source`` sealed
        with the mac1 of ``msg`` as additional data. Draws a new Rm first when the current one
        has expired. ``ValueError`` for a message too short to carry macs or an index that is
        not 32-bit (``MessageError``)."""
        if len(msg) < 2 * MAC_LEN:
            raise ValueError(f"a message with macs is at least {2 * MAC_LEN} bytes, got {len(msg)}")
        secret = self._fresh_secret()
        if secret is None:
            secret = self._random_bytes(KEY_LEN)
            self._secret = (secret, self._clock())
            log.debug("cookie secret rotated")
        view = memoryview(msg)
        smac1 = len(view) - 2 * MAC_LEN
        mac1 = bytes(view[smac1 : smac1 + MAC_LEN])
        cookie = MAC(secret, source)
        nonce = self._random_bytes(XNONCE_LEN)
        sealed = XAEAD_encrypt(self._cookie_key, nonce, cookie, mac1)
        return MessageCookieReply(sender_index, nonce, sealed).pack()

    def _fresh_secret(self) -> bytes | None:
        return _unexpired(self._secret, self._clock())


class CookieGenerator:
    """Initiator side, one per peer: writes mac1 (and mac2 while it holds a fresh cookie) into
    outgoing handshake messages and accepts the cookie replies that answer them."""

    def __init__(
        self,
        remote_public_key: bytes,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        _check_public_key(remote_public_key)
        self._mac1_key = HASH(LABEL_MAC1 + remote_public_key)
        self._cookie_key = HASH(LABEL_COOKIE + remote_public_key)
        self._clock = clock
        self._cookie: tuple[bytes, float] | None = None  # (cookie, time received)
        self._last_mac1: bytes | None = None  # mac1 of the last message sent, until a reply uses it

    def add_macs(self, msg: bytearray) -> None:
        """Fill the last 32 bytes of ``msg`` (a whole handshake message) with mac1 and mac2;
        mac2 is zero unless a cookie younger than ``COOKIE_REFRESH_TIME`` is held."""
        if len(msg) < 2 * MAC_LEN:
            raise ValueError(f"a message with macs is at least {2 * MAC_LEN} bytes, got {len(msg)}")
        smac2 = len(msg) - MAC_LEN
        smac1 = smac2 - MAC_LEN
        with memoryview(msg) as view:
            mac1 = MAC(self._mac1_key, view[:smac1])
            msg[smac1:smac2] = mac1
            cookie = self._fresh_cookie()
            msg[smac2:] = bytes(MAC_LEN) if cookie is None else MAC(cookie, view[:smac2])
        self._last_mac1 = mac1

    def consume_reply(self, reply: bytes | bytearray | memoryview) -> bool:
        """Accept the cookie in ``reply`` if it answers the last message this generator sent;
        ``False`` (and no change) for anything else: malformed, forged, or for a message never
        sent. A message's mac1 unlocks one reply only."""
        try:
            message = MessageCookieReply.unpack(reply)
        except MessageError as exc:
            log.debug("cookie reply dropped: %s", exc)
            return False
        last_mac1 = self._last_mac1
        if last_mac1 is None:
            log.debug("cookie reply dropped: no handshake message sent")
            return False
        try:
            cookie = XAEAD_decrypt(self._cookie_key, message.nonce, message.encrypted_cookie, last_mac1)
        except CryptoError:
            log.debug("cookie reply dropped: does not authenticate against the last mac1 sent")
            return False
        self._cookie = (cookie, self._clock())
        self._last_mac1 = None
        return True

    def _fresh_cookie(self) -> bytes | None:
        return _unexpired(self._cookie, self._clock())
