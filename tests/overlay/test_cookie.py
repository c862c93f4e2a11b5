"""overlay.cookie: mac1/mac2, cookie replies, expiry and secret rotation.

Replies are sealed and opened with overlay.crypto's real XChaCha20-Poly1305 and laid out by
overlay.messages' ``MessageCookieReply``; only the clock and the randomness are fakes. The
expected values are recomputed from the whitepaper's formulas with hashlib.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import ipaddress

import pytest

from overlay import cookie
from overlay.cookie import (
    COOKIE_REFRESH_TIME,
    CookieChecker,
    CookieGenerator,
    source_bytes,
)
from overlay.crypto import XAEAD_decrypt
from overlay.messages import MESSAGE_COOKIE_REPLY_SIZE, MessageCookieReply

RESPONDER_PUBLIC = bytes(range(32))
SOURCE = source_bytes("198.18.0.2", 51820)
INITIATION_SIZE = 148
RESPONSE_SIZE = 92


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingRandom:
    """Deterministic randomness: distinct bytes on every call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return hashlib.blake2s(self.calls.to_bytes(4, "little"), digest_size=32).digest()[:n].ljust(n, b"\x01")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def checker(clock: FakeClock) -> CookieChecker:
    return CookieChecker(RESPONDER_PUBLIC, clock=clock, random_bytes=CountingRandom())


@pytest.fixture
def generator(clock: FakeClock) -> CookieGenerator:
    return CookieGenerator(RESPONDER_PUBLIC, clock=clock)


def _message(size: int = INITIATION_SIZE, fill: int = 0x5A) -> bytearray:
    msg = bytearray([fill]) * size
    msg[:4] = bytes((1, 0, 0, 0))
    return msg


def _signed(generator: CookieGenerator, size: int = INITIATION_SIZE, fill: int = 0x5A) -> bytes:
    msg = _message(size, fill)
    generator.add_macs(msg)
    return bytes(msg)


def _get_cookie(checker: CookieChecker, generator: CookieGenerator, source: bytes = SOURCE) -> None:
    msg = _signed(generator)
    assert generator.consume_reply(checker.create_reply(msg, 7, source))


# --- mac1 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [INITIATION_SIZE, RESPONSE_SIZE])
def test_mac1_written_by_generator_is_accepted(checker: CookieChecker, generator: CookieGenerator, size: int) -> None:
    msg = _signed(generator, size)
    assert checker.check_mac1(msg)
    assert checker.check_mac1(bytearray(msg))
    assert checker.check_mac1(memoryview(msg))
    assert msg[-16:] == bytes(16)  # no cookie held: mac2 is zero


def test_mac1_is_the_whitepaper_formula(generator: CookieGenerator) -> None:
    msg = _signed(generator)
    key = hashlib.blake2s(b"mac1----" + RESPONDER_PUBLIC).digest()
    assert msg[-32:-16] == hashlib.blake2s(msg[:-32], key=key, digest_size=16).digest()


def test_mac1_for_another_responder_is_rejected(checker: CookieChecker, clock: FakeClock) -> None:
    other = CookieGenerator(bytes(32), clock=clock)
    assert not checker.check_mac1(_signed(other))


def test_zero_and_short_messages_are_rejected(checker: CookieChecker) -> None:
    assert not checker.check_mac1(bytes(INITIATION_SIZE))
    assert not checker.check_mac1(b"")
    assert not checker.check_mac1(bytes(31))
    assert not checker.check_mac2(bytes(31), SOURCE)


def test_flipping_any_byte_before_mac2_breaks_mac1(checker: CookieChecker, generator: CookieGenerator) -> None:
    msg = _signed(generator)
    for i in range(len(msg) - 16):
        tampered = bytearray(msg)
        tampered[i] ^= 0x01
        assert not checker.check_mac1(tampered), i
    for i in range(len(msg) - 16, len(msg)):  # mac2 is not covered by mac1
        tampered = bytearray(msg)
        tampered[i] ^= 0x80
        assert checker.check_mac1(tampered), i


def test_checker_holds_no_private_key_and_module_has_no_dh() -> None:
    """mac1 is checked before any DH; structurally, nothing here could do one."""
    for cls in (CookieChecker, CookieGenerator):
        params = set(inspect.signature(cls).parameters)
        assert not any("private" in p or "secret" in p for p in params), params
    imported: set[str] = set()
    from_crypto: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(cookie))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            if node.module == "overlay.crypto":
                from_crypto.update(alias.name for alias in node.names)
    assert imported <= {
        "__future__", "ipaddress", "logging", "os", "time", "collections.abc",
        "overlay.crypto", "overlay.messages",
    }, imported
    # Of overlay.crypto only hashing, the XAEAD, constant-time comparison and sizes: no DH.
    assert from_crypto <= {
        "HASH", "MAC", "XAEAD_encrypt", "XAEAD_decrypt", "CryptoError", "constant_time_equal",
        "KEY_LEN", "MAC_LEN", "XNONCE_LEN",
    }, from_crypto


