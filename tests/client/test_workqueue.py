"""The work queue's semantics as scripts: one operation a line, checked on a fake clock.

    add K | after K SECONDS | limit K | forget K | done K | tick SECONDS | shutdown
    get K      try_get() hands out K          get -      nothing is due
    len N      N keys in line                 requeues K N   K has N counted failures
"""

from __future__ import annotations

import asyncio

import pytest

from controlplane.client import ShutDown, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def play(script: str, *, base_delay: float = 1.0, max_delay: float = 1000.0) -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock, base_delay=base_delay, max_delay=max_delay)
    for number, line in enumerate(script.strip().splitlines(), 1):
        op, *args = line.split()
        where = f"line {number}: {line.strip()}"
        if op == "add":
            queue.add(args[0])
        elif op == "after":
            queue.add_after(args[0], float(args[1]))
        elif op == "limit":
            queue.add_rate_limited(args[0])
        elif op == "forget":
            queue.forget(args[0])
        elif op == "done":
            queue.done(args[0])
        elif op == "tick":
            clock.now += float(args[0])
        elif op == "shutdown":
            queue.shut_down()
        elif op == "get":
            got = queue.try_get()
            assert (got or "-") == args[0], f"{where}: got {got}"
        elif op == "len":
            assert queue.len() == int(args[0]), f"{where}: len is {queue.len()}"
        elif op == "requeues":
            assert queue.num_requeues(args[0]) == int(args[1]), \
                f"{where}: {queue.num_requeues(args[0])} requeues"
        else:
            raise ValueError(f"{where}: unknown operation")


SCRIPTS = {
    "first in, first out": """
        add c
        add a
        add b
        get c
        get a
        get b
        get -
    """,
    "a key waiting in line is added once": """
        add a
        add b
        add a
        len 2
        get a
        get b
        get -
    """,
    "a key being processed is not handed out again until done": """
        add a
        get a
        add a
        add a
        len 0
        get -
        done a
        len 1
        get a
        done a
        get -
    """,
    "done without a new add drops the key": """
        add a
        get a
        done a
        len 0
        get -
    """,
    "two keys processed at once are independent": """
        add a
        add b
        get a
        get b
        add b
        done a
        get -
        done b
        get b
    """,
    "add_after waits for its time": """
        after a 1.0
        get -
        tick 0.9
        get -
        tick 0.1
        get a
    """,
    "add_after twice: the earlier time wins": """
        after a 5
        after a 1
        tick 1
        get a
        done a
        tick 4
        get -
    """,
    "add_after a later time does not postpone": """
        after a 1
        after a 5
        tick 1
        get a
    """,
    "add_after of a key in line adds nothing when due": """
        add a
        after a 1
        tick 1
        len 1
        get a
        get -
    """,
    "add_after keeps the order of due times": """
        after late 3
        after early 1
        after middle 2
        tick 3
        get early
        get middle
        get late
    """,
    "add_after zero adds at once": """
        after a 0
        get a
    """,
    "rate-limited back-off doubles per failure": """
        limit a
        requeues a 1
        tick 0.99
        get -
        tick 0.01
        get a
        done a
        limit a
        requeues a 2
        tick 1.99
        get -
        tick 0.01
        get a
        done a
        limit a
        tick 3.99
        get -
        tick 0.01
        get a
    """,
    "forget resets the back-off": """
        limit a
        tick 1
        get a
        done a
        limit a
        forget a
        requeues a 0
        tick 2
        get a
        done a
        limit a
        tick 1
        get a
    """,
    "back-off is per key": """
        limit a
        tick 1
        get a
        done a
        limit a
        limit b
        tick 1
        get b
        get -
        tick 1
        get a
    """,
    "a key rate-limited while processing comes back once done": """
        add a
        get a
        limit a
        tick 1
        get -
        done a
        get a
    """,
    "shut down: nothing more is handed out or added": """
        add a
        add b
        shutdown
        get -
        add c
        after d 0
        len 0
        get -
    """,
}


@pytest.mark.parametrize("script", SCRIPTS.values(), ids=SCRIPTS.keys())
async def test_queue_script(script: str) -> None:
    play(script)


def test_script_can_fail() -> None:
    with pytest.raises(AssertionError, match="line 2"):
        play("add a\nget b")


@pytest.mark.parametrize("failures,delay", [(0, 0.005), (1, 0.01), (2, 0.02), (10, 5.12),
                                            (17, 655.36), (18, 1000.0), (300, 1000.0)])
async def test_backoff_is_exponential_and_capped(failures: int, delay: float) -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)  # the defaults: 5 ms doubling, capped at 1000 s
    for _ in range(failures):
        queue.add_rate_limited("a")
        clock.now += 1000
        queue.done(queue.try_get() or "")
    queue.add_rate_limited("a")
    clock.now += delay * 0.999
    assert queue.try_get() is None
    clock.now += delay * 0.001 + 1e-9
    assert queue.try_get() == "a"
    assert queue.num_requeues("a") == failures + 1


async def test_get_waits_for_an_add() -> None:
    queue = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    queue.add("a")
    assert await asyncio.wait_for(getter, 1) == "a"


async def test_get_wakes_when_a_delayed_key_is_due() -> None:
    queue = WorkQueue()
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("late", 0.2)
    queue.add_after("soon", 0.05)
    assert await asyncio.wait_for(queue.get(), 1) == "soon"
    assert loop.time() - start >= 0.05
    assert await asyncio.wait_for(queue.get(), 1) == "late"
    assert loop.time() - start >= 0.2


async def test_shut_down_wakes_every_waiting_get() -> None:
    queue = WorkQueue()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0.01)
    queue.shut_down()
    for getter in getters:
        with pytest.raises(ShutDown):
            await asyncio.wait_for(getter, 1)
    with pytest.raises(ShutDown):
        await queue.get()


async def test_one_key_goes_to_one_worker_at_a_time() -> None:
    queue = WorkQueue()
    busy: set[str] = set()
    overlaps = []
    handled = []

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            overlaps.append(key in busy)
            busy.add(key)
            await asyncio.sleep(0.005)
            busy.discard(key)
            handled.append(key)
            queue.done(key)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    for _ in range(20):
        for key in ("a", "b"):
            queue.add(key)
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    queue.shut_down()
    await asyncio.gather(*workers)
    assert handled and not any(overlaps)
    assert set(handled) == {"a", "b"}
