"""For tests whose cluster runs in other processes (``ControlPlane``): hollow nodes on their
own event loop in a background thread, so synchronous tests (kubectl, kill -9 of controllers)
get nodes that register, heartbeat and run their pods; and which controller leads."""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from controlplane.client import ApiClient
from controlplane.localcluster import ControlPlane
from nodeagent.hollow import HollowFleet


@contextmanager
def hollow_nodes(urls: list[str], tls: ssl.SSLContext, names: list[str], *,
                 timeout: float = 30.0) -> Iterator[None]:
    """Run hollow nodes ``names`` against the API at ``urls`` until the block ends; they are
    registered when the block starts."""
    loop = asyncio.new_event_loop()
    registered = threading.Event()
    stop: asyncio.Future[None] = loop.create_future()
    failure: list[BaseException] = []

    async def main() -> None:
        async with ApiClient(urls, tls, user_agent="hollow-nodes") as client:
            fleet = HollowFleet(client, names)
            task = asyncio.create_task(fleet.run())
            try:
                await asyncio.wait({asyncio.ensure_future(fleet.registered.wait()), task},
                                   return_when=asyncio.FIRST_COMPLETED)
                registered.set()
                await asyncio.wait({stop, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def thread_main() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
        finally:
            registered.set()
            loop.close()

    thread = threading.Thread(target=thread_main, name="hollow nodes", daemon=True)
    thread.start()
    try:
        if not registered.wait(timeout) or failure:
            raise AssertionError(f"hollow nodes did not register: {failure}")
        yield
    finally:
        try:
            loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))
        except RuntimeError:
            pass  # the loop already ended (and closed)
        thread.join(timeout)


_LEADING = re.compile(r'^leader_election_master_status\{name="corral-controller"\} 1\.0$', re.M)


def leader_index(cp: ControlPlane, *, timeout: float = 30.0,
                 skip: frozenset[int] = frozenset()) -> int:
    """The controller running the control loops, from each one's /metrics."""
    deadline = time.monotonic() + timeout
    context = cp.ssl_context()
    while time.monotonic() < deadline:
        for i in range(cp.size):
            if i in skip:
                continue
            try:
                with urllib.request.urlopen(cp.url(i) + "/metrics", timeout=2.0,
                                            context=context) as answer:
                    if _LEADING.search(answer.read().decode()):
                        return i
            except (urllib.error.URLError, OSError):
                continue
        time.sleep(0.1)
    raise AssertionError("no controller leads")