def test_mac1_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch, checker: CookieChecker,
                                          generator: CookieGenerator) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = cookie.constant_time_equal

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(cookie, "constant_time_equal", spy)
    msg = _signed(generator)
    assert checker.check_mac1(msg)
    assert not checker.check_mac2(msg, SOURCE)  # no secret yet: no comparison needed
    _get_cookie(checker, generator)
    assert checker.check_mac2(_signed(generator), SOURCE)
    assert len(calls) == 2


# --- cookie reply and mac2 --------------------------------------------------------------------


def test_cookie_reply_layout(checker: CookieChecker, generator: CookieGenerator) -> None:
    msg = _signed(generator)
    reply = checker.create_reply(msg, 0xA1B2C3D4, SOURCE)
    assert len(reply) == MESSAGE_COOKIE_REPLY_SIZE == 64
    assert reply[:4] == bytes((3, 0, 0, 0))
    assert reply[4:8] == (0xA1B2C3D4).to_bytes(4, "little")
    parsed = MessageCookieReply.unpack(reply)
    assert parsed.receiver == 0xA1B2C3D4 and len(parsed.nonce) == 24 and len(parsed.encrypted_cookie) == 32
    # The sealed cookie opens with XChaCha20-Poly1305 under HASH("cookie--" || Spub) with the
    # message's mac1 as aad, and the cookie is MAC(Rm, source).
    key = hashlib.blake2s(b"cookie--" + RESPONDER_PUBLIC).digest()
    opened = XAEAD_decrypt(key, parsed.nonce, parsed.encrypted_cookie, msg[-32:-16])
    secret = checker._secret[0]  # type: ignore[index]
    assert opened == hashlib.blake2s(SOURCE, key=secret, digest_size=16).digest()


def test_mac2_after_cookie_reply(checker: CookieChecker, generator: CookieGenerator) -> None:
    assert not checker.check_mac2(_signed(generator), SOURCE)
    _get_cookie(checker, generator)
    msg = _signed(generator)
    assert msg[-16:] != bytes(16)
    assert checker.check_mac1(msg)
    assert checker.check_mac2(msg, SOURCE)
    assert not checker.check_mac2(msg, source_bytes("198.18.0.3", 51820))
    assert not checker.check_mac2(msg, source_bytes("198.18.0.2", 51821))
    for i in range(len(msg)):
        tampered = bytearray(msg)
        tampered[i] ^= 0x01
        assert not checker.check_mac2(tampered, SOURCE), i


def test_reply_for_a_message_never_sent_is_ignored(checker: CookieChecker, generator: CookieGenerator,
                                                  clock: FakeClock) -> None:
    # Nothing sent yet: no reply is accepted.
    stranger = CookieGenerator(RESPONDER_PUBLIC, clock=clock)
    foreign = _signed(stranger, fill=0x11)
    assert not generator.consume_reply(checker.create_reply(foreign, 1, SOURCE))
    # Sent a message, but the reply answers someone else's message.
    _signed(generator, fill=0x22)
    assert not generator.consume_reply(checker.create_reply(foreign, 1, SOURCE))
    msg = _signed(generator, fill=0x22)
    assert not checker.check_mac2(msg, SOURCE)
    assert msg[-16:] == bytes(16)


def test_reply_answers_only_the_last_message_and_only_once(checker: CookieChecker,
                                                          generator: CookieGenerator) -> None:
    first = _signed(generator, fill=0x01)
    second = _signed(generator, fill=0x02)
    assert not generator.consume_reply(checker.create_reply(first, 1, SOURCE))
    reply = checker.create_reply(second, 1, SOURCE)
    assert generator.consume_reply(reply)
    assert not generator.consume_reply(reply)  # replayed reply: the mac1 it answers is used up


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r[:63],
        lambda r: r + b"\x00",
        lambda r: bytes((4,)) + r[1:],
        lambda r: r[:1] + b"\x01" + r[2:],
        lambda r: r[:8] + bytes((r[8] ^ 1,)) + r[9:],  # nonce
        lambda r: r[:40] + bytes((r[40] ^ 1,)) + r[41:],  # sealed cookie
        lambda r: r[:63] + bytes((r[63] ^ 1,)),  # tag
    ],
)
def test_malformed_or_forged_reply_is_ignored(checker: CookieChecker, generator: CookieGenerator, mutate) -> None:
    msg = _signed(generator)
    reply = mutate(checker.create_reply(msg, 1, SOURCE))
    assert not generator.consume_reply(reply)
    assert _signed(generator)[-16:] == bytes(16)


