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


async def test_a_loop_that_fails_is_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager_module, "RESTART_SECONDS", 0.01)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("boom")

    manager = ControllerManager(lambda: True, lambda: [Loop("flaky", flaky)], poll=0.01)
    task = asyncio.create_task(manager.run())
    await _until(lambda: runs >= 3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
