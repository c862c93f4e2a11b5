"""Anti-replay window for transport data counters: RFC 6479's bitmap, sized as WireGuard sizes it.

Each keypair receives data packets numbered by a 64-bit counter chosen by the sender. Packets
may arrive out of order (multiple paths, parallel encryption at the sender), so the receiver
accepts any counter it has not seen yet that is at most ``COUNTER_WINDOW_SIZE`` behind the
greatest counter accepted so far, and rejects everything else.

RFC 6479 keeps the window as a ring of ``BACKTRACK_WORDS`` words of ``WORD_BITS`` bits
(8192 bits). Bit ``counter % 64`` of word ``(counter // 64) % 128`` records ``counter``. When the
greatest counter moves forward, the words it moves past are cleared whole, which is why the
window is one word short of the bitmap: ``8192 - 64 = 8128`` counters, the figure both the Linux
module and wireguard-go use. Moving forward costs at most 128 word clears however far the jump.

``validate`` both checks and records, so the caller must call it only after the packet has
authenticated (its Poly1305 tag verified): a forged packet with a huge counter would otherwise
slide the window forward and make every genuine packet look too old. Counters at or beyond
``REJECT_AFTER_MESSAGES`` (one of the protocol constants in ``timers.py``) are refused outright;
the sender never uses them (it rekeys first).

Not safe for concurrent use: a keypair's receive path owns its filter.
"""

from __future__ import annotations

from overlay.timers import REJECT_AFTER_MESSAGES

WORD_BITS = 64
COUNTER_BITS_TOTAL = 8192  # bits in the bitmap
BACKTRACK_WORDS = COUNTER_BITS_TOTAL // WORD_BITS  # 128
COUNTER_WINDOW_SIZE = COUNTER_BITS_TOTAL - WORD_BITS  # 8128 packets behind the greatest accepted

_WORD_SHIFT = WORD_BITS.bit_length() - 1  # log2(64) = 6
_BIT_MASK = WORD_BITS - 1


class ReplayFilter:
    """The receive window of one keypair. ``validate`` each authenticated counter once."""

    __slots__ = ("_greatest", "_words")

    def __init__(self) -> None:
        self._greatest = 0
        self._words = [0] * BACKTRACK_WORDS

    def reset(self) -> None:
        """Forget every counter seen (a fresh keypair starts from an empty window)."""
        self._greatest = 0
        self._words = [0] * BACKTRACK_WORDS

    def validate(self, counter: int) -> bool:
        """Record ``counter`` and return True if it is new and inside the window; return False
        (recording nothing) for a replay, a counter too far behind, or one out of range. Call
        only for packets that have already authenticated."""
        if not 0 <= counter < REJECT_AFTER_MESSAGES:
            return False
        words = self._words
        index = counter >> _WORD_SHIFT
        if counter > self._greatest:
            current = self._greatest >> _WORD_SHIFT
            for i in range(current + 1, current + 1 + min(index - current, BACKTRACK_WORDS)):
                words[i % BACKTRACK_WORDS] = 0
            self._greatest = counter
        elif self._greatest - counter > COUNTER_WINDOW_SIZE:
            return False
        index %= BACKTRACK_WORDS
        bit = 1 << (counter & _BIT_MASK)
        old = words[index]
        if old & bit:
            return False
        words[index] = old | bit
        return True
