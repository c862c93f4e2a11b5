"""Applying the proxy's rules (``nodeagent.proxy.rules``) with ``iptables-restore``.

``apply`` writes each table in one ``iptables-restore --noflush`` run (atomic per table). Other
software's rules and chains (Docker's, the bridge's CORRAL-POSTROUTING) are never touched:
``--noflush`` leaves them be. There are two kinds of write, as kube-proxy's (>= 1.27) full and
partial syncs:

- full (the first apply, ``force`` (the proxier's periodic resync) and the apply after any
  failure): every chain we own is declared (created or flushed) and refilled, and our chains
  found in the table (``iptables-save``) that the new rules no longer name are flushed and
  deleted in the same commit; then the jumps from the built-in chains (``rules.JUMPS``) are
  checked with ``iptables -C`` and inserted first when missing. This repairs whatever someone
  else changed.
- partial (otherwise): ``chain_rules`` groups the rules by chain and ``partial_input`` compares
  them with what was last applied to the table: only the chains whose rules changed are
  declared and refilled, and the chains applied before but no longer wanted are deleted. No
  ``iptables-save``, no ``iptables -C``; a table with nothing changed is not written at all, so
  one Service's endpoints moving rewrites its own chains (and ``CORRAL-SERVICES`` only when a
  Service gains or loses its last endpoint), and the other Services' rules and counters stay.

``teardown`` removes the jumps and every chain we own, in both tables.

``host_netns`` names a network namespace (``ip netns exec NAME``) that plays the host, as in
``BridgeNetwork``: for tests and the lab. Every command goes through ``runner``
(``network.command.run``; tests pass one that records); a failure is a one-line
PodNetworkError.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

from nodeagent.network.command import Result, run
from nodeagent.proxy.rules import (
    JUMPS,
    ProxyRules,
    TableRules,
    is_owned_chain,
    restore_input,
)

log = logging.getLogger(__name__)

#: Seconds to wait for the xtables lock that other tools (docker, the bridge) also take.
XTABLES_WAIT_S = "5"

#: One table's rules as applied: each chain we own and its rules (``-A`` lines), in order.
ChainRules = dict[str, tuple[str, ...]]


class Runner(Protocol):
    """Runs one command (``network.command.run``): raises PodNetworkError on failure with
    ``check``."""

    def __call__(self, *argv: str, check: bool = True,
                 stdin: str | None = None) -> Awaitable[Result]: ...


def chain_rules(table_rules: TableRules) -> ChainRules:
    """The rules of each declared chain (an empty chain included), in order."""
    grouped: dict[str, list[str]] = {chain: [] for chain in table_rules.chains}
    for rule in table_rules.rules:
        chain = rule.split(maxsplit=2)[1]
        if chain not in grouped:
            raise ValueError(f"a rule for a chain not declared: {rule}")
        grouped[chain].append(rule)
    return {chain: tuple(rules) for chain, rules in grouped.items()}


def partial_input(table: str, applied: ChainRules, wanted: ChainRules) -> str | None:
    """``iptables-restore --noflush`` input taking ``table`` from ``applied`` to ``wanted``:
    the chains whose rules differ declared and refilled, the ones no longer wanted deleted;
    None when nothing differs."""
    changed = [chain for chain, rules in wanted.items() if applied.get(chain) != rules]
    removed = [chain for chain in applied if chain not in wanted]
    if not changed and not removed:
        return None
    refill = TableRules(changed, [rule for chain in changed for rule in wanted[chain]])
    return restore_input(table, refill, removed)


class IptablesApplier:
    """Writes ProxyRules into the host's (or ``host_netns``'s) nat and filter tables."""

    def __init__(self, *, host_netns: str | None = None, runner: Runner = run) -> None:
        self.host_netns = host_netns
        self._run = runner
        #: table -> its chains and rules as last applied successfully; a table missing here
        #: (never applied, or a write failed) gets a full write next.
        self._applied: dict[str, ChainRules] = {}
        # One apply or teardown at a time: each reads the tables before it writes them.
        self._lock = asyncio.Lock()

    async def apply(self, rules: ProxyRules, *, force: bool = False) -> bool:
        """Write what changed (everything, repairing drift, with ``force``); True if anything
        was written."""
        async with self._lock:
            wrote = full = False
            try:
                for table, table_rules in rules.tables().items():
                    wanted = chain_rules(table_rules)
                    applied = None if force else self._applied.pop(table, None)
                    if applied is None:
                        text: str | None = restore_input(table, table_rules,
                                                         await self.chains(table))
                        full = True
                    else:
                        text = partial_input(table, applied, wanted)
                    if text is not None:
                        await self._restore(text)
                        wrote = True
                    self._applied[table] = wanted
                if full:
                    await self._ensure_jumps()
            except BaseException:
                self._applied.clear()  # the tables' state is unknown: the next write is full
                raise
            return wrote

    async def teardown(self) -> None:
        """Remove the jumps into our chains and the chains themselves."""
        async with self._lock:
            self._applied.clear()
            for table, builtin, args in JUMPS:
                while await self._iptables(table, "-C", builtin, *args) == 0:
                    await self._iptables(table, "-D", builtin, *args, check=True)
            for table in ("nat", "filter"):
                owned = await self.chains(table)
                if owned:
                    await self._restore(restore_input(table, TableRules(), owned))
            log.info("proxy: rules torn down")

    async def chains(self, table: str) -> list[str]:
        """The chains of ours in ``table`` now (for tests and diagnostics)."""
        return [c for c in await self._chains(table) if is_owned_chain(c)]

    # -- commands --------------------------------------------------------------------------

    def _exec(self, *argv: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.host_netns, *argv) if self.host_netns else argv

    async def _chains(self, table: str) -> list[str]:
        saved = await self._run(*self._exec("iptables-save", "-t", table))
        return [line[1:].split()[0] for line in saved.stdout.splitlines()
                if line.startswith(":")]

    async def _restore(self, text: str) -> None:
        await self._run(*self._exec("iptables-restore", "-w", XTABLES_WAIT_S, "--noflush"),
                        stdin=text)

    async def _iptables(self, table: str, *args: str, check: bool = False) -> int:
        result = await self._run(
            *self._exec("iptables", "-w", XTABLES_WAIT_S, "-t", table, *args), check=check)
        return result.returncode

    async def _ensure_jumps(self) -> None:
        for table, builtin, args in JUMPS:
            if await self._iptables(table, "-C", builtin, *args) != 0:
                await self._iptables(table, "-I", builtin, "1", *args, check=True)
