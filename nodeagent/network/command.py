"""Running ``ip``, ``iptables``, ``sysctl`` and ``nsenter``: the one place the network package
starts processes.

A failed command becomes a PodNetworkError whose message is the command and the last line of
its stderr, short enough for a pod's Events and precise enough to act on
("ip -n h1 link add ...: RTNETLINK answers: File exists").
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from dataclasses import dataclass

from nodeagent.network.base import PodNetworkError

log = logging.getLogger(__name__)

#: A hung ``ip`` (a wedged netlink socket, a stuck xtables lock) must not hang the pod worker.
COMMAND_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run(*argv: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S,
              stdin: str | None = None) -> Result:
    """Run ``argv`` (with ``stdin`` as its input: ``ip -batch -``'s commands); with ``check``
    a non-zero exit raises PodNetworkError."""
    command = shlex.join(argv) + (f" <<< {stdin!r}" if stdin is not None else "")
    log.debug("network: %s", command)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise PodNetworkError(f"{command}: {argv[0]} is not installed") from None
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise PodNetworkError(f"{command}: timed out after {timeout:g}s") from None
    except BaseException:
        # Cancelled: do not leave the child running unobserved.
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    result = Result(proc.returncode or 0, out.decode(errors="replace"),
                    err.decode(errors="replace"))
    if check and result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise PodNetworkError(f"{command}: {reason}")
    return result
