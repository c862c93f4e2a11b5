"""Applying the proxy's rules (``nodeagent.proxy.rules``) with ``iptables-restore``.

``apply`` writes each table that changed in one ``iptables-restore --noflush`` run (atomic per
table): the chains we own are declared (created or flushed) and refilled, and the CORRAL-SVC-/
CORRAL-SEP- chains found in the table (``iptables-save``) that the new rules no longer name are
flushed and deleted in the same commit. Other software's rules and chains (Docker's, the
bridge's CORRAL-POSTROUTING) are never touched: ``--noflush`` leaves them be. Then the jumps from
the built-in chains (``rules.JUMPS``) are checked with ``iptables -C`` and inserted first when
missing. A table whose generated text equals what was last applied is skipped, unless
``force`` (the proxier's periodic resync, which repairs rules someone else removed).

``teardown`` removes the jumps and every chain we own, in both tables.

``host_netns`` names a network namespace (``ip netns exec NAME``) that plays the host, as in
``BridgeNetwork``: for tests and the lab. Every command goes through ``network.command.run``;
a failure is a one-line PodNetworkError.
"""

from __future__ import annotations

import asyncio
import logging

from nodeagent.network.command import run
from nodeagent.proxy.rules import (
    JUMPS,
    SEP_PREFIX,
    SVC_PREFIX,
    ProxyRules,
    TableRules,
    is_owned_chain,
    restore_input,
)

log = logging.getLogger(__name__)

#: Seconds to wait for the xtables lock that other tools (docker, the bridge) also take.
XTABLES_WAIT_S = "5"


class IptablesApplier:
    """Writes ProxyRules into the host's (or ``host_netns``'s) nat and filter tables."""

    def __init__(self, *, host_netns: str | None = None) -> None:
        self.host_netns = host_netns
        #: table -> the text (without stale chains) last applied successfully.
        self._applied: dict[str, str] = {}
        # One apply or teardown at a time: each reads the tables before it writes them.
        self._lock = asyncio.Lock()

    async def apply(self, rules: ProxyRules, *, force: bool = False) -> bool:
        """Write the tables whose text changed (all with ``force``); True if anything was
        written."""
        async with self._lock:
            wrote = False
            for table, table_rules in rules.tables().items():
                text = restore_input(table, table_rules)
                if not force and self._applied.get(table) == text:
                    continue
                stale = [c for c in await self._chains(table)
                         if c.startswith((SVC_PREFIX, SEP_PREFIX))]
                self._applied.pop(table, None)  # unknown until this restore succeeds
                await self._restore(restore_input(table, table_rules, stale))
                self._applied[table] = text
                wrote = True
            if wrote:
                await self._ensure_jumps()
            return wrote

    async def teardown(self) -> None:
        """Remove the jumps into our chains and the chains themselves."""
        async with self._lock:
            self._applied.clear()
            for table, builtin, args in JUMPS:
                while await self._iptables(table, "-C", builtin, *args) == 0:
                    await self._iptables(table, "-D", builtin, *args, check=True)
            for table in ("nat", "filter"):
                owned = [c for c in await self._chains(table) if is_owned_chain(c)]
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
        saved = await run(*self._exec("iptables-save", "-t", table))
        return [line[1:].split()[0] for line in saved.stdout.splitlines()
                if line.startswith(":")]

    async def _restore(self, text: str) -> None:
        await run(*self._exec("iptables-restore", "-w", XTABLES_WAIT_S, "--noflush"),
                  stdin=text)

    async def _iptables(self, table: str, *args: str, check: bool = False) -> int:
        result = await run(*self._exec("iptables", "-w", XTABLES_WAIT_S, "-t", table, *args),
                           check=check)
        return result.returncode

    async def _ensure_jumps(self) -> None:
        for table, builtin, args in JUMPS:
            if await self._iptables(table, "-C", builtin, *args) != 0:
                await self._iptables(table, "-I", builtin, "1", *args, check=True)
