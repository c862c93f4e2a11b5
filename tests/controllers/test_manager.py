"""The control loops run only while this controller leads, and restart if they end."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.controllers import manager as manager_module
from controlplane.controllers.manager import ControllerManager, Loop


async def _until(condition, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_loops_follow_leadership() -> None:
    leader = False
    running: set[str] = set()

    def loop(name: str) -> Loop:
        async def run() -> None:
            running.add(name)
            try:
                await asyncio.Event().wait()
            finally:
                running.discard(name)
        return Loop(name, run)

    manager = ControllerManager(lambda: leader, lambda: [loop("a"), loop("b")], poll=0.01)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0.05)
    assert running == set() and not manager.leading
    leader = True
    await _until(lambda: running == {"a", "b"})
    leader = False
    await _until(lambda: running == set())
    assert not manager.leading
    leader = True
    await _until(lambda: running == {"a", "b"})
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert running == set()


async def test_a_loop_that_fails_restarts_the_term(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed loop brings fresh loops, all of them (from a fresh ``make_loops``): the others
    are stopped first, so no two generations of a loop ever run at once."""
    monkeypatch.setattr(manager_module, "RESTART_SECONDS", 0.01)
    runs, terms, steady, most_steady = 0, 0, 0, 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("boom")

    async def healthy() -> None:
        nonlocal steady, most_steady
        steady += 1
        most_steady = max(most_steady, steady)
        try:
            await asyncio.Event().wait()
        finally:
            steady -= 1

    def make_loops() -> list[Loop]:
        nonlocal terms
        terms += 1
        return [Loop("flaky", flaky), Loop("healthy", healthy)]

    manager = ControllerManager(lambda: True, make_loops, poll=0.01)
    task = asyncio.create_task(manager.run())
    await _until(lambda: runs >= 3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert terms >= 3 and most_steady == 1 and steady == 0
