"""Whether the controllers' replicas hold the same state after healing: each controller's
``/corral/v1/digest`` (revision and a hash of its keyspace) compared at one revision.

The cluster never stops writing (Leases renew every few seconds), so replicas are sampled
together, again and again, until every one reports the same revision: at one revision, replicas
that applied the same log have the same hash, so a difference there is a divergence. No common
revision within the timeout (a controller down, or one that never catches up) is "unknown",
never "equal".
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

DIGEST_PATH = "/corral/v1/digest"
POLL_S = 0.1


@dataclass
class ReplicaCheck:
    """``equal``: True (same hash at one revision), False (different hashes at one revision),
    None (no common revision seen). ``samples``: url -> (revision, digest) last seen."""

    equal: bool | None
    samples: dict[str, tuple[int, str] | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"equal": self.equal,
                "samples": {url: None if s is None else {"revision": s[0], "digest": s[1]}
                            for url, s in self.samples.items()}}


async def _digest(session: aiohttp.ClientSession, url: str) -> tuple[int, str] | None:
    try:
        async with session.get(url + DIGEST_PATH) as answer:
            if answer.status != 200:
                return None
            body = await answer.json()
        return int(body["revision"]), str(body["digest"])
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return None


def judge(samples: dict[str, tuple[int, str] | None]) -> bool | None:
    """One round of samples: None unless every replica answered at one revision."""
    seen = list(samples.values())
    if not seen or any(s is None for s in seen) or len({s[0] for s in seen if s}) != 1:
        return None
    return len({s[1] for s in seen if s}) == 1


async def compare_replicas(urls: list[str], context: ssl.SSLContext | None, *,
                           timeout: float = 30.0,
                           clock: Callable[[], float] = time.monotonic) -> ReplicaCheck:
    """Sample every controller's digest until they share a revision, or ``timeout``."""
    deadline = clock() + timeout
    connector = aiohttp.TCPConnector(ssl=context if context is not None else False)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        while True:
            found = await asyncio.gather(*(_digest(session, url) for url in urls))
            samples = dict(zip(urls, found, strict=True))
            verdict = judge(samples)
            if verdict is not None or clock() > deadline:
                return ReplicaCheck(verdict, samples)
            await asyncio.sleep(POLL_S)