def test_reply_under_another_responder_key_is_ignored(generator: CookieGenerator, clock: FakeClock) -> None:
    impostor = CookieChecker(bytes(32), clock=clock, random_bytes=CountingRandom())
    msg = _signed(generator)
    assert not generator.consume_reply(impostor.create_reply(msg, 1, SOURCE))


def test_datagrams_that_are_not_replies_are_ignored(generator: CookieGenerator) -> None:
    _signed(generator)
    assert not generator.consume_reply(bytes(64))  # type 0
    assert not generator.consume_reply(bytes((3, 0, 0, 0)) + bytes(59))  # too short
    assert not generator.consume_reply(bytes((3, 0, 0, 0)) + bytes(60))  # right shape, forged


# --- time --------------------------------------------------------------------------------------


def test_generator_drops_cookie_after_120_seconds(checker: CookieChecker, generator: CookieGenerator,
                                                 clock: FakeClock) -> None:
    _get_cookie(checker, generator)
    clock.now += COOKIE_REFRESH_TIME - 0.001
    assert _signed(generator)[-16:] != bytes(16)
    clock.now += 0.001
    msg = _signed(generator)
    assert msg[-16:] == bytes(16)
    assert checker.check_mac1(msg)


def test_checker_secret_expires_after_120_seconds(checker: CookieChecker, generator: CookieGenerator,
                                                 clock: FakeClock) -> None:
    _get_cookie(checker, generator)
    msg = _signed(generator)
    clock.now += COOKIE_REFRESH_TIME - 0.001
    assert checker.check_mac2(msg, SOURCE)
    clock.now += 0.001
    assert not checker.check_mac2(msg, SOURCE)


def test_rotation_of_rm_makes_old_cookies_fail(checker: CookieChecker, generator: CookieGenerator,
                                              clock: FakeClock) -> None:
    _get_cookie(checker, generator)
    old_secret = checker._secret
    clock.now += 60
    _get_cookie(checker, generator)  # within the lifetime: same Rm, same cookie
    assert checker._secret is old_secret
    assert checker.check_mac2(_signed(generator), SOURCE)

    clock.now += 61  # Rm is now 121 s old; the generator's cookie only 61 s
    stale = _signed(generator)
    assert stale[-16:] != bytes(16)
    other = CookieGenerator(RESPONDER_PUBLIC, clock=clock)
    _get_cookie(checker, other, source_bytes("198.18.0.9", 51820))  # draws a new Rm
    assert checker._secret is not old_secret
    assert not checker.check_mac2(stale, SOURCE)
    _get_cookie(checker, generator)
    assert checker.check_mac2(_signed(generator), SOURCE)


def test_replies_use_fresh_nonces(checker: CookieChecker, generator: CookieGenerator) -> None:
    msg = _signed(generator)
    nonces = {MessageCookieReply.unpack(checker.create_reply(msg, 1, SOURCE)).nonce for _ in range(5)}
    assert len(nonces) == 5


# --- inputs ------------------------------------------------------------------------------------


def test_source_bytes() -> None:
    assert source_bytes("198.18.0.2", 51820) == bytes((198, 18, 0, 2)) + (51820).to_bytes(2, "big")
    assert source_bytes(ipaddress.ip_address("fd00::1"), 1) == ipaddress.ip_address("fd00::1").packed + b"\x00\x01"
    with pytest.raises(ValueError):
        source_bytes("198.18.0.2", 65536)
    with pytest.raises(ValueError):
        source_bytes("not an address", 1)


def test_bad_arguments_are_refused(checker: CookieChecker, generator: CookieGenerator) -> None:
    with pytest.raises(ValueError):
        CookieChecker(bytes(31))
    with pytest.raises(ValueError):
        CookieGenerator(bytes(33))
    with pytest.raises(ValueError):
        generator.add_macs(bytearray(31))
    with pytest.raises(ValueError):
        checker.create_reply(bytes(31), 1, SOURCE)
    with pytest.raises(ValueError):
        checker.create_reply(bytes(148), 2**32, SOURCE)
